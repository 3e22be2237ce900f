"""Scale-out benchmark: HMAC-SM3 pseudonyms, and one partitioned resource on the local backend
against a Dask LocalCluster of 2 workers.

    .venv/bin/python benchmarks/bench_scale.py [--persons N ...] [--parts 2 4 8] [--hmac N]
                                               [--workers 2] [--skip-scale]

1. HMAC-SM3, ``--hmac`` distinct 18-character IDs (default 300 000), one core:
   ``transforms.operators.hmac_sm3_tokens`` (the key's inner and outer pads hashed once, the
   two SM3 states copied per value) against the previous implementation (an HMAC object
   prepared once and copied per value) and a per-row ``hmac.new`` loop; outputs asserted equal.
2. Scale: each ``--persons`` size of synthetic persons (default 10 000 and 40 000; ~11 rows
   per person over RKJBXX and SBCBJF),
   ingested with each ``--parts`` count (hash-partitioned on the person). Per count: the
   per-unit bounding of the SI enrolment report (``scaleout.driver.bounded_frame``), the
   quality row-rule counts and desensitization of RKJBXX, on ``local`` (this process, parts in
   turn) and on a LocalCluster of ``--workers`` processes (1 thread each); wall time, and each
   worker's peak RSS (VmHWM read on the worker). Then a least-squares cost model
   t = a + b·parts + c·rows/min(workers, parts) fitted over the dask runs, extrapolated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AS_OF = dt.date(2026, 1, 15)
KEY = bytes(range(32))


def _machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, load {os.getloadavg()[0]:.1f}"


# -- 1. HMAC-SM3 ------------------------------------------------------------------------------


def _previous_tokens(values: list[str], key: bytes) -> list[str]:
    """The implementation before the pads (an HMAC object copied per value)."""
    base = hmac.new(key, digestmod="sm3")
    out: list[str] = []
    for v in values:
        h = base.copy()
        h.update(v.encode("utf-8"))
        out.append(h.hexdigest())
    return out


def _per_row(values: list[str], key: bytes) -> list[str]:
    return [hmac.new(key, v.encode("utf-8"), "sm3").hexdigest() for v in values]


def bench_hmac(n: int) -> None:
    from transforms.operators import hmac_sm3_tokens

    assert "sm3" in hashlib.algorithms_available
    values = [f"2108{i:014d}" for i in range(n)]
    rows = []
    results = {}
    for name, fn in (
        ("pads (now)", hmac_sm3_tokens),
        ("HMAC object copy (before)", _previous_tokens),
        ("per-row hmac.new", _per_row),
    ):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            results[name] = fn(values, KEY)
            best = min(best, time.perf_counter() - t0)
        rows.append((name, best))
    assert (
        results["pads (now)"] == results["HMAC object copy (before)"] == results["per-row hmac.new"]
    )
    now = rows[0][1]
    print(f"\n1. HMAC-SM3 pseudonyms, {n:,} distinct values, one core ({_machine()})")
    print(f"   {'implementation':<28}{'seconds':>9}{'k values/s':>12}{'time / now':>12}")
    for name, s in rows:
        print(f"   {name:<28}{s:>9.3f}{n / s / 1e3:>12.0f}{s / now:>12.2f}")
    print("   outputs identical: yes")


# -- 2. scale ---------------------------------------------------------------------------------


def _home(work: Path) -> Any:
    os.environ["SHUYU_HOME"] = str(work / "home")
    policy = work / "domain_policy.yaml"
    from governance.identity import login_name

    policy.write_text(
        f"service_accounts:\n  - {{name: {login_name()}, purpose: benchmark}}\n",
        encoding="utf-8",
    )
    os.environ["SHUYU_DOMAIN_POLICY"] = str(policy)
    from governance import accounts
    from governance.actors import Actor, set_current
    from shuyu_core import keys
    from shuyu_core.home import Home

    home = Home.from_env().ensure()
    accounts.ensure(home, "bench", ["operator"], Actor("bench-admin", "admin"))
    set_current(Actor("bench", "operator"))
    os.environ["SHUYU_ACTOR"] = "bench"
    keys.init_key(home, keys.PSEUDONYM)
    keys.init_key(home, keys.ENCRYPTION)
    return home


def _ingest(home: Any, src: Path, parts: int) -> dict[str, Any]:
    from pipelines.ingest import ingest_path

    out = {}
    for code in ("RKJBXX", "SBCBJF"):
        path = src / f"{code}.parquet" if (src / f"{code}.parquet").exists() else src / code
        out[code] = ingest_path(home, code, path, partitions=parts)
    return out


def _ctx(home: Any, inputs: dict[str, Any], name: str) -> Any:
    from catalogs.catalog import Catalog
    from products import engine, specs

    spec = specs.get("si_enrolment_report")
    ins = {i.resource: inputs[i.resource] for i in spec.inputs}
    return engine.BuildContext(home, spec, Catalog.load(), ins, name, engine.BuildOptions(), [])


def _worker_peaks(backend: Any) -> list[float]:
    if backend.name != "dask":
        return []

    def vmhwm() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    return sorted(backend.client.run(vmhwm).values())


def _run(home: Any, inputs: dict[str, Any], backend: Any, tag: str, work: Path) -> dict[str, float]:
    from scaleout import driver

    times = {}
    t0 = time.perf_counter()
    frames = driver.report_bounded_frames(_ctx(home, inputs, f"bench-{tag}"), backend)
    for frame in frames.values():
        frame.select(pl.len()).collect()
    times["bounding"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    driver.quality_counts_of(home, "RKJBXX", backend, inputs["RKJBXX"].snapshot_id, AS_OF)
    times["quality"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    driver.desensitize(home, "RKJBXX", backend, work / f"desens-{tag}")
    times["desensitize"] = time.perf_counter() - t0
    return times


def bench_scale(sizes: list[int], parts_list: list[int], workers: int) -> None:
    from scaleout.backends import LocalBackend, open_backend
    from synthetic_data.generate import generate

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        home = _home(work)
        print(
            f"\n2. Scale: local vs dask LocalCluster({workers} workers x 1 thread), "
            f"persons {sizes}, parts {parts_list} ({_machine()})"
        )
        results: list[tuple[int, str, dict[str, float], list[float], int]] = []
        with open_backend(f"local:{workers}") as dask_backend:
            warm = False
            for persons in sizes:
                src = work / f"src-{persons}"
                generate(src, persons=persons, seed=11, defect_rate=0.0, as_of=AS_OF)
                for parts in parts_list:
                    t0 = time.perf_counter()
                    inputs = _ingest(home, src, parts)
                    ingest_s = time.perf_counter() - t0
                    rows = inputs["SBCBJF"].rows + inputs["RKJBXX"].rows
                    if not warm:  # imports and first connections on the workers, not timed
                        _run(home, inputs, dask_backend, "warm", work)
                        warm = True
                    for backend in (LocalBackend(), dask_backend):
                        tag = f"{backend.name}-{persons}-{parts}"
                        times = _run(home, inputs, backend, tag, work)
                        results.append((parts, backend.name, times, _worker_peaks(backend), rows))
                    print(
                        f"   {persons:,} persons, {rows:,} rows (RKJBXX + SBCBJF), {parts} parts: "
                        f"ingest {ingest_s:.1f} s"
                    )
        print(
            f"   {'rows':>11} {'parts':>5} {'backend':<8}{'bounding s':>11}{'quality s':>10}"
            f"{'desens. s':>10}{'total s':>9}  worker peak RSS MiB"
        )
        for parts, name, t, peaks, rows in results:
            total = sum(t.values())
            peak = ", ".join(f"{p:.0f}" for p in peaks) or f"(driver {_self_peak():.0f})"
            print(
                f"   {rows:>11,} {parts:>5} {name:<8}{t['bounding']:>11.2f}{t['quality']:>10.2f}"
                f"{t['desensitize']:>10.2f}{total:>9.2f}  {peak}"
            )
        _cost_model(
            [(p, sum(t.values()), r) for p, n, t, _pk, r in results if n == "dask"], workers
        )


def _self_peak() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cost_model(runs: list[tuple[int, float, int]], workers: int) -> None:
    """t = a + b·parts + c·rows/min(workers, parts), least squares over the dask runs."""
    if len({r for _p, _t, r in runs}) < 2 or len(runs) < 3:
        print("   cost model: needs 2 or more sizes and 3 or more runs")
        return
    from scipy.optimize import nnls

    x = np.array([[1.0, p, r / min(workers, p)] for p, _t, r in runs])
    y = np.array([t for _p, t, _r in runs])
    (a, b, c), _resid = nnls(x, y)  # non-negative: no cost term may be a saving
    fit = x @ np.array([a, b, c])
    worst = float(np.max(np.abs(fit - y) / y))
    print(
        f"   cost model (dask runs): t = {a:.2f} s + {b * 1e3:.1f} ms x parts + "
        f"{c * 1e9:.1f} ns x rows / min(workers, parts); worst relative misfit {worst:.0%}"
    )
    total = 3.5e9
    for machines in (1, 4, 16, 64):
        w = machines * workers
        parts = max(w * 4, 64)
        t = a + b * parts + c * total / w
        print(
            f"   extrapolation: 3.5 billion rows, {machines:>3} machine(s) x {workers} workers, "
            f"{parts} parts: {t / 3600:.1f} h"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--persons", type=int, nargs="+", default=[10_000, 40_000])
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hmac", type=int, default=300_000)
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    bench_hmac(args.hmac)
    if not args.skip_scale:
        bench_scale(args.persons, args.parts, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
