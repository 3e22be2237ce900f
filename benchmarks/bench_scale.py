"""Scale-out benchmark: HMAC-SM3 pseudonyms, and one partitioned resource on the local backend
against a Dask LocalCluster of 2 workers, per partition count; then the cost model.

    .venv/bin/python benchmarks/bench_scale.py [--persons N ...] [--parts 2 4 8 16]
        [--workers 2] [--hmac N] [--skip-hmac] [--skip-scale]
        [--data-dir DIR] [--results FILE.jsonl] [--report FILE.jsonl ...]

1. HMAC-SM3, ``--hmac`` distinct 18-character IDs (default 300 000), one core:
   ``transforms.operators.hmac_sm3_tokens`` (the key's inner and outer pads hashed once, the
   two SM3 states copied per value) against the previous implementation (an HMAC object
   prepared once and copied per value) and a per-row ``hmac.new`` loop; outputs asserted equal.
2. Scale: each ``--persons`` size of synthetic persons (default 10 000 and 40 000; ~11 rows
   per person over RKJBXX and SBCBJF), ingested with each ``--parts`` count (hash-partitioned
   on the person). Per count, once on the driver: the SM3 verification of both snapshots
   (``verify``, the driver's serial pass; cached afterwards, as in one long-lived process).
   Then on ``local`` (this process, parts in turn) and on a LocalCluster of ``--workers``
   processes (1 thread each), the phases that run per partition:

   - ``bounding``: the per-unit bounding of the SI enrolment report
     (``scaleout.driver.report_bounded_frames``, both inputs, every table);
   - ``quality``: the row-rule counts of RKJBXX (``scaleout.driver.quality_counts_of``);
   - ``desensitize``: RKJBXX with the default policy (``scaleout.driver.desensitize``; its
     whole-snapshot PII sample and quantile bounds run on the driver);
   - ``draw``: the driver's combination, the OpenDP measurement over the union of the bounded
     parts (noise drawn once; nothing is released or charged).

   Per phase: wall time, the time inside the backend's ``map`` (the rest is the driver's
   serial work), the CPU seconds of the driver and of each worker (all threads: polars runs
   its own thread pool inside each process), and the peak RSS of the driver and of each
   worker process: the kernel's high-water mark (``VmHWM``) reset before the phase
   (``/proc/<pid>/clear_refs`` = 5) and read after it, so each figure is that phase's own
   peak (the driver's RSS at the start of the phase is recorded too: what an earlier phase
   left allocated counts in its peak).
3. The cost model (``benchmarks/scale_model.py``) fitted over every run, with residuals, and
   extrapolated to 3.5 billion rows on N machines.

``--data-dir`` keeps the generated sources (``src-<persons>/``) and one home per size and
count (``homes/p<persons>-n<parts>/``) for reuse by later runs: the issue's figure is
``--persons 10000000 --data-dir /work/bigdata/scalebench`` (under ``flock /work/bench.lock``).
``--results`` appends one JSON line per run; ``--report`` prints the table and the model from
such files without running anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from scale_model import fit_and_report, markdown, print_runs  # noqa: E402  (benchmarks/ on sys.path)

AS_OF = dt.date(2026, 1, 15)
KEY = bytes(range(32))
CODES = ("RKJBXX", "SBCBJF")
PHASES = ("bounding", "quality", "desensitize", "draw")


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


# -- peak RSS per process -------------------------------------------------------------------


def _reset_peak() -> int:
    """Reset this process's RSS high-water mark (Linux: clear_refs 5); its pid."""
    Path("/proc/self/clear_refs").write_text("5")
    return os.getpid()


def _peak_mib() -> float:
    """This process's RSS high-water mark since the last reset, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    """CPU seconds of this process, all its threads (polars' pool included)."""
    return time.process_time()


class Peaks:
    """Per-phase peak RSS and CPU seconds of the driver and of every dask worker process
    (workers in address order)."""

    def __init__(self, backend: Any) -> None:
        self.client = backend.client if backend.name == "dask" else None
        self.cpu0 = 0.0
        self.wcpu0: dict[str, float] = {}

    def _workers(self, fn: Callable[[], float]) -> dict[str, float]:
        return dict(sorted(self.client.run(fn).items())) if self.client is not None else {}

    def reset(self) -> None:
        _reset_peak()
        if self.client is not None:
            self.client.run(_reset_peak)
        self.cpu0 = _cpu_s()
        self.wcpu0 = self._workers(_cpu_s)

    def read(self) -> tuple[float, list[float], float, list[float]]:
        """Driver peak MiB, worker peaks MiB, driver CPU s, worker CPU s since the reset."""
        cpu = _cpu_s() - self.cpu0
        wcpu = self._workers(_cpu_s)
        peaks = self._workers(_peak_mib)
        return (
            _peak_mib(),
            list(peaks.values()),
            cpu,
            [wcpu[a] - self.wcpu0.get(a, 0.0) for a in wcpu],
        )


# -- 2. scale ---------------------------------------------------------------------------------


def _home(root: Path) -> Any:
    """A benchmark home at ``root`` (idempotent): an operator account, the two keys."""
    os.environ["SHUYU_HOME"] = str(root)
    policy = root.parent / "domain_policy.yaml"
    from governance.identity import login_name

    policy.parent.mkdir(parents=True, exist_ok=True)
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


def _source(data: Path, persons: int) -> Path:
    """The generated sources of ``persons`` (generated once per data dir)."""
    from synthetic_data.generate import generate

    src = data / f"src-{persons}"
    if not (src / "defects.json").exists():
        t0 = time.perf_counter()
        generate(src, persons=persons, seed=11, defect_rate=0.0, as_of=AS_OF)
        print(f"   generated {persons:,} persons in {time.perf_counter() - t0:.1f} s")
    return src


def _ingested(home: Any, src: Path, parts: int) -> tuple[dict[str, Any], float | None]:
    """Both inputs ingested with ``parts`` parts: the stored snapshots if the home has them
    (ingest seconds None), else a fresh ingest, timed."""
    from shuyu_core import snapshots

    have = {c: snapshots.list_snapshots(home, c) for c in CODES}
    if all(
        s and s[-1].partitioning is not None and s[-1].partitioning.count == parts
        for s in have.values()
    ):
        return {c: have[c][-1] for c in CODES}, None
    # In a child process: what ingestion allocates would otherwise stay in this process's
    # RSS and be counted as the driver's peak in every phase after it.
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--_ingest", str(home.root), str(src), str(parts)], check=True
    )
    seconds = time.perf_counter() - t0
    return {c: snapshots.latest(home, c) for c in CODES}, seconds


def _ingest_child(root: Path, src: Path, parts: int) -> None:
    from pipelines.ingest import ingest_path

    home = _home(root)
    for code in CODES:
        path = src / f"{code}.parquet" if (src / f"{code}.parquet").exists() else src / code
        ingest_path(home, code, path, partitions=parts)


def _bytes(home: Any, m: Any) -> int:
    from shuyu_core import snapshots

    return sum(p.stat().st_size for p in snapshots.part_paths(home, m))


def _ctx(home: Any, inputs: dict[str, Any], name: str) -> Any:
    from catalogs.catalog import Catalog
    from products import engine, specs

    spec = specs.get("si_enrolment_report")
    ins = {i.resource: inputs[i.resource] for i in spec.inputs}
    return engine.BuildContext(home, spec, Catalog.load(), ins, name, engine.BuildOptions(), [])


def _verify(home: Any, inputs: dict[str, Any]) -> tuple[float, float]:
    """The driver's SM3 verification of both snapshots from cold (per-process caches
    cleared: a fresh ``shuyu`` command pays it); seconds and driver peak MiB."""
    from governance import evidence
    from scaleout import driver
    from shuyu_core import snapshots

    snapshots._VERIFIED.clear()
    evidence._SNAPSHOTS_CHECKED.clear()
    _reset_peak()
    t0 = time.perf_counter()
    for m in inputs.values():
        driver.verified_parts(home, m)
    return time.perf_counter() - t0, _peak_mib()


def _phases(
    home: Any, inputs: dict[str, Any], backend: Any, tag: str, out: Path
) -> dict[str, Callable[[], Any]]:
    from products.language.builder import measure
    from scaleout import driver

    ctx = _ctx(home, inputs, f"bench-{tag}")
    frames: dict[str, pl.LazyFrame] = {}

    def bounding() -> None:
        frames.update(driver.report_bounded_frames(ctx, backend))

    def quality() -> None:
        driver.quality_counts_of(home, "RKJBXX", backend, inputs["RKJBXX"].snapshot_id, AS_OF)

    def desensitize() -> None:
        driver.desensitize(home, "RKJBXX", backend, out / f"desens-{tag}")

    def draw() -> None:
        measure(ctx, frames, rates={})  # the same OpenDP measurement; not released

    return {"bounding": bounding, "quality": quality, "desensitize": desensitize, "draw": draw}


class TimedBackend:
    """A backend whose ``map`` calls are timed: the seconds the parts' jobs took from
    dispatch to the last result; the rest of a phase is the driver's own serial work."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.name = backend.name
        self.client = getattr(backend, "client", None)
        self.map_s = 0.0

    def map(self, fn: Callable[[Any], Any], items: Any) -> list[Any]:
        t0 = time.perf_counter()
        try:
            return list(self.inner.map(fn, items))
        finally:
            self.map_s += time.perf_counter() - t0


def _run(
    home: Any, inputs: dict[str, Any], backend: Any, tag: str, out: Path
) -> dict[str, dict[str, Any]]:
    """Every phase on ``backend``: seconds, seconds inside the backend's map, driver RSS at
    the start and peak MiB, worker peaks MiB."""
    timed = TimedBackend(backend)
    peaks = Peaks(backend)
    got: dict[str, dict[str, Any]] = {
        k: {}
        for k in (
            "seconds",
            "map_s",
            "driver_start_mib",
            "driver_peak_mib",
            "worker_peak_mib",
            "driver_cpu_s",
            "worker_cpu_s",
        )
    }
    try:
        for name, fn in _phases(home, inputs, timed, tag, out).items():
            peaks.reset()
            got["driver_start_mib"][name] = psutil.Process().memory_info().rss / 2**20
            timed.map_s = 0.0
            t0 = time.perf_counter()
            fn()
            got["seconds"][name] = time.perf_counter() - t0
            got["map_s"][name] = timed.map_s
            (
                got["driver_peak_mib"][name],
                got["worker_peak_mib"][name],
                got["driver_cpu_s"][name],
                got["worker_cpu_s"][name],
            ) = peaks.read()
    finally:
        shutil.rmtree(out / f"desens-{tag}", ignore_errors=True)
        shutil.rmtree(home.work / "products" / "build" / f"bench-{tag}", ignore_errors=True)
    return got


def _warm_workers(backend: Any) -> None:
    """Imports on the workers before timing (a long-lived cluster has them)."""

    def imports() -> None:
        import opendp.prelude  # noqa: F401

        import products.engine
        import products.language.builder  # noqa: F401
        import quality.engine  # noqa: F401
        import scaleout.jobs  # noqa: F401
        import transforms.apply  # noqa: F401

    imports()
    if backend.name == "dask":
        backend.client.run(imports)


def bench_scale(
    sizes: list[int],
    parts_list: list[int],
    workers: int,
    data_dir: Path | None,
    results: Path | None,
    command: str,
) -> list[dict[str, Any]]:
    from scaleout.backends import LocalBackend, open_backend

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        data = data_dir or Path(tmp)
        out = Path(tmp) / "out"
        print(
            f"\n2. Scale: local vs dask LocalCluster({workers} workers x 1 thread), "
            f"persons {sizes}, parts {parts_list} ({_machine()})",
            flush=True,
        )
        for persons in sizes:
            src = _source(data, persons)
            for parts in parts_list:
                home = _home(data / "homes" / f"p{persons}-n{parts}")
                inputs, ingest_s = _ingested(home, src, parts)
                rows = {c: inputs[c].rows for c in CODES}
                size = {c: _bytes(home, inputs[c]) for c in CODES}
                verify_s, verify_mib = _verify(home, inputs)
                # A fresh cluster per count, and dask before local: a worker's and this
                # process's RSS keep what earlier work allocated, which would otherwise be
                # counted in the next count's peaks.
                with open_backend(f"local:{workers}") as dask_backend:
                    for backend in (dask_backend, LocalBackend()):
                        _warm_workers(backend)
                        tag = f"{backend.name}-{persons}-{parts}"
                        got = _run(home, inputs, backend, tag, out)
                        run = {
                            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                            "command": command,
                            "machine": _machine(),
                            "persons": persons,
                            "rows": sum(rows.values()),
                            "rows_by_code": rows,
                            "bytes_by_code": size,
                            "parts": parts,
                            "backend": backend.name,
                            "workers": workers if backend.name == "dask" else 1,
                            "fresh_cluster": True,
                            "ingest_s": ingest_s,
                            "verify_s": verify_s,
                            "verify_driver_mib": verify_mib,
                            **got,
                            "load": os.getloadavg()[0],
                        }
                        runs.append(run)
                        if results is not None:
                            with results.open("a", encoding="utf-8") as f:
                                f.write(json.dumps(run, ensure_ascii=False) + "\n")
                        print_runs([run], header=len(runs) == 1)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--persons", type=int, nargs="+", default=[10_000, 40_000])
    parser.add_argument("--parts", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hmac", type=int, default=300_000)
    parser.add_argument("--skip-hmac", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep sources and homes")
    parser.add_argument("--results", type=Path, default=None, help="append runs as JSON lines")
    parser.add_argument("--report", type=Path, nargs="+", default=None, help="only report")
    parser.add_argument("--markdown", action="store_true", help="with --report: Markdown")
    parser.add_argument("--_ingest", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._ingest:
        _ingest_child(Path(args._ingest[0]), Path(args._ingest[1]), int(args._ingest[2]))
        return 0
    if args.report:
        runs = [
            json.loads(line)
            for path in args.report
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if args.markdown:
            print(markdown(runs))
            return 0
        print_runs(runs)
        fit_and_report(runs)
        return 0
    if not args.skip_hmac:
        bench_hmac(args.hmac)
    if not args.skip_scale:
        command = " ".join([Path(sys.executable).name, *sys.argv])
        runs = bench_scale(
            args.persons, args.parts, args.workers, args.data_dir, args.results, command
        )
        fit_and_report(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
