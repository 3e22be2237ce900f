"""Run every benchmark at its default size, one after another; ``make bench`` calls this.

    .venv/bin/python benchmarks/run_all.py [--only NAME ...] [--list]

Each ``benchmarks/bench_<area>.py`` is a standalone script that prints its own table (rows,
machine, seconds, ratio against a baseline computed in the same run, peak RSS). This runner
starts each in its own process, streams its output, and keeps a copy under
``benchmarks/results/<UTC time>.txt`` (git-ignored). Larger sizes are per script, by flag
(see each script's ``--help``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Order follows the pipeline: data first, then what is built on it.
ORDER = (
    "synth",
    "ingest",
    "integrity",
    "governance",
    "pii",
    "quality",
    "products",
    "assessment",
    "portal",
    "scale",
)


def discover() -> list[str]:
    found = {p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()

    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f"error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
            return 2
        names = [n for n in names if n in args.only]

    results = HERE / "results"
    results.mkdir(exist_ok=True)
    log_path = results / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.txt"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "160"}
    failed: list[str] = []
    with log_path.open("w", encoding="utf-8") as log:
        for name in names:
            header = f"\n=== bench_{name} ===\n"
            sys.stdout.write(header)
            log.write(header)
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, str(HERE / f"bench_{name}.py")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            code = proc.wait()
            footer = f"--- bench_{name}: exit {code}, {time.perf_counter() - started:.0f} s\n"
            sys.stdout.write(footer)
            log.write(footer)
            if code != 0:
                failed.append(name)
    print(f"\nresults kept in {log_path}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
