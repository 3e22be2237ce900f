"""Run a benchmark phase in a fresh interpreter and sample its peak RSS from outside.

A phase run in the benchmark's own process would report that process's leftovers as its
peak, and ``ru_maxrss`` survives ``execve`` on Linux, so a child cannot measure itself
either: the parent samples the child's RSS every 20 ms instead.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def run_sampled(args: list[str], what: str) -> tuple[str, float]:
    """Run ``python <args>``; return its last stdout line and its peak RSS in MiB."""
    proc = psutil.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed with exit code {proc.returncode}")
    return out.strip().splitlines()[-1], peak / 2**20
