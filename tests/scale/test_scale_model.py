"""The scale benchmark's cost model (benchmarks/scale_model.py): the fit recovers known terms,
the residuals it reports are the real misfit, and the extrapolation respects the worker
memory budget."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scale_model


def _run(
    rows: int, parts: int, backend: str, seconds: float, peak: float, serial: float | None = None
) -> dict[str, Any]:
    workers = 2 if backend == "dask" else 1
    share = seconds / 4
    extra = (
        {}
        if serial is None
        else {"map_s": dict.fromkeys(scale_model.PHASES, (seconds - serial) / 4)}
    )
    return {
        **extra,
        "persons": rows // 10,
        "ingest_s": 3e-6 * rows,
        "rows": rows,
        "parts": parts,
        "backend": backend,
        "workers": workers,
        "seconds": dict.fromkeys(scale_model.PHASES, share),
        "verify_s": rows * 50e-9,
        "bytes_by_code": {"RKJBXX": rows, "SBCBJF": 9 * rows},
        "driver_peak_mib": dict.fromkeys(scale_model.PHASES, 500.0),
        "worker_peak_mib": {p: [peak] * workers if workers > 1 else [] for p in scale_model.PHASES},
    }


def _synthetic(a: float, b: float, c: float, d: float, split: bool = False) -> list[dict[str, Any]]:
    """Runs timed exactly by the model; with ``split``, a second of the fixed cost and the
    ``d`` term recorded as the driver's (outside the backend's map)."""
    runs = []
    for rows in (1_000_000, 10_000_000, 100_000_000):
        for parts in (2, 4, 8, 16):
            for backend, w in (("local", 1), ("dask", 2)):
                t = a + (b * parts + c * rows) / min(w, parts) + d * rows
                serial = 1.0 + d * rows if split else None
                runs.append(_run(rows, parts, backend, t, 200 + 80e-6 * rows / parts, serial))
    return runs


def test_fit_recovers_the_terms_of_a_known_cost() -> None:
    runs = _synthetic(1.5, 0.2, 1e-6, 0.3e-6)
    m = scale_model.build_model(runs)
    assert m.a == pytest.approx(1.5, rel=1e-6)
    assert m.b == pytest.approx(0.2, rel=1e-6)
    assert m.c == pytest.approx(1e-6, rel=1e-6)
    assert m.d == pytest.approx(0.3e-6, rel=1e-6)
    assert m.v == pytest.approx(50e-9)
    assert m.bpr == pytest.approx(22.0)  # 2 x (1 + 9) + 2 x 1 bytes per row
    assert m.m0 == pytest.approx(200, rel=1e-6) and m.m1 == pytest.approx(80e-6, rel=1e-6)
    assert m.ingest == pytest.approx(3e-6)
    assert m.plan(3.5e9, 4, 2)["ingest"] == pytest.approx(3e-6 * 3.5e9 / 3600)


def test_split_fit_recovers_the_driver_term() -> None:
    m = scale_model.build_model(_synthetic(1.5, 0.2, 1e-6, 0.3e-6, split=True))
    assert (m.a, m.b) == (pytest.approx(1.5, rel=1e-6), pytest.approx(0.2, rel=1e-6))
    assert (m.c, m.d) == (pytest.approx(1e-6, rel=1e-6), pytest.approx(0.3e-6, rel=1e-6))
    runs = _synthetic(1.5, 0.2, 1e-6, 0.3e-6, split=True)
    assert scale_model.driver_serial(runs[0]) == pytest.approx(1.0 + 0.3e-6 * 1_000_000)


def test_reported_residuals_show_a_misfit(capsys: pytest.CaptureFixture[str]) -> None:
    runs = _synthetic(1.5, 0.2, 1e-6, 0.3e-6)
    runs[0]["seconds"] = {p: 10 * s for p, s in runs[0]["seconds"].items()}  # one slow run
    scale_model.fit_and_report(runs)
    out = capsys.readouterr().out
    worst = float(out.split("worst ")[1].split("%")[0])
    assert worst > 50


def test_extrapolation_keeps_parts_within_the_worker_memory_budget() -> None:
    m = scale_model.build_model(_synthetic(1.5, 0.2, 1e-6, 0.3e-6))
    # the modelled cap (35.9 M rows) is beyond the largest part measured within 3 GiB (25 M:
    # the 50 M-row parts peaked at 4.2 GiB), so the measured one binds
    assert (scale_model.WORKER_BUDGET_MIB - 200) / 80e-6 > 25_000_000
    cap = m.rows_per_part_cap()
    assert cap == m.measured_part_rows == 25_000_000
    steep = dataclasses.replace(m, m1=160e-6)
    assert steep.rows_per_part_cap() == pytest.approx((3072 - 200) / 160e-6, rel=1e-6)
    assert steep.plan(3.5e9, 1, 2)["parts"] == math.ceil(3.5e9 / ((3072 - 200) / 160e-6))
    for machines in scale_model.MACHINES:
        e = m.plan(3.5e9, machines, 2)
        assert e["rows_per_part"] <= cap
        assert e["parts"] >= scale_model.PARTS_PER_WORKER * e["workers_total"]
        w = min(e["workers_total"], e["parts"])
        assert m.a + m.b * e["parts"] / w == pytest.approx(e["fixed"] * 3600)
    one, many = m.plan(3.5e9, 1, 2), m.plan(3.5e9, 64, 2)
    # the workers' term shrinks with machines, the driver's serial terms do not
    assert many["workers"] == pytest.approx(one["workers"] / 64)
    assert many["driver"] == one["driver"] and many["sm3"] == one["sm3"]


def test_no_memory_model_without_two_part_sizes() -> None:
    runs = [r for r in _synthetic(1.0, 0.1, 1e-6, 0.0) if r["rows"] / r["parts"] == 500_000]
    assert scale_model.memory_fit(runs) is None
    m = scale_model.Model(1.0, 0.1, 1e-6, 0.0, 0.0, 1.0)
    assert math.isinf(m.rows_per_part_cap())
    assert m.plan(3.5e9, 4, 2)["parts"] == 32
    # without a memory slope, parts stay no larger than the largest one measured
    m = scale_model.Model(1.0, 0.1, 1e-6, 0.0, 0.0, 1.0, 2000.0, 0.0, 25e6)
    assert m.plan(3.5e9, 4, 2)["parts"] == 140


def test_cpu_per_row_drives_the_workers_term_on_dedicated_cores() -> None:
    runs = _synthetic(1.5, 0.2, 1e-6, 0.3e-6, split=True)
    for r in runs:  # 2 µs of CPU per row and 30 ms per part, whichever backend, 0.5 s per run
        cpu = 0.5 + 0.03 * r["parts"] + 2e-6 * r["rows"]
        n = r["workers"] if r["backend"] == "dask" else 0
        r["driver_cpu_s"] = dict.fromkeys(scale_model.PHASES, 0.0)
        r["worker_cpu_s"] = {p: [] for p in scale_model.PHASES}
        if n:
            r["worker_cpu_s"]["bounding"] = [cpu / n] * n
        else:
            r["driver_cpu_s"]["bounding"] = cpu
    m = scale_model.build_model(runs)
    assert m.c_cpu == pytest.approx(2e-6, rel=1e-6)
    assert m.f_cpu == pytest.approx(0.03, rel=1e-6)
    e = m.plan(3.5e9, 16, 2)
    assert e["workers"] == pytest.approx(2e-6 * 3.5e9 / 32 / 3600)
    assert e["fixed"] == pytest.approx((m.a + 0.03 * e["parts"] / 32) / 3600)
