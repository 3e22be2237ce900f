"""The cost model of a partitioned run, fitted to ``bench_scale.py`` runs and extrapolated.

One run = one resource pair (RKJBXX + SBCBJF, R rows) ingested with P parts, the per-partition
phases (bounding, quality, desensitize) and the driver's combination (``draw``) on a backend
with W workers (W = 1 for ``local``). Its wall seconds are modelled as

    t = a + (b·P + c·R) / min(W, P) + d·R

- ``a`` fixed cost per run (task submission, plan compilation, the driver's sampled PII scan);
- ``b`` per-partition overhead (one task, one file open, one plan per part and phase), paid
  on the workers, so spread over them like the rows;
- ``c`` per-row cost per worker: the work of the parts, spread over min(W, P) workers;
- ``d`` per-row cost of the driver's serial steps (quantile bounds over the whole snapshot,
  the union of the bounded parts for the draw) — this one does not shrink with W.

fitted by non-negative least squares (no term may be a saving): (a_w, b, c) to the time
inside the backend's ``map``, (a_d, d) to the rest, a = a_w + a_d. On a shared machine whose
cores are busy with other work, W workers do not get W cores, so ``c`` is what this machine
gave, not a per-core cost: the extrapolation uses the CPU seconds instead,
``cpu = e + f·P + c_cpu·R`` over all processes and threads, as the work that N dedicated
machines share: ``(f·P + c_cpu·R) / min(cores, P)``. The driver's SM3 verification of the
snapshots is measured separately per run (``verify_s``) and added as ``v·R``: it is one
sequential pass on the driver, whatever the cluster.

Worker memory is modelled as ``peak MiB = m0 + m1 · R/P`` (rows per part), fitted over the
dask runs' largest worker peak; the extrapolation picks the partition count so that the
modelled peak stays at 3 GiB (4 GiB with a quarter as headroom) and each worker has at
least ``PARTS_PER_WORKER`` parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

TARGET_ROWS = 3.5e9
MACHINES = (1, 4, 16, 64)
PARTS_PER_WORKER = 4
WORKER_BUDGET_MIB = 3 * 1024  # 4 GiB per worker, a quarter kept as headroom
STORAGE_GBPS = 1.0  # assumed aggregate read bandwidth of the shared storage, GB/s
PHASES = ("bounding", "quality", "desensitize", "draw")


def total(run: dict[str, Any]) -> float:
    return float(sum(run["seconds"][p] for p in PHASES))


def worker_peak(run: dict[str, Any]) -> float:
    peaks = [p for phase in PHASES for p in run["worker_peak_mib"].get(phase, [])]
    return max(peaks) if peaks else max(run["driver_peak_mib"].values())


def print_runs(runs: list[dict[str, Any]], header: bool = True) -> None:
    """One line per run. ``driver s``: outside the backend's map; ``cores``: CPU seconds of
    all processes / wall seconds; ``driver MiB``: peak (+ added over the RSS at the phase's
    start, i.e. what the phase itself allocated)."""
    if header:
        print(
            f"   {'rows':>12} {'parts':>5} {'backend':<7}{'verify':>7}{'bound.':>7}{'quality':>8}"
            f"{'desens.':>8}{'draw':>6}{'total s':>8}{'driver s':>9}{'M rows/s':>9}"
            f"{'cores':>6}{'driver MiB':>13}  worker peak MiB  load",
            flush=True,
        )
    for r in runs:
        s = r["seconds"]
        t = total(r)
        drv = max(r["driver_peak_mib"].values())
        added = (
            max(r["driver_peak_mib"][p] - r["driver_start_mib"][p] for p in PHASES)
            if "driver_start_mib" in r
            else None
        )
        drv_s = f"{drv:.0f}" + (f" (+{added:.0f})" if added is not None else "")
        serial = f"{driver_serial(r):.2f}" if "map_s" in r else "-"
        cores = f"{cpu_s(r) / t:.2f}" if "driver_cpu_s" in r else "-"
        per_worker = [
            max(r["worker_peak_mib"][p][i] for p in PHASES if r["worker_peak_mib"].get(p))
            for i in range(len(r["worker_peak_mib"].get("bounding", [])))
        ]
        workers = ", ".join(f"{p:.0f}" for p in per_worker) or "-"
        print(
            f"   {r['rows']:>12,} {r['parts']:>5} {r['backend']:<7}{r['verify_s']:>7.2f}"
            f"{s['bounding']:>7.2f}{s['quality']:>8.2f}{s['desensitize']:>8.2f}{s['draw']:>6.2f}"
            f"{t:>8.2f}{serial:>9}{r['rows'] / t / 1e6:>9.2f}{cores:>6}{drv_s:>13}"
            f"  {workers:<15} {r['load']:.1f}",
            flush=True,
        )


def _design(runs: list[dict[str, Any]]) -> np.ndarray:
    return np.array(
        [
            [1.0, r["parts"] / (w := min(r["workers"], r["parts"])), r["rows"] / w, r["rows"]]
            for r in runs
        ]
    )


def driver_serial(run: dict[str, Any]) -> float:
    """Seconds of the run outside the backend's ``map`` (the driver's own work)."""
    return total(run) - sum(run["map_s"][p] for p in PHASES)


def fit(runs: list[dict[str, Any]]) -> np.ndarray:
    """(a, b, c, d) of the model, non-negative least squares over ``runs``, each run weighted
    by 1 / its seconds (relative errors: a 7 s run counts as much as a 70 s one).

    Runs that record the time inside the backend's ``map`` (``map_s``) are split: (a_w, b, c)
    fitted to the time in ``map``, (a_d, d) to the rest, a = a_w + a_d; older runs without it
    are fitted jointly."""
    from scipy.optimize import nnls

    weight = np.array([1.0 / total(r) for r in runs])[:, None]
    x = _design(runs) * weight
    if runs and all("map_s" in r for r in runs):
        work = np.array([total(r) - driver_serial(r) for r in runs]) * weight[:, 0]
        serial = np.array([driver_serial(r) for r in runs]) * weight[:, 0]
        (aw, b, c), _ = nnls(x[:, :3], work)
        (ad, d), _ = nnls(x[:, [0, 3]], serial)
        return np.array([aw + ad, b, c, d])
    coef, _ = nnls(x, np.array([total(r) for r in runs]) * weight[:, 0])
    return np.asarray(coef)


def _memory_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dask runs whose workers were fresh (``fresh_cluster``), if any: a long-lived
    worker's RSS keeps what earlier runs allocated; else every dask run."""
    dask = [r for r in runs if r["backend"] == "dask"]
    fresh = [r for r in dask if r.get("fresh_cluster")]
    return fresh or dask


def memory_fit(runs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(m0, m1): worker peak MiB = m0 + m1 · rows per part, over the dask runs."""
    from scipy.optimize import nnls

    dask = _memory_runs(runs)
    if len({r["rows"] / r["parts"] for r in dask}) < 2:
        return None
    x = np.array([[1.0, r["rows"] / r["parts"]] for r in dask])
    coef, _ = nnls(x, np.array([worker_peak(r) for r in dask]))
    return float(coef[0]), float(coef[1])


@dataclass(frozen=True)
class Model:
    """The fitted model: seconds ``a + (b·P + c·R)/min(W, P) + d·R``, the driver's SM3 pass
    ``v·R``, storage bytes read per row ``bpr``, worker memory ``m0 + m1·R/P`` MiB."""

    a: float
    b: float
    c: float
    d: float
    v: float
    bpr: float
    m0: float | None = None
    m1: float | None = None
    # the largest part measured on a worker within the budget: parts are not extrapolated
    # beyond what was run
    measured_part_rows: float = math.inf
    # CPU seconds per row of the parts' work (all processes, all threads): the per-row cost
    # per core on dedicated cores, which wall time on a shared machine does not show
    c_cpu: float | None = None
    f_cpu: float = 0.0  # CPU seconds per part
    ingest: float | None = None  # seconds per row of the single-process ingest (not in t)
    cores_per_machine: int = 2

    def seconds(self, rows: float, parts: int, workers: int) -> float:
        w = min(workers, parts)
        return self.a + (self.b * parts + self.c * rows) / w + self.d * rows

    def rows_per_part_cap(self) -> float:
        """Most rows per part keeping a worker's modelled peak within the budget, and no
        larger than the largest part measured within it."""
        if self.m0 is None or self.m1 is None or self.m1 <= 0:
            return self.measured_part_rows
        return min(max((WORKER_BUDGET_MIB - self.m0) / self.m1, 1.0), self.measured_part_rows)

    def plan(self, rows: float, machines: int, workers_per_machine: int) -> dict[str, float]:
        """Workers, parts and the modelled hours of each term for ``rows`` on ``machines``."""
        w = machines * workers_per_machine
        cap = self.rows_per_part_cap()
        p = max(PARTS_PER_WORKER * w, math.ceil(rows / cap) if math.isfinite(cap) else 1)
        if self.c_cpu is not None:  # every core of the cluster busy with the parts
            cores = min(machines * self.cores_per_machine, p)
            per_part, work = self.f_cpu * p / cores, self.c_cpu * rows / cores
        else:
            per_part, work = self.b * p / min(w, p), self.c * rows / min(w, p)
        terms = {
            "fixed": self.a + per_part,
            "workers": work,
            "driver": self.d * rows,
            "sm3": self.v * rows,
        }
        return {
            "machines": machines,
            "workers_total": w,
            "parts": p,
            "rows_per_part": rows / p,
            **{k: t / 3600 for k, t in terms.items()},
            "total": sum(terms.values()) / 3600,
            "read_floor": rows * self.bpr / (STORAGE_GBPS * 1e9) / 3600,
            "ingest": rows * self.ingest / 3600 if self.ingest is not None else math.nan,
        }


def build_model(runs: list[dict[str, Any]]) -> Model:
    """Fit every term of :class:`Model` to ``runs``."""
    a, b, c, d = (float(x) for x in fit(runs))
    v = float(np.median([r["verify_s"] / r["rows"] for r in runs]))
    # bytes read from storage per row of a run: SM3 and bounding read both snapshots once
    # each, quality and desensitization read RKJBXX once each
    bpr = float(
        np.median(
            [
                (2 * sum(r["bytes_by_code"].values()) + 2 * r["bytes_by_code"]["RKJBXX"])
                / r["rows"]
                for r in runs
            ]
        )
    )
    mem = memory_fit(runs)
    within = [
        r["rows"] / r["parts"] for r in _memory_runs(runs) if worker_peak(r) <= WORKER_BUDGET_MIB
    ]
    m0, m1 = mem if mem is not None else (None, None)
    cpu = cpu_fit(runs)
    return Model(
        a,
        b,
        c,
        d,
        v,
        bpr,
        m0,
        m1,
        max(within, default=math.inf),
        cpu[1] if cpu else None,
        cpu[0] if cpu else 0.0,
        ingest_rate(runs),
    )


def ingest_rate(runs: list[dict[str, Any]]) -> float | None:
    """Median seconds per row of the ingests the runs timed (one process; not distributed)."""
    rates = {(r["persons"], r["parts"]): r["ingest_s"] / r["rows"] for r in runs if r["ingest_s"]}
    return float(np.median(list(rates.values()))) if rates else None


def cpu_s(run: dict[str, Any]) -> float:
    """CPU seconds of a run's phases, driver and workers together."""
    return float(sum(run["driver_cpu_s"][p] + sum(run["worker_cpu_s"][p]) for p in PHASES))


def cpu_fit(runs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(f, c_cpu): CPU seconds per part and per row, ``cpu = e + f·P + c_cpu·R`` (NNLS,
    weighted by 1 / cpu) over the runs that record CPU."""
    from scipy.optimize import nnls

    with_cpu = [r for r in runs if "driver_cpu_s" in r]
    if len({r["rows"] for r in with_cpu}) < 2:
        return None
    x = np.array([[1.0, r["parts"], r["rows"]] for r in with_cpu])
    y = np.array([cpu_s(r) for r in with_cpu])
    coef, _ = nnls(x / y[:, None], np.ones_like(y))  # relative errors, as in :func:`fit`
    return float(coef[1]), float(coef[2])


def fit_and_report(runs: list[dict[str, Any]], workers_per_machine: int = 2) -> Model | None:
    if len({r["rows"] for r in runs}) < 2 or len(runs) < 5:
        print("   cost model: needs 2 or more sizes and 5 or more runs")
        return None
    m = build_model(runs)
    print(
        f"\n3. Cost model, NNLS weighted by 1 / seconds over {len(runs)} runs (local: W = 1):\n"
        f"   t = {m.a:.2f} s + ({m.b * 1e3:.1f} ms x P + {m.c * 1e9:.1f} ns x R) / min(W, P)"
        f" + {m.d * 1e9:.1f} ns x R"
    )
    print(
        f"   {'rows':>12} {'parts':>5} {'backend':<7}{'measured s':>11}{'model s':>9}{'resid.':>8}"
    )
    rel = []
    for r in runs:
        t = total(r)
        p = m.seconds(r["rows"], r["parts"], r["workers"])
        rel.append(abs(p - t) / t)
        print(
            f"   {r['rows']:>12,} {r['parts']:>5} {r['backend']:<7}{t:>11.2f}{p:>9.2f}"
            f"{(p - t) / t:>+8.0%}"
        )
    print(f"   |relative residual|: median {np.median(rel):.0%}, worst {np.max(rel):.0%}")
    if m.c_cpu is not None:
        print(
            f"   CPU, all processes and threads: cpu = e + {m.f_cpu * 1e3:.0f} ms x P + "
            f"{m.c_cpu * 1e9:.0f} ns x R "
            "(NNLS over the runs recording CPU)"
        )
    print(
        f"   driver SM3 verification, measured: {m.v * 1e9:.1f} ns x R (median); "
        f"{m.bpr:.1f} bytes read from storage per row and run"
    )
    if m.m0 is None or m.m1 is None:
        print("   memory model: needs dask runs with 2 or more rows-per-part values")
    else:
        print(
            f"   worker peak = {m.m0:.0f} MiB + {m.m1 * 1e6:.1f} MiB per M rows per part "
            f"-> parts of at most {m.rows_per_part_cap() / 1e6:.1f} M rows (within "
            f"{WORKER_BUDGET_MIB} MiB, and no larger than the largest part measured, "
            f"{m.measured_part_rows / 1e6:.1f} M)"
        )
    print(
        f"\n   Extrapolation to {TARGET_ROWS / 1e9:.1f} billion rows, machines of "
        f"{workers_per_machine} workers on {m.cores_per_machine} dedicated cores (workers term: "
        + (
            f"({m.f_cpu * 1e3:.0f} ms CPU per part x P + {m.c_cpu * 1e9:.0f} ns CPU per row x R) "
            "/ min(cores, P)"
            if m.c_cpu is not None
            else "the wall fit's c / min(W, P)"
        )
        + "), "
        f"P = max({PARTS_PER_WORKER} x W, R / rows-per-part cap); storage read at "
        f"{STORAGE_GBPS:.0f} GB/s aggregate (assumed):"
    )
    print(
        f"   {'machines':>8}{'W':>5}{'P':>7}{'M rows/part':>12}{'fixed+parts h':>14}"
        f"{'workers h':>10}{'driver h':>9}{'SM3 h':>7}{'total h':>8}{'read floor h':>13}"
        f"{'ingest h':>9}"
    )
    for n in MACHINES:
        e = m.plan(TARGET_ROWS, n, workers_per_machine)
        print(
            f"   {n:>8}{e['workers_total']:>5.0f}{e['parts']:>7.0f}"
            f"{e['rows_per_part'] / 1e6:>12.1f}"
            f"{e['fixed']:>14.2f}{e['workers']:>10.2f}{e['driver']:>9.2f}{e['sm3']:>7.2f}"
            f"{e['total']:>8.2f}{e['read_floor']:>13.2f}{e['ingest']:>9.2f}"
        )
    return m


def markdown(runs: list[dict[str, Any]], workers_per_machine: int = 2) -> str:
    """The runs, the fit's residuals and the extrapolation as Markdown tables (for the docs)."""
    out = [
        "| rows | parts | backend | verify s | bounding s | quality s | desens. s | draw s "
        "| total s | driver s | M rows/s | cores | worker peak MiB | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    m = build_model(runs) if len({r["rows"] for r in runs}) >= 2 else None
    for r in runs:
        s = r["seconds"]
        t = total(r)
        cores = f"{cpu_s(r) / t:.2f}" if "driver_cpu_s" in r else "–"
        serial = f"{driver_serial(r):.2f}" if "map_s" in r else "–"
        peaks = ", ".join(
            f"{max(r['worker_peak_mib'][p][i] for p in PHASES):.0f}"
            for i in range(len(r["worker_peak_mib"]["bounding"]))
        )
        out.append(
            f"| {r['rows']:,} | {r['parts']} | {r['backend']} | {r['verify_s']:.2f} "
            f"| {s['bounding']:.2f} | {s['quality']:.2f} | {s['desensitize']:.2f} "
            f"| {s['draw']:.2f} | {t:.2f} | {serial} | {r['rows'] / t / 1e6:.2f} | {cores} "
            f"| {peaks or '–'} | {r['load']:.1f} |"
        )
    if m is not None:
        out += [
            "",
            "| rows | parts | backend | measured s | model s | residual |",
            "|---:|---:|---|---:|---:|---:|",
        ]
        for r in runs:
            t = total(r)
            p = m.seconds(r["rows"], r["parts"], r["workers"])
            out.append(
                f"| {r['rows']:,} | {r['parts']} | {r['backend']} | {t:.2f} | {p:.2f} "
                f"| {(p - t) / t:+.0%} |"
            )
        out += [
            "",
            "| machines | workers | parts | M rows/part | fixed + parts min | workers min "
            "| driver min | SM3 min | total min | storage read floor min "
            "| ingest min (1 process) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n in MACHINES:
            e = m.plan(TARGET_ROWS, n, workers_per_machine)
            mins = [e[k] * 60 for k in ("fixed", "workers", "driver", "sm3", "total")]
            out.append(
                f"| {n} | {e['workers_total']:.0f} | {e['parts']:.0f} "
                f"| {e['rows_per_part'] / 1e6:.1f} | "
                + " | ".join(f"{x:.1f}" for x in mins)
                + f" | {e['read_floor'] * 60:.1f} | {e['ingest'] * 60:.0f} |"
            )
    return "\n".join(out)
