"""Benchmark: synthetic data generation against a plain polars read-and-write of its output.

    .venv/bin/python benchmarks/bench_synth.py [--persons N] [--format parquet|csv-gb18030]
                                               [--keep DIR]

- **shuyu**: ``synthetic_data.generate.generate`` — four linked datasets (about 12 rows per
  person in total), check digits, defects, Parquet (zstd) or GB18030 CSV, defects.json;
- **baseline**: polars reads the generated Parquet back and writes it again (streaming
  ``scan_parquet().sink_parquet()``, same compression), i.e. the cost of merely moving the
  same rows through polars.

The ratio is shuyu seconds / baseline seconds. Peak RSS is sampled per phase (psutil, every
20 ms; the baseline runs in its own process); ``--persons 10000000`` exercises the streaming
path (about 120 M rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import psutil
from child_process import run_sampled  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

from synthetic_data.generate import CODES, generate


@contextmanager
def _peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident set size (MiB) of this process while the block runs."""
    proc = psutil.Process()
    out = {"peak_mib": proc.memory_info().rss / 2**20}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak_mib"] = max(out["peak_mib"], proc.memory_info().rss / 2**20)
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mib"] = max(out["peak_mib"], proc.memory_info().rss / 2**20)


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    with _peak_rss() as peak:
        t = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t
    return seconds, peak["peak_mib"], result


def _baseline(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for code in CODES:
        path = src / code if (src / code).is_dir() else src / f"{code}.parquet"
        pattern = str(path / "*.parquet") if path.is_dir() else str(path)
        pl.scan_parquet(pattern).sink_parquet(dst / f"{code}.parquet", compression="zstd")


def _baseline_in_child(src: Path, dst: Path) -> tuple[float, float]:
    """The baseline in its own process (the child times itself); seconds and peak MiB."""
    line, peak_mib = run_sampled([__file__, "--_baseline", str(src), str(dst)], "baseline")
    return float(line), peak_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--defect-rate", type=float, default=0.02)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv-gb18030"])
    parser.add_argument("--keep", type=Path, default=None, help="keep the output here")
    parser.add_argument("--_baseline", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._baseline:
        started = time.perf_counter()
        _baseline(Path(args._baseline[0]), Path(args._baseline[1]))
        print(time.perf_counter() - started)
        return

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-synth-"))
    out = root / "synth"
    console = Console(width=160)
    try:
        gen_s, gen_peak, result = _timed(
            lambda: generate(
                out,
                args.persons,
                args.seed,
                args.defect_rate,
                fmt=args.format,
                as_of=dt.date(2025, 6, 30),
            )
        )
        rows = sum(result.rows.values())
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        if args.format == "parquet":
            base_src = out
        else:
            # The baseline always moves Parquet; produce it without timing.
            base_src = root / "parquet"
            generate(
                base_src, args.persons, args.seed, args.defect_rate, as_of=dt.date(2025, 6, 30)
            )
        base_s, base_peak = _baseline_in_child(base_src, root / "baseline")

        mem = psutil.virtual_memory().total / 2**30
        table = Table(
            title=f"bench_synth — {os.cpu_count()} cores, {mem:.1f} GiB RAM, "
            f"polars {pl.__version__}"
        )
        for col in ("step", "persons", "rows", "seconds", "rows/s", "ratio", "peak RSS MiB"):
            table.add_column(col, justify="left" if col == "step" else "right")
        table.add_row(
            f"shuyu synth ({args.format}, {result.chunks} chunk(s), {size / 2**20:.0f} MiB)",
            f"{args.persons:,}",
            f"{rows:,}",
            f"{gen_s:.2f}",
            f"{rows / gen_s:,.0f}",
            f"{gen_s / base_s:.2f}",
            f"{gen_peak:,.0f}",
        )
        table.add_row(
            "baseline: polars scan_parquet → sink_parquet",
            f"{args.persons:,}",
            f"{rows:,}",
            f"{base_s:.2f}",
            f"{rows / base_s:,.0f}",
            "1.00",
            f"{base_peak:,.0f}",
        )
        console.print(table)
        for code in CODES:
            console.print(f"  {code}: {result.rows[code]:,} rows")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
