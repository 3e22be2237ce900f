"""Quality-check benchmark: a full check of one population snapshot (RKJBXX) against a plain
polars pass that only counts the nulls of the same columns.

    .venv/bin/python benchmarks/bench_quality.py [--rows N] [--defect-rate R]

The snapshot (``--rows``, default 2 000 000; the issue's figure is ``--rows 10000000``) is
written in about 1 000 000-row parquet parts by a child process; with ``--defect-rate R``
one row in 1/R of each of six kinds is defective (missing name, wrong check digit, bad phone,
unknown ethnic group, future registration date, exact duplicate). Each step then runs in a
fresh process on the same files (so its peak RSS is its own), in this order:

- baseline: ``scan_parquet(...).select(col.null_count() for every column)``, streaming;
- full check: ``quality.engine.check_snapshot`` — every catalog rule of RKJBXX (25 rules:
  required, patterns, GB 11643 check digits, code lists, birth date and sex against the ID,
  future and stale dates, ID uniqueness, duplicate records, snapshot age), with up to five
  masked sample rows per failing rule, as ``shuyu quality check`` runs it;
- a plain read of every value (``str.len_bytes().sum()`` of each column), for scale;
- the same check without samples;
- the full check with the local check-digit validators instead of ``privacy.pii``'s;
- pandera's polars backend validating the same rules (``benchmarks/pandera_rkjbxx.py``: read
  into memory, then ``DataFrameModel.validate(lazy=True)``).

The goal (issue 17): the full check at most 2x the plain read, and faster than pandera.

CPU seconds (user + system) are printed beside wall seconds because the machine may be
shared. Peak memory is the step process's getrusage peak RSS, and that peak minus the RSS before
the step (the interpreter and libraries).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psutil

PART = 1_000_000


def _parts(rows: int, rate: float, seed: int) -> Iterator[pl.DataFrame]:
    from quality.testing import clean_population

    step = max(round(1 / rate), 8) if rate > 0 else 0
    done = 0
    i = 0
    while done < rows:
        n = min(PART, rows - done)
        # 25 disjoint ID blocks: parts never share an ID, so duplicates are only injected ones
        f = clean_population(n, seed=seed + i, block=(i % 25, 25))
        if step:
            idx = pl.int_range(pl.len())
            ids = pl.col("公民身份号码")
            flip = pl.when(ids.str.slice(17, 1) == "0").then(pl.lit("1")).otherwise(pl.lit("0"))
            f = f.with_columns(
                pl.when(idx % step == 1).then(None).otherwise(pl.col("姓名")).alias("姓名"),
                pl.when(idx % step == 2)
                .then(ids.str.slice(0, 17) + flip)
                .otherwise(ids)
                .alias("公民身份号码"),
                pl.when(idx % step == 3)
                .then(pl.lit("12345"))
                .otherwise(pl.col("联系电话"))
                .alias("联系电话"),
                pl.when(idx % step == 4)
                .then(pl.lit("未知"))
                .otherwise(pl.col("民族"))
                .alias("民族"),
                pl.when(idx % step == 5)
                .then(pl.lit(dt.date(2099, 1, 1)))
                .otherwise(pl.col("登记日期"))
                .alias("登记日期"),
            )
            # exact copies of some rows: duplicate ID and duplicate record
            f = pl.concat([f, f.filter(pl.int_range(pl.len()) % step == 6)])
        done += f.height
        i += 1
        yield f


def _identity(root: Path) -> None:
    """A domain policy naming this login as a service account, read by the child processes:
    the snapshot's ingest record needs an actor with an account (see docs/identity)."""
    from governance.identity import login_name

    policy = root / "domain_policy.yaml"
    policy.write_text(
        f"service_accounts:\n  - {{name: {login_name()}, purpose: benchmark}}\n",
        encoding="utf-8",
    )
    os.environ["SHUYU_DOMAIN_POLICY"] = str(policy)
    os.environ["SHUYU_ACTOR"] = "bench"


def _make(home_dir: Path, rows: int, rate: float, seed: int) -> None:
    from governance import accounts
    from governance.actors import Actor, set_current
    from quality.testing import catalog_resource, write_snapshot_parts
    from shuyu_core.home import Home

    home = Home.from_env(home_dir).ensure()
    accounts.ensure(home, "bench", ["operator"], Actor("bench-admin", "admin"))
    set_current(Actor("bench", "operator"))
    m = write_snapshot_parts(home, catalog_resource("RKJBXX"), _parts(rows, rate, seed))
    print(json.dumps({"rows": m.rows, "files": len(m.files)}))


def _measure(home_dir: Path, what: str) -> None:
    """One measurement in a fresh process: seconds and this process's peak RSS."""
    from catalogs.catalog import Catalog
    from quality.engine import check_snapshot
    from shuyu_core import snapshots
    from shuyu_core.home import Home

    home = Home.from_env(home_dir)
    res = Catalog.load().get("RKJBXX")
    m = snapshots.latest(home, "RKJBXX")
    files = [str(snapshots.snapshot_dir(home, "RKJBXX", m.snapshot_id) / f) for f in m.files]
    before = psutil.Process().memory_info().rss
    extra: dict[str, Any] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    if what == "baseline":
        pl.scan_parquet(files).select([pl.col(c).null_count() for c in res.field_names]).collect(
            engine="streaming"
        )
    elif what == "pandera":
        from pandera_rkjbxx import validate

        extra["failing"] = validate(files, dt.date.today())
    elif what == "read":
        pl.scan_parquet(files).select(
            [pl.col(c).cast(pl.String).str.len_bytes().sum() for c in res.field_names]
        ).collect(engine="streaming")
    else:
        result = check_snapshot(home, res, samples=what != "nosamples")
        extra["failing"] = {r.rule: r.failed for r in result.rules if r.failed}
    secs = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    peak = cpu1.ru_maxrss * 1024
    print(
        json.dumps(
            {
                "seconds": secs,
                "cpu_seconds": cpu,
                "peak_mib": peak / 2**20,
                "delta_mib": (peak - before) / 2**20,
                **extra,
            }
        )
    )


def _child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="snapshot rows")
    parser.add_argument("--defect-rate", type=float, default=0.01, help="share of bad rows")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make is not None:
        _make(args.make, args.rows, args.defect_rate, args.seed)
        return
    if args.measure is not None:
        _measure(args.home, args.measure)
        return

    root = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    _identity(root)
    try:
        t0 = time.perf_counter()
        info = _child(
            [
                "--make",
                str(root),
                "--rows",
                str(args.rows),
                "--defect-rate",
                str(args.defect_rate),
                "--seed",
                str(args.seed),
            ]
        )
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.glob("raw/RKJBXX/*/*.parquet")) / 2**20
        steps = [
            ("baseline: null counts (polars)", "baseline", None),
            ("plain read of every value", "read", None),
            ("full check (25 rules + samples)", "check", None),
            ("full check, no samples", "nosamples", None),
            ("full check, local validators", "check", {"SHUYU_QUALITY_VALIDATORS": "local"}),
            ("pandera (polars backend), same rules", "pandera", None),
        ]
        _child(["--measure", "baseline", "--home", str(root)])  # warm the page cache
        results = [
            (name, _child(["--measure", what, "--home", str(root)], env))
            for name, what, env in steps
        ]
        vm = psutil.virtual_memory()
        print(
            f"machine: {os.cpu_count()} cores, {vm.total / 2**30:.1f} GiB RAM; polars "
            f"{pl.__version__}; snapshot {info['rows']:,} rows in {info['files']} parquet "
            f"parts, {size:.0f} MiB (generated in {gen_s:.0f} s); each step in a fresh process"
        )
        print(
            f"{'step':<38}{'rows':>12}{'seconds':>9}{'rows/s':>13}{'÷nulls':>8}{'÷read':>7}"
            f"{'CPU s':>8}{'CPU ÷read':>10}{'peak RSS MiB':>14}{'above start':>12}"
        )
        base = results[0][1]["seconds"]
        read = results[1][1]["seconds"]
        read_cpu = results[1][1]["cpu_seconds"]
        for name, r in results:
            print(
                f"{name:<38}{info['rows']:>12,}{r['seconds']:>9.2f}"
                f"{info['rows'] / r['seconds']:>13,.0f}{r['seconds'] / base:>8.1f}"
                f"{r['seconds'] / read:>7.2f}{r['cpu_seconds']:>8.1f}"
                f"{r['cpu_seconds'] / read_cpu:>10.2f}"
                f"{r['peak_mib']:>14.0f}{r['delta_mib']:>12.0f}"
            )
        print(
            f"load average at the end: {os.getloadavg()[0]:.1f} (wall seconds are inflated "
            "when other work shares the cores; CPU seconds are user + system time of the step)"
        )
        print(f"failing rules: {results[2][1]['failing']}")
        pandera = results[-1][1]
        print(
            f"pandera failure cases by check (uniqueness counts every copy): "
            f"{ {k[:40]: v for k, v in pandera['failing'].items()} }"
        )
        print(
            f"full check / plain read: {results[2][1]['seconds'] / read:.2f}x wall, "
            f"{results[2][1]['cpu_seconds'] / read_cpu:.2f}x CPU; pandera / full check: "
            f"{pandera['seconds'] / results[2][1]['seconds']:.2f}x wall"
        )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
