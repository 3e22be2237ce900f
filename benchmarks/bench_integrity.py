"""Benchmark: snapshot integrity on read (SM3 of every Parquet part) against a plain read.

    .venv/bin/python benchmarks/bench_integrity.py [--persons N] [--keep DIR]

Every build, desensitization, quality check and assessment re-hashes the parts of the
snapshots it reads (``shuyu_core.snapshots.verify``) before using a row. This measures what
that costs, on the four ingested resources:

- **plain read**: polars reads every part of every snapshot into memory, every column
  (``scan_parquet(parts).collect()``, one resource at a time) — what a full reader does;
- **verify (cold)**: the streaming SM3 over the same parts, process cache empty;
- **verify + read**: what a verified reader pays in all (the ratio that matters);
- **verify (cached)**: the same verification again in the same process (size/mtime unchanged),
  i.e. the cost of the second and later scans of one build.

The ratio is seconds / plain-read seconds over the same rows. The page cache is warmed by one
untimed read first, so neither side pays the disk alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
from rich.console import Console
from rich.table import Table

CODES = ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS")


def _source(src: Path, code: str) -> Path:
    for candidate in (src / code, src / f"{code}.parquet"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"no input for {code} under {src}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work directory to keep")
    args = parser.parse_args()

    from synthetic_data.generate import generate

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    console = Console(width=160)
    try:
        src = root / f"synth-parquet-{args.persons}"
        if not src.exists():
            console.print(f"generating {args.persons:,} persons …")
            generate(src, args.persons, args.seed, 0.02, fmt="parquet", as_of=dt.date(2025, 6, 30))
        os.environ["SHUYU_HOME"] = str(root / "home")
        os.environ.setdefault("SHUYU_ACTOR", "bench")
        from pipelines.ingest import ingest_path
        from shuyu_core import snapshots
        from shuyu_core.home import Home

        home = Home.from_env().ensure()
        manifests = []
        for code in CODES:
            found = snapshots.list_snapshots(home, code)
            if not found:
                console.print(f"ingesting {code} …")
                found = [ingest_path(home, code, _source(src, code))]
            manifests.append(found[-1])
        parts = {m.resource: snapshots.part_paths(home, m) for m in manifests}
        size = sum(p.stat().st_size for ps in parts.values() for p in ps) / 2**20
        rows = sum(m.rows for m in manifests)

        def plain_read() -> float:
            t = time.perf_counter()
            for ps in parts.values():
                frame = pl.scan_parquet([str(p) for p in ps]).collect()
                del frame
            return time.perf_counter() - t

        def verify() -> float:
            t = time.perf_counter()
            for m in manifests:
                snapshots.verify(home, m)
            return time.perf_counter() - t

        plain_read()  # warm the page cache for both sides
        base = min(plain_read() for _ in range(2))
        cold = []
        for _ in range(2):
            snapshots._VERIFIED.clear()
            cold.append(verify())
        cold_s = min(cold)
        cached_s = verify()
        both = []
        for _ in range(2):
            snapshots._VERIFIED.clear()
            both.append(verify() + plain_read())
        both_s = min(both)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        mem = psutil.virtual_memory().total / 2**30
        table = Table(
            title=f"bench_integrity — {os.cpu_count()} cores, {mem:.1f} GiB RAM, "
            f"polars {pl.__version__}, {size:,.0f} MiB of Parquet in "
            f"{sum(len(p) for p in parts.values())} parts, peak RSS {peak:,.0f} MiB"
        )
        for col in ("step", "persons", "rows", "seconds", "rows/s", "ratio"):
            table.add_column(col, justify="left" if col == "step" else "right")
        for name, secs in (
            ("baseline: plain polars read of every part (all columns)", base),
            ("SM3 verify of every part (cold, streaming 1 MiB chunks)", cold_s),
            ("verify + plain read (what a verified reader pays)", both_s),
            ("verify again in the same process (cached: stat only)", cached_s),
        ):
            table.add_row(
                name,
                f"{args.persons:,}",
                f"{rows:,}",
                f"{secs:.3f}",
                f"{rows / secs:,.0f}" if secs > 0 else "-",
                f"{secs / base:.2f}",
            )
        console.print(table)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
