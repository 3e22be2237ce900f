"""Accuracy-first planning (``shuyu products plan``): before anything is charged, the expected
interval half-width of every measure under the spec's ρ, the ρ a target half-width needs, and
the budget left. Reads no data: the noise depends on the spec only (bounds, contributions,
weights, ρ), so an empty frame of the bounded schema is calibrated exactly as a build would.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from privacy.dp.mechanisms import (
    NoiseInfo,
    TableQuery,
    mechanism_measure,
    plan_noise,
    rho_for_half_width,
)
from products import specs
from products.language import compile as qc
from shuyu_core.errors import ValidationError


def _rho_for(
    spec: ProductSpec,
    queries: list[TableQuery],
    table: str,
    column: str,
    target: float,
    rho: float,
    now: NoiseInfo,
) -> float:
    """The smallest release ρ (to 1 %) whose calibrated half-width of ``column`` is within
    ``target``: a bisection over ρ, each step OpenDP's own calibration (for small scales the
    discrete Gaussian's ρ is not exactly ∝ 1/σ², so the closed form only starts the search)."""
    assert spec.privacy_unit is not None

    def width(r: float) -> float:
        noise = plan_noise(
            queries,
            r,
            spec.privacy_unit.contributions if spec.privacy_unit else 1,
            spec.privacy_unit.max_units if spec.privacy_unit else 1,
            spec.alpha,
        )
        n = next(n for n in noise[table] if n.column == column)
        return n.rank_error if n.rank_error is not None else n.accuracy

    if now.rank_error is not None:  # a quantile's rank error is ∝ its scale ∝ 1/sqrt(ρ)
        guess = rho * (now.rank_error / target) ** 2
    else:
        guess = rho_for_half_width(rho, now.accuracy, target, now.scale, spec.alpha)
    lo, hi = guess / 2, guess * 2
    while width(hi) > target:
        lo, hi = hi, hi * 4
    while width(lo) <= target and lo > 1e-12:
        hi, lo = lo, lo / 4
    while hi / lo > 1.01:
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if width(mid) <= target else (mid, hi)
    return hi


@dataclass(frozen=True)
class MeasurePlan:
    table: str
    measure: str
    aggregate: str
    scale: float
    half_width: float  # a quantile's: its rank error (± units around the true quantile)
    level: float  # the interval's exact level
    cells: int  # cells of the table (public key set)
    target: float | None = None
    rho_needed: float | None = None  # release ρ at which the target half-width is reached


def plan(spec: ProductSpec, targets: dict[str, float] | None = None) -> list[MeasurePlan]:
    """One row per table measure; ``targets`` maps a measure name to a wanted half-width."""
    if spec.budget is None or spec.privacy_unit is None:
        raise ValidationError(
            f"product {spec.id} draws no noise: nothing to plan",
            hint="plan statistical reports and indices",
        )
    # The refusals a build would meet before its charge, so a plan never promises a spec
    # that cannot be built (a typo, a key set its derivation cannot produce, a bad join).
    catalog = Catalog.load()
    specs.check_against_catalog(spec, catalog)
    if spec.query is not None:
        qc.check(spec, catalog)
    wanted = targets or {}
    known = {m.name for t in spec.tables for m in t.measures}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ValidationError(
            f"product {spec.id} has no measure(s) {', '.join(unknown)}",
            hint=f"targets name measures: {', '.join(sorted(known))}",
        )
    queries = []
    for t in spec.tables:
        schema = {b: pl.String for b in t.by} | {
            m.field: pl.Float64 for m in t.measures if m.field is not None
        }
        queries.append(
            TableQuery(
                name=t.name,
                frame=pl.LazyFrame(schema=schema),
                by=list(t.by),
                keys=specs.key_frame(spec, list(t.by)),
                measures=[mechanism_measure(m) for m in t.measures],
                weight=t.weight,
                # the language's bounding: one row per unit and cell (as its builder declares)
                rows_per_cell=1 if spec.query is not None else None,
            )
        )
    rho = spec.budget.zcdp_rho
    noise = plan_noise(
        queries, rho, spec.privacy_unit.contributions, spec.privacy_unit.max_units, spec.alpha
    )
    out: list[MeasurePlan] = []
    for t, q in zip(spec.tables, queries, strict=True):
        for n in noise[t.name]:
            target = wanted.get(n.column)
            out.append(
                MeasurePlan(
                    table=t.name,
                    measure=n.column,
                    aggregate=n.aggregate,
                    scale=n.scale,
                    half_width=n.rank_error if n.rank_error is not None else n.accuracy,
                    level=1 - n.alpha,
                    cells=q.keys.height,
                    target=target,
                    rho_needed=None
                    if target is None
                    else _rho_for(spec, queries, t.name, n.column, target, rho, n),
                )
            )
    return out
