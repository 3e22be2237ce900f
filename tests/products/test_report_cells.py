"""Counts and sums aggregated before the noise (products.language.cells, privacy.dp.mechanisms):
the same exact cells and match rates as the per-unit bounded frames, the same noise scales and
accounting as OpenDP's polars measurement, and a refusal when the two accountings differ."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from products_testkit import frames
from scipy import stats

from catalogs.catalog import Catalog
from governance import audit
from pipelines.ingest import ingest_path
from privacy.dp import ledger, mechanisms
from privacy.dp.mechanisms import Measure, TableQuery, exact_cells, mechanism_measure
from products import engine, specs
from products.language import builder, cells
from products.language import compile as qc
from shuyu_core import snapshots
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home

REPORTS = (
    "si_enrolment_report",
    "medical_settlement_report",
    "market_entity_report",
    "si_monthly_contributions",
)
CODES = ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"]


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    return frames(persons=2000, seed=5)


def _ingest(home: Home, data: dict[str, pl.DataFrame], partitions: int | None) -> Home:
    src = home.root / "sources"
    src.mkdir(parents=True, exist_ok=True)
    for code in CODES:
        path = src / f"{code}.parquet"
        data[code].write_parquet(path)
        ingest_path(home, code, path, partitions=partitions)
    return home


def _ctx(home: Home, product: str, name: str) -> engine.BuildContext:
    spec = specs.get(product)
    inputs = {i.resource: snapshots.latest(home, i.resource) for i in spec.inputs}
    return engine.BuildContext(home, spec, Catalog.load(), inputs, name, engine.BuildOptions(), [])


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns, nulls_last=True)


def _reference(ctx: engine.BuildContext) -> dict[str, pl.DataFrame]:
    """What OpenDP's polars plan aggregated before: the sunk per-unit bounded frames."""
    bounded = builder.bounded_frames(ctx)
    return {
        t.name: exact_cells(
            bounded[t.name], list(t.by), [mechanism_measure(m) for m in t.measures]
        ).collect()
        for t in cells.aggregable_tables(ctx)  # a quantile table keeps its bounded frame
    }


@pytest.mark.parametrize("product", REPORTS)
def test_cells_and_rates_equal_the_bounded_frames(
    home: Home, data: dict[str, pl.DataFrame], product: str
) -> None:
    ctx = _ctx(_ingest(home, data, None), product, f"cells-{product}")
    exact = cells.compute(ctx)
    reference = _reference(ctx)
    assert set(exact.cells) == set(reference)
    for t in cells.aggregable_tables(ctx):
        frame, got = reference[t.name], exact.cells[t.name]
        assert frame.height > 0, t.name
        if qc.one_cell_per_unit(ctx.spec, t):
            assert _sorted(got).equals(_sorted(frame)), t.name
        else:
            # Which of a unit's cells the cap keeps (group_by(unit).head(k)) follows the
            # engine's row order, on either path; how many it keeps does not.
            counts = [m.name for m in t.measures if m.aggregate == "count"]
            assert got.select(counts).sum().equals(frame.select(counts).sum()), t.name
    # The rates are over the whole snapshots, never the spec's selection.
    if qc.query_of(ctx.spec).joins:
        assert exact.rates == pytest.approx(qc.match_rates(ctx), abs=1e-12) and exact.rates
    else:
        assert exact.rates == {}


def test_match_rate_counts_rows_without_a_match(home: Home, data: dict[str, pl.DataFrame]) -> None:
    """Drop a third of the registry and blank some persons' IDs: the match rate must see the
    base rows it loses, those of a null unit included."""
    thinner = dict(data)
    reg = data["RKJBXX"]
    thinner["RKJBXX"] = reg.head(reg.height * 2 // 3)
    si = data["SBCBJF"]
    blank = pl.int_range(pl.len()) < 300
    thinner["SBCBJF"] = si.with_columns(
        pl.when(blank).then(None).otherwise(pl.col("公民身份号码")).alias("公民身份号码")
    )
    ctx = _ctx(_ingest(home, thinner, None), "si_enrolment_report", "cells-thin")
    nulls = qc._base(ctx).filter(pl.col("SBCBJF.公民身份号码").is_null()).select(pl.len())
    assert nulls.collect().item() > 0  # base rows of a null unit reach the pass
    rates = qc.match_rates(ctx)
    assert cells.compute(ctx).rates == pytest.approx(rates, abs=1e-12)
    assert 0.5 < rates["RKJBXX"] < 0.9
    parted = _ctx(_ingest(home, thinner, 3), "si_enrolment_report", "cells-thin-parts")
    assert cells._co_partitions(parted) == 3
    assert cells.compute(parted).rates == pytest.approx(rates, abs=1e-12)  # added per part


def test_partitioned_inputs_give_the_same_cells(home: Home, data: dict[str, pl.DataFrame]) -> None:
    whole_ctx = _ctx(_ingest(home, data, None), "si_enrolment_report", "c-whole")
    assert cells._co_partitions(whole_ctx) == 1
    whole = cells.compute(whole_ctx)
    parted_ctx = _ctx(_ingest(home, data, 4), "si_enrolment_report", "c-parts")  # newer snapshots
    assert all(m.partitioning and m.partitioning.count == 4 for m in parted_ctx.inputs.values())
    assert cells._co_partitions(parted_ctx) == 4
    parted = cells.compute(parted_ctx)
    assert parted.rates == pytest.approx(whole.rates, abs=1e-12) and whole.rates
    for name, frame in whole.cells.items():
        assert _sorted(parted.cells[name].select(frame.columns)).equals(_sorted(frame)), name
    # The build runs the same pass part by part, with the engine's integrity check alongside.
    out = engine.build(home, "si_enrolment_report")
    assert out.manifest.budget is not None and out.manifest.mechanisms
    assert {i.snapshot_id for i in out.manifest.inputs} == {
        m.snapshot_id for m in parted_ctx.inputs.values()
    }


def _query(contributions: int, n_keys: int = 400) -> tuple[TableQuery, pl.DataFrame]:
    keys = pl.DataFrame({"k": [f"k{i:04d}" for i in range(n_keys)]})
    rng = np.random.default_rng(3)
    rows = rng.integers(0, n_keys, 20_000)
    frame = pl.LazyFrame(
        {"k": [f"k{i:04d}" for i in rows], "v": rng.uniform(-20, 400, rows.size).tolist()}
    )
    measures = [Measure("n", "count"), Measure("s", "sum", "v", (-5.5, 300.2))]
    q = TableQuery("t", frame, ["k"], keys, measures)
    truth = keys.join(exact_cells(frame, ["k"], measures).collect(), on="k", how="left").fill_null(
        0
    )
    return q, truth


@pytest.mark.parametrize("contributions", [1, 3])
def test_cells_noise_has_the_polars_plans_scales_and_rho(contributions: int) -> None:
    q, truth = _query(contributions)
    planned = mechanisms.plan_noise([q], rho=0.5, contributions=contributions, max_units=10**6)
    draw = mechanisms.release_tables([q], rho=0.5, contributions=contributions, max_units=10**6)[0]
    assert [n.to_dict() for n in draw.noise] == [n.to_dict() for n in planned["t"]]
    # σ from the ρ share: each of the 2 measures gets ρ/2 = (k·Δ)²/(2σ²).
    by = {n.column: n for n in draw.noise}
    k = contributions
    assert by["n"].scale == pytest.approx(k * math.sqrt(1 / (2 * 0.25)), rel=1e-6)
    assert by["s"].scale == pytest.approx(k * 301 * math.sqrt(1 / (2 * 0.25)), rel=1e-6)
    assert draw.frame["k"].equals(q.keys["k"])  # key-set order
    # The noise is discrete Gaussian at the stated scale: a two-sided χ² test on 400 cells
    # (fails by chance with probability 1e-4 per measure).
    for col in ("n", "s"):
        z = (draw.frame[col] - truth[col]).cast(pl.Float64).to_numpy() / by[col].scale
        stat = float(np.sum(z**2))
        lo, hi = stats.chi2.ppf(5e-5, z.size), stats.chi2.ppf(1 - 5e-5, z.size)
        assert lo <= stat <= hi, (col, stat, lo, hi)
        assert abs(float(np.mean(z))) < 4.5 / math.sqrt(z.size)


def test_understated_sensitivity_is_refused_and_the_charge_voided(
    home: Home, data: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noise calibrated for a smaller sensitivity than OpenDP's analysis is never drawn: the
    build stops before its draw, the charge is voided, and the audit records the error."""
    _ingest(home, data, None)
    real = mechanisms._sensitivity
    monkeypatch.setattr(mechanisms, "_sensitivity", lambda m, k, r, c: max(real(m, k, r, c) / 2, 1))
    spec = specs.get("si_enrolment_report")
    with pytest.raises(ShuyuError, match="nothing was drawn"):
        engine.build(home, spec)
    pending = engine.pending_dir(home, "x").parent
    assert not pending.exists() or not any(pending.iterdir())  # no draw kept
    entries = ledger.all_entries(home)
    assert entries and all(e.state == "void" for e in entries)
    last = [e for e in audit.entries(home) if e["action"] == "product.build"][-1]
    assert last["outcome"] == "error" and "nothing was drawn" in last["details"]["error"]


def test_quantile_tables_keep_the_polars_measurement() -> None:
    keys = pl.DataFrame({"k": ["a", "b"]})
    frame = pl.LazyFrame({"k": ["a"] * 300 + ["b"] * 300, "v": [float(i % 50) for i in range(600)]})
    q = TableQuery(
        "t",
        frame,
        ["k"],
        keys,
        [
            Measure(
                "med", "quantile", "v", quantile=0.5, candidates=tuple(float(c) for c in range(50))
            )
        ],
    )
    assert not mechanisms.aggregable(q.measures)
    with pytest.raises(ValueError, match="not aggregated"):
        exact_cells(frame, ["k"], q.measures)
    draw = mechanisms.release_tables([q], rho=1.0)[0]
    assert draw.frame["k"].to_list() == ["a", "b"]
    assert set(draw.frame["med"].to_list()) <= set(range(50))
