"""Benchmark: the pre-release assessment of the four demo products.

Builds a temporary domain of ``--rows`` generated persons (four resources, quality checks, the
four demo products), then times ``assessment.engine.assess`` per release against a baseline
computed in the same process: a plain polars pass that reads the same outputs and the same
input identifier columns (distinct values) — the I/O the assessment cannot avoid.

    .venv/bin/python benchmarks/bench_assessment.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _domain(root: Path, persons: int) -> dict[str, str]:
    os.environ["SHUYU_HOME"] = str(root)
    os.environ["SHUYU_ROLE"] = "operator"
    os.environ["SHUYU_ACTOR"] = "bench"
    from governance.consent import ConsentLedger
    from pipelines.ingest import ingest_path
    from products.engine import BuildOptions, build
    from quality.api import run_check
    from shuyu_core.home import Home
    from shuyu_core.keys import ENCRYPTION, PSEUDONYM, init_key
    from synthetic_data.generate import generate_frames

    home = Home.from_env().ensure()
    init_key(home, PSEUDONYM)
    init_key(home, ENCRYPTION)
    frames, _ = generate_frames(persons=persons, seed=5, defect_rate=0.0)
    src = root / "sources"
    src.mkdir(parents=True, exist_ok=True)
    for code in ("RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"):
        frames[code].write_parquet(src / f"{code}.parquet")
        ingest_path(home, code, src / f"{code}.parquet")
        run_check(home, code, open_tickets=False)
    people = frames["RKJBXX"].unique(subset=["公民身份号码"], keep="none").head(200)
    ConsentLedger(home).import_frame(
        pl.DataFrame(
            {
                "subject_id": people["公民身份号码"],
                "purpose": "identity-verification",
                "granted_at": "2025-01-01",
                "expires_at": "2099-12-31",
                "evidence_ref": [f"EV-{i}" for i in range(people.height)],
            }
        ),
        source="bench",
    )
    queries = people.select(
        pl.format("Q{}", pl.int_range(pl.len())).alias("query_id"),
        pl.lit("person").alias("kind"),
        pl.col("姓名").alias("name"),
        pl.col("公民身份号码").alias("id_number"),
        pl.format("EV-{}", pl.int_range(pl.len())).alias("consent_ref"),
    )
    qpath = src / "queries.csv"
    queries.write_csv(qpath)
    out: dict[str, str] = {}
    for product in (
        "si_enrolment_report",
        "business_vitality_index",
        "identity_verification",
        "medical_desensitized_extract",
    ):
        opts = BuildOptions(queries=qpath) if product == "identity_verification" else None
        out[product] = build(home, product, opts).release_id
    return out


def _baseline(release_id: str) -> float:
    """Plain polars: read every tabular output, and the distinct identifier values read."""
    from catalogs.catalog import Catalog
    from products import release as rel
    from shuyu_core import snapshots
    from shuyu_core.home import Home

    home = Home.from_env()
    t0 = time.perf_counter()
    m = rel.load(home, release_id)
    for out in m.outputs:
        if out.format == "parquet":
            pl.read_parquet(home.releases / release_id / out.path)
    catalog = Catalog.load()
    for ref in m.inputs:
        res = catalog.resources.get(ref.resource)
        if res is None:
            continue
        idents = [f.name for f in res.fields if f.name in ref.fields and f.pii_type is not None]
        if idents:
            snapshots.scan(home, ref.resource, ref.snapshot_id, columns=idents).select(
                pl.concat_list([pl.col(c).cast(pl.String) for c in idents]).alias("v")
            ).explode("v").unique().collect(engine="streaming")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="generated persons")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shuyu-bench-assess-") as tmp:
        t0 = time.perf_counter()
        releases = _domain(Path(tmp) / "home", args.rows)
        setup = time.perf_counter() - t0
        from assessment.engine import assess
        from shuyu_core.home import Home

        home = Home.from_env()
        cores = psutil.cpu_count(logical=True)
        ram = psutil.virtual_memory().total / 2**30
        print(
            f"persons={args.rows:,} machine: {cores} cores, {ram:.0f} GiB RAM; setup {setup:.1f}s"
        )
        print(f"{'product':32} {'verdict':8} {'assess s':>9} {'baseline s':>11} {'ratio':>7}")
        for product, rid in releases.items():
            base = _baseline(rid)
            t1 = time.perf_counter()
            a = assess(home, rid)
            secs = time.perf_counter() - t1
            print(f"{product:32} {a.verdict:8} {secs:9.2f} {base:11.2f} {secs / base:7.1f}")
        print(f"peak RSS {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
