"""``shuyu demo``: the whole path on generated data, one stage per capability.

Stages run in order; each takes the home and a console and returns a small summary. A
re-run on the same day reuses the generated sources and their snapshots, so products are
not rebuilt (release-once) and no budget is spent twice.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from catalogs.catalog import Catalog
from pipelines import demo_accounts
from shuyu_core import snapshots
from shuyu_core.home import Home

Stage = Callable[[Home, Console], dict[str, Any]]
DEMO_CODES = ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS")


def sources_dir(home: Home) -> Path:
    """Simulated source-system exports (demo only), kept beside the zones."""
    return home.root / "sources"


def _generate(home: Home, console: Console, persons: int, seed: int, rate: float) -> dict[str, Any]:
    from synthetic_data.generate import generate

    out = sources_dir(home)
    params = {"seed": seed, "persons": persons, "defect_rate": rate, "as_of": str(dt.date.today())}
    defects_file = out / "defects.json"
    if defects_file.exists():
        doc = json.loads(defects_file.read_text(encoding="utf-8"))
        if all(str(doc.get(k)) == str(v) for k, v in params.items()):
            console.print(f"reusing generated sources in {out}")
            return {"sources": str(out), "reused": True}
    with console.status(f"generating {persons:,} persons (seed {seed})"):
        generate(out, persons=persons, seed=seed, defect_rate=rate)
    return {"sources": str(out), "reused": False}


def _source_path(out: Path, code: str) -> Path:
    for candidate in (out / f"{code}.parquet", out / code, out / f"{code}.csv"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"generated source for {code} not found in {out}")


def _ingest_all(home: Home, console: Console) -> dict[str, Any]:
    from pipelines.ingest import ingest_path

    catalog = Catalog.load()
    out = sources_dir(home)
    result: dict[str, Any] = {}
    for code in DEMO_CODES:
        src = _source_path(out, code)
        existing = snapshots.list_snapshots(home, code)
        src_mtime = dt.datetime.fromtimestamp(src.stat().st_mtime, dt.UTC)
        reusable = [
            m
            for m in existing
            if m.source_path == str(src.resolve()) and m.ingested_at >= src_mtime
        ]
        if reusable:
            m = reusable[-1]
            console.print(f"  {code}: reusing snapshot {m.snapshot_id} ({m.rows:,} rows)")
        else:
            with console.status(f"ingesting {code}"):
                m = ingest_path(home, code, src, catalog=catalog)
            console.print(f"  {code}: snapshot {m.snapshot_id} ({m.rows:,} rows)")
        result[code] = {"snapshot": m.snapshot_id, "rows": m.rows}
    return result


def stages(persons: int, seed: int, rate: float) -> list[tuple[str, Stage]]:
    def generate_stage(home: Home, console: Console) -> dict[str, Any]:
        return _generate(home, console, persons, seed, rate)

    from pipelines import (
        demo_assessment,
        demo_governance,
        demo_pii,
        demo_products,
        demo_quality,
    )

    return [
        ("synthetic data 合成数据", generate_stage),
        ("ingestion 数据归集", _ingest_all),
        ("governance 授权与审计", demo_governance.stage),
        ("personal information 个人信息识别与脱敏", demo_pii.stage),
        ("quality feedback 数据质量反馈", demo_quality.stage),
        ("data products 数据产品", demo_products.stage),
        ("assessment 发布前评估与发布", demo_assessment.stage),
    ]


def run_demo(home: Home, console: Console, persons: int, seed: int, rate: float) -> dict[str, Any]:
    # The demo is an operator's job; stages that need a reviewer or a source unit switch to
    # the demo accounts explicitly.
    actor = demo_accounts.prepare(home)
    console.rule(f"Shuyu demo — SHUYU_HOME={home.root} — actor {actor}")
    summary: dict[str, Any] = {}
    timings = Table(title="demo stages")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for name, stage in stages(persons, seed, rate):
        console.rule(name)
        started = time.perf_counter()
        summary[name] = stage(home, console)
        timings.add_row(name, f"{time.perf_counter() - started:.1f}")
    console.print(timings)
    console.print(
        f"zones: raw={home.raw} work={home.work} releases={home.releases} "
        f"published={home.published}; state={home.database_url}"
    )
    return summary
