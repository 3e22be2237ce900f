"""Benchmark: ingestion into the domain against a plain polars read-and-write of the same files.

    .venv/bin/python benchmarks/bench_ingest.py [--persons N] [--format parquet|csv-gb18030]
                                                [--keep DIR]

- **shuyu**: ``pipelines.ingest.ingest_path`` for each of the four resources — encoding
  detection (CSV), validation against the catalog, casts with error reporting, staged snapshot
  directory, SM3 content hash, manifest, atomic rename, audit entry;
- **baseline**: plain polars on the same input — ``scan_parquet().sink_parquet()`` for
  Parquet; for GB18030 CSV, a streaming transcode to UTF-8 followed by
  ``scan_csv().sink_parquet()`` (polars reads only UTF-8), i.e. the cost of moving the rows.

Each phase runs in its own spawned process whose RSS the parent samples, so each peak is the
phase's own. The ratio is shuyu seconds / baseline seconds over the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
from child_process import run_sampled  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

CODES = ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS")


def _source(src: Path, code: str) -> Path:
    for candidate in (src / code, src / f"{code}.parquet", src / f"{code}.csv"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"no input for {code} under {src}")


def _phase_shuyu(src: Path, home_dir: Path) -> dict[str, float]:
    os.environ["SHUYU_HOME"] = str(home_dir)
    os.environ.setdefault("SHUYU_ACTOR", "bench")
    from pipelines.ingest import ingest_path
    from shuyu_core.home import Home

    home = Home.from_env().ensure()
    started = time.perf_counter()
    rows = 0
    for code in CODES:
        rows += ingest_path(home, code, _source(src, code)).rows
    return {"seconds": time.perf_counter() - started, "rows": rows}


def _phase_baseline(src: Path, out: Path) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = 0
    for code in CODES:
        path = _source(src, code)
        if path.suffix == ".csv":
            utf8 = out / f"{code}.utf8.csv"
            with (
                path.open("r", encoding="gb18030", newline="") as fin,
                utf8.open("w", encoding="utf-8", newline="") as fout,
            ):
                shutil.copyfileobj(fin, fout, 1 << 22)
            lf = pl.scan_csv(utf8, infer_schema=False)
        else:
            pattern = str(path / "*.parquet") if path.is_dir() else str(path)
            lf = pl.scan_parquet(pattern)
        dst = out / f"{code}.parquet"
        lf.sink_parquet(dst, compression="zstd")
        rows += pl.scan_parquet(dst).select(pl.len()).collect().item()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def _child(phase: str, src: Path, dst: Path) -> dict[str, float]:
    """Run one phase in a fresh interpreter; return its timing and its peak RSS."""
    line, peak_mib = run_sampled([__file__, "--_phase", phase, str(src), str(dst)], phase)
    result: dict[str, float] = json.loads(line)
    result["peak_mib"] = peak_mib
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv-gb18030"])
    parser.add_argument("--keep", type=Path, default=None, help="work directory to keep")
    parser.add_argument("--_phase", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._phase:
        phase, src, dst = args._phase
        run = _phase_shuyu if phase == "shuyu" else _phase_baseline
        print(json.dumps(run(Path(src), Path(dst))))
        return

    from synthetic_data.generate import generate

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    console = Console(width=160)
    try:
        src = root / f"synth-{args.format}-{args.persons}"
        if not src.exists():
            console.print(f"generating {args.persons:,} persons ({args.format}) …")
            generate(
                src, args.persons, args.seed, 0.02, fmt=args.format, as_of=dt.date(2025, 6, 30)
            )
        size = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) / 2**20
        # The baseline goes first so the OS page cache favours neither side unfairly after.
        base = _child("baseline", src, root / "baseline")
        shuyu = _child("shuyu", src, root / "home")
        if base["rows"] != shuyu["rows"]:
            raise SystemExit(f"row counts differ: baseline {base['rows']}, shuyu {shuyu['rows']}")

        mem = psutil.virtual_memory().total / 2**30
        table = Table(
            title=f"bench_ingest — {os.cpu_count()} cores, {mem:.1f} GiB RAM, "
            f"polars {pl.__version__}, input {args.format} {size:,.0f} MiB"
        )
        for col in ("step", "persons", "rows", "seconds", "rows/s", "ratio", "peak RSS MiB"):
            table.add_column(col, justify="left" if col == "step" else "right")
        rows = int(shuyu["rows"])
        for name, r in (
            ("shuyu ingest (4 resources, validate + SM3 + snapshot)", shuyu),
            ("baseline: plain polars read → write parquet", base),
        ):
            table.add_row(
                name,
                f"{args.persons:,}",
                f"{rows:,}",
                f"{r['seconds']:.2f}",
                f"{rows / r['seconds']:,.0f}",
                f"{r['seconds'] / base['seconds']:.2f}",
                f"{r['peak_mib']:,.0f}",
            )
        console.print(table)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
