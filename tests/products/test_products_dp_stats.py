"""Statistical properties of released noise over repeated releases on small data.

Tolerances come from the noise distributions, each check with a false-failure probability
of at most 1e-3: a chi-square bound on the noise variance, binomial bounds on CI misses.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from products_testkit import frames, ingest_frames
from scipy import stats

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from products import engine, specs
from products.language import builder as language
from products.language import index_eval
from products.language.index_builder import LanguageIndexBuilder, clamped, withheld_cells
from products.tables import finish_table, finish_tables
from shuyu_core import snapshots
from shuyu_core.home import Home

REPS = 40
FALSE_FAILURE = 1e-3


def _ctx(home: Home, spec: ProductSpec, name: str) -> engine.BuildContext:
    inputs = {i.resource: snapshots.latest(home, i.resource) for i in spec.inputs}
    return engine.BuildContext(home, spec, Catalog.load(), inputs, name, engine.BuildOptions(), [])


def _truth(spec: ProductSpec, frame: pl.LazyFrame, table: str) -> pl.DataFrame:
    """Exact values per public key: counts and integer-rounded clipped sums."""
    t = next(x for x in spec.tables if x.name == table)
    aggs: list[pl.Expr] = []
    for m in t.measures:
        if m.aggregate == "count":
            aggs.append(pl.len().alias(m.name))
        else:
            assert m.field is not None and m.bounds is not None
            aggs.append(pl.col(m.field).round(0).clip(m.bounds[0], m.bounds[1]).sum().alias(m.name))
    exact = frame.group_by(t.by).agg(aggs).collect()
    keys = specs.key_frame(spec, list(t.by))
    return keys.join(exact, on=list(t.by), how="left").fill_null(0)


def _chi2_ok(z: np.ndarray) -> tuple[bool, float, tuple[float, float]]:
    n = z.size
    stat = float(np.sum(z**2))
    lo = float(stats.chi2.ppf(FALSE_FAILURE / 2, n))
    hi = float(stats.chi2.ppf(1 - FALSE_FAILURE / 2, n))
    return lo <= stat <= hi, stat, (lo, hi)


def _max_misses(n: int, alpha: float) -> int:
    """Largest number of CI misses consistent with coverage ≥ 1 − alpha."""
    return int(stats.binom.ppf(1 - FALSE_FAILURE, n, alpha))


@pytest.mark.slow
def test_report_noise_matches_declared_scale_and_cis_cover(data_home: Home) -> None:
    spec = specs.get("si_enrolment_report")
    assert spec.budget is not None
    ctx = _ctx(data_home, spec, "stats-si")
    bounded = language.bounded_frames(ctx)
    truths = {t.name: _truth(spec, bounded[t.name], t.name) for t in spec.tables}

    errors: dict[str, list[np.ndarray]] = {}
    scales: dict[str, float] = {}
    misses: dict[str, int] = {}
    n_cells: dict[str, int] = {}
    avg_miss, avg_n = 0, 0
    for r in range(REPS):
        draw = language.measure(ctx, bounded)
        for t in spec.tables:
            noisy = draw.tables[t.name]
            noise = {n["column"]: n for n in draw.meta["noise"][t.name]}
            truth = truths[t.name]
            for m in t.measures:
                key = f"{t.name}.{m.name}"
                err = (noisy[m.name].cast(pl.Float64) - truth[m.name].cast(pl.Float64)).to_numpy()
                errors.setdefault(key, []).append(err)
                scales[key] = float(noise[m.name]["scale"])
                miss = int(np.sum(np.abs(err) > float(noise[m.name]["accuracy"])))
                misses[key] = misses.get(key, 0) + miss
                n_cells[key] = n_cells.get(key, 0) + err.size
            for d in t.derived:
                res = finish_table(spec, t, noisy, draw.meta, f"rep-{r}")
                true_ratio = (truth[d.numerator] / truth[d.denominator]).to_numpy()
                for c, tr in zip(
                    (c for c in res.accuracy if c.measure == d.name), true_ratio, strict=True
                ):
                    if c.suppressed or c.ci_half_width is None or c.estimate is None:
                        continue
                    avg_n += 1
                    avg_miss += int(abs(c.estimate - tr) > c.ci_half_width)

    # The declared budget fixes σ: table ρ = 0.25 each; k measures share it equally.
    rho_t = spec.budget.zcdp_rho / 2
    assert scales["insured_by_district_age_sex.insured"] == pytest.approx(
        math.sqrt(1 / (2 * rho_t)), rel=1e-3
    )
    assert scales["contribution_base_by_district.insured"] == pytest.approx(
        math.sqrt(2 / (2 * rho_t)), rel=1e-3
    )
    assert scales["contribution_base_by_district.base_sum"] == pytest.approx(
        30000 * math.sqrt(2 / (2 * rho_t)), rel=1e-3
    )
    for key, errs in errors.items():
        z = np.concatenate(errs) / scales[key]
        ok, stat, bounds = _chi2_ok(z)
        assert ok, f"{key}: Σz²={stat:.1f} outside {bounds} over {z.size} draws"
        assert abs(float(np.mean(z))) <= stats.norm.ppf(1 - FALSE_FAILURE / 2) / math.sqrt(z.size)
        assert misses[key] <= _max_misses(n_cells[key], spec.alpha), key
    assert avg_n >= REPS * 4
    assert avg_miss <= _max_misses(avg_n, spec.alpha)


def test_index_bands_cover_the_true_scores(home: Home) -> None:
    """Through the real mechanism (OpenDP draws): released scores' bands hold the true score
    (the same spec on the exact tables) at least at the stated level."""
    ingest_frames(home, frames(100000), ["SCZTDJ"])  # about 10 000 enterprises
    spec = specs.get("business_vitality_index")
    ctx = _ctx(home, spec, "stats-index")
    builder = LanguageIndexBuilder()
    first = builder.draw(ctx)
    # The truth: the exact values over the same bounded cells the mechanism measured.
    exact = {
        t.name: _truth(spec, pl.scan_parquet(ctx.workdir / f"{t.name}.parquet"), t.name)
        for t in spec.tables
    }
    noise = {t: {n["column"]: n for n in rows} for t, rows in first.meta["noise"].items()}
    truth = index_eval.compute(spec, exact, noise).score

    misses = n = 0
    for r in range(12):
        draw = first if r == 0 else builder.draw(ctx)
        results = finish_tables(ctx, clamped(spec, draw))
        v = index_eval.compute(spec, draw.tables, noise, withheld_cells(spec, results))
        shown = ~v.withheld
        assert ((v.lower <= v.score) & (v.score <= v.upper))[shown].all()
        assert ((v.score >= 0) & (v.score <= 100))[shown].all()
        n += int(shown.sum())
        misses += int((shown & ((truth < v.lower - 1e-9) | (truth > v.upper + 1e-9))).sum())
    assert n >= 12 * 10
    assert misses <= _max_misses(n, spec.alpha)


def test_interval_of_an_undefined_cell_is_nan_and_quiet() -> None:
    import warnings

    from privacy.dp.accuracy import interval

    rng = np.random.default_rng(3)
    samples = np.column_stack([rng.normal(10.0, 2.0, 4000), np.full(4000, np.nan)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = interval(samples, alpha=0.05)
    # The defined column gets the normal 95 % interval (±1.96 σ); 0.25 is about three standard
    # errors of a 2.5 % sample quantile at n = 4000 (σ·sqrt(p(1-p)/n)/φ(z) ≈ 0.085).
    assert lo[0] == pytest.approx(10.0 - 1.96 * 2.0, abs=0.25)
    assert hi[0] == pytest.approx(10.0 + 1.96 * 2.0, abs=0.25)
    assert np.isnan(lo[1]) and np.isnan(hi[1])
