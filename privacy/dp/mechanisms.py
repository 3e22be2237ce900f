"""DP measurements with OpenDP's polars integration (``opendp.extras.polars``).

One release measures several tables over per-unit bounded frames. Each table is one OpenDP
measurement: a group-by over a *public* key set (a left join of the keys with the grouped
data, OpenDP's ``with_keys``), with noisy counts (``dp.len``) and clipped noisy sums
(``.dp.sum(bounds)``). Under zCDP the noise is (discrete) Gaussian.

Every table gets its own ``dp.Context.compositor`` holding its share ρ·wᵢ/Σw of the
release's ρ; the compositor (OpenDP's sequential composition) refuses any measurement that
would exceed it, on top of the persistent ledger that refuses a release beyond the budget.
The noise scale is calibrated directly (ρ of a Gaussian measurement is proportional to 1/σ²)
instead of OpenDP's generic binary search, which costs about a second per table; the privacy
map of the final measurement is checked against the table's ρ before anything is drawn.

Counts and sums are aggregated before the noise (``exact_cells``, polars' streaming engine,
the same rounding, null filling and clipping as OpenDP's plan): OpenDP's polars plugin would
otherwise collect the whole per-unit frame (10 M rows at 100 M input rows) in memory. The
table's measurement is still calibrated by OpenDP over the plan's schema; its noise is drawn
by OpenDP's vector Gaussian (``make_gaussian``, the discrete Gaussian OpenDP's polars plan
adds to integer aggregates) with each measure's scale, and the sum of those measurements'
privacy maps at the bounded sensitivity must equal the plan's map (else nothing is drawn).
Quantiles need the per-unit rows and keep OpenDP's polars measurement.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

import polars as pl

from privacy.dp import accuracy
from shuyu_core.errors import ShuyuError

Aggregate = Literal["count", "sum", "quantile"]

_opendp_ready = False


def _dp() -> Any:
    """Import OpenDP lazily (it costs seconds) and enable its contrib features once."""
    global _opendp_ready
    import opendp.prelude as dp

    if not _opendp_ready:
        dp.enable_features("contrib")
        _opendp_ready = True
    return dp


@dataclass(frozen=True)
class Measure:
    name: str
    aggregate: Aggregate
    field: str | None = None
    bounds: tuple[float, float] | None = None
    quantile: float | None = None
    candidates: tuple[float, ...] | None = None


def mechanism_measure(m: Any) -> Measure:
    """The mechanism's view of a spec measure (``catalogs.product_models.MeasureSpec``)."""
    return Measure(
        m.name,
        m.aggregate,
        m.field,
        m.bounds,
        m.quantile,
        tuple(m.candidates) if m.candidates else None,
    )


@dataclass(frozen=True)
class TableQuery:
    """One noisy table over ``frame`` (at most ``contributions`` rows per privacy unit).

    ``cells``: the table's exact aggregates (``exact_cells`` of ``frame``) when the caller
    computed them already, in one pass with other tables; ``frame`` then only gives the schema.
    """

    name: str
    frame: pl.LazyFrame
    by: list[str]
    keys: pl.DataFrame
    measures: list[Measure]
    weight: float = 1.0
    cells: pl.DataFrame | None = None
    # Rows a unit has in one cell, when the bounding guarantees it (the product language: one
    # row per unit and cell). Declared to OpenDP with the unit's ``contributions`` as the
    # number of cells, it charges a unit's k rows as k cells changed by one row each instead
    # of k rows in each of k cells: at k = 4 over many cells a count costs ρ 2/s² instead of
    # 8/s² and a quantile 2/s² instead of 32/s² (OpenDP's maps), so the noise is 2–4× smaller
    # for the same ρ. None: only the total per unit is declared.
    rows_per_cell: int | None = None


@dataclass(frozen=True)
class NoiseInfo:
    """What the mechanism added to one measure column (public: it depends on the spec only).

    A quantile has no interval on its value: ``accuracy`` is NaN and ``rank_error`` holds the
    half-width of its interval in *ranks* (units) at level 1 − ``alpha``, with ``rank_scale``
    the Gumbel scale in ranks (``privacy.dp.accuracy.quantile_rank_error``).
    """

    column: str
    aggregate: str
    distribution: str
    scale: float
    accuracy: float  # CI half-width at alpha (exact discrete-Gaussian level for integers)
    alpha: float
    rho: float  # this measure's ρ under OpenDP's privacy map (the table's ρ is their sum)
    rank_scale: float | None = None
    rank_error: float | None = None
    candidates: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "column": self.column,
            "aggregate": self.aggregate,
            "distribution": self.distribution,
            "scale": self.scale,
            "accuracy": self.accuracy,
            "alpha": self.alpha,
            "rho": self.rho,
        }
        if self.rank_error is not None:
            out |= {
                "rank_scale": self.rank_scale,
                "rank_error": self.rank_error,
                "candidates": self.candidates,
            }
        return out


@dataclass(frozen=True)
class TableDraw:
    name: str
    frame: pl.DataFrame  # keys (in key-set order) + one noisy column per measure
    noise: list[NoiseInfo]
    rho: float


def _expr(m: Measure) -> pl.Expr:
    # No explicit scale: OpenDP sets each measure's σ to the global scale times the measure's
    # sensitivity, so every measure of a table gets the same share of the table's ρ.
    dp = _dp()
    if m.aggregate == "count":
        return dp.len(signed=True).alias(m.name)
    if m.aggregate == "quantile":
        assert m.field is not None and m.quantile is not None and m.candidates is not None
        # OpenDP's quantile: a report-noisy-max (Gumbel) over the public candidates scored by
        # rank error; the released value is always one of the candidates.
        q: pl.Expr = (
            pl.col(m.field)
            .cast(pl.Float64)
            .dp.quantile(  # type: ignore[attr-defined]
                m.quantile, candidates=list(m.candidates)
            )
        )
        return q.alias(m.name)
    assert m.field is not None and m.bounds is not None
    # Integer sums: a float sum's sensitivity must cover rounding error, which grows with the
    # square of the number of units; whole yuan (or 万元) per unit lose nothing that matters.
    lo, hi = math.floor(m.bounds[0]), math.ceil(m.bounds[1])
    summed: pl.Expr = pl.col(m.field).fill_null(0).dp.sum((lo, hi))  # type: ignore[attr-defined]
    return summed.alias(m.name)


def aggregable(measures: list[Measure]) -> bool:
    """Counts and sums add up per cell; a quantile needs the per-unit values."""
    return all(m.aggregate in ("count", "sum") for m in measures)


def integer_bounds(m: Measure) -> tuple[int, int]:
    assert m.bounds is not None
    return math.floor(m.bounds[0]), math.ceil(m.bounds[1])


def exact_cells(frame: pl.LazyFrame, by: list[str], measures: list[Measure]) -> pl.LazyFrame:
    """Every measure's exact value per group of the bounded ``frame``: what OpenDP's polars
    plan (``_integer_sums`` then ``_expr``) computes before its noise — rows per group, and
    sums of values rounded to whole units, nulls as 0, clipped to the integer bounds."""
    aggs: list[pl.Expr] = []
    for m in measures:
        if m.aggregate == "count":
            aggs.append(pl.len().cast(pl.Int64).alias(m.name))
        elif m.aggregate == "sum":
            assert m.field is not None
            lo, hi = integer_bounds(m)
            v = pl.col(m.field).round(0).cast(pl.Int64).fill_null(0).clip(lo, hi)
            aggs.append(v.sum().cast(pl.Int64).alias(m.name))
        else:
            raise ValueError(f"{m.name}: a {m.aggregate} is not aggregated before the noise")
    return frame.group_by(by).agg(aggs)


def _sensitivity(m: Measure, contributions: int, rows_per_cell: int | None, cells: int) -> float:
    """ℓ2 sensitivity of one measure's vector of cells when a unit adds or removes at most
    ``contributions`` bounded rows: a count moves by 1 per row, a sum by its largest bound.
    With ``rows_per_cell`` declared, those rows fall in at most ``contributions`` cells with at
    most ``rows_per_cell`` each (√k·r); else all of them may fall in one cell (k)."""
    per_row = 1 if m.aggregate == "count" else max(abs(b) for b in integer_bounds(m))
    if rows_per_cell is None:
        return float(contributions * per_row)
    # A unit cannot touch more cells than the public key set has (OpenDP bounds it the same).
    return math.sqrt(min(contributions, cells)) * rows_per_cell * per_row


def _noisy_cells(
    dp: Any,
    q: TableQuery,
    cells: pl.DataFrame,
    tm: TableMeasurement,
    contributions: int,
    alpha: float,
) -> pl.DataFrame:
    """The public key set with each measure's exact cells plus OpenDP's discrete Gaussian
    noise at the scale the table's calibrated measurement states for it."""
    summary = dp.summarize_polars_measurement(tm.measurement, alpha)
    meas, d_in, rho_q = tm.measurement, tm.context.d_in, tm.rho
    exact = q.keys.join(cells, on=q.by, how="left", nulls_equal=True, maintain_order="left")
    scales = {r["column"]: float(r["scale"]) for r in summary.iter_rows(named=True)}
    mechs = {
        m.name: dp.m.make_gaussian(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64"), scales[m.name]
        )
        for m in q.measures
    }
    spent = sum(
        float(mechs[m.name].map(_sensitivity(m, contributions, q.rows_per_cell, q.keys.height)))
        for m in q.measures
    )
    planned = float(meas.map(d_in))
    # The vector measurements must account exactly what OpenDP's analysis of the plan does
    # (a smaller sensitivity here would understate the loss), within the table's ρ.
    if abs(spent - planned) > 1e-6 * planned or spent > rho_q * (1 + 1e-6):
        raise ShuyuError(
            f"table {q.name}: the noise on its cells would account ρ={spent!r}, OpenDP's plan "
            f"ρ={planned!r} (table budget {rho_q!r}); nothing was drawn",
            hint="the installed OpenDP analyses counts/sums differently from "
            "privacy.dp.mechanisms._sensitivity: align them before building",
        )
    out = q.keys.clone()
    for m in q.measures:
        values = exact[m.name].fill_null(0).cast(pl.Int64).to_list()
        out = out.with_columns(pl.Series(m.name, mechs[m.name](values), dtype=pl.Int64))
    return out


def _integer_sums(q: TableQuery) -> pl.LazyFrame:
    """Round the summed fields to whole units in the data (row-wise, before OpenDP)."""
    fields = sorted({m.field for m in q.measures if m.aggregate == "sum" and m.field})
    return q.frame.with_columns(pl.col(f).round(0).cast(pl.Int64) for f in fields)


def _plan(schema: pl.Schema, q: TableQuery) -> pl.LazyFrame:
    grouped = pl.LazyFrame(schema=schema).group_by(q.by).agg([_expr(m) for m in q.measures])
    # Public keys: the same left join OpenDP's LazyFrameQuery.with_keys writes.
    return q.keys.lazy().join(grouped, how="left", on=q.by, nulls_equal=True)


def _unit(dp: Any, q: TableQuery, contributions: int) -> Any:
    """The privacy unit: ``contributions`` rows in all, and, when the bounding guarantees it,
    at most ``rows_per_cell`` rows in each of at most ``contributions`` cells of ``q.by``."""
    if q.rows_per_cell is None:
        return dp.unit_of(contributions=contributions)
    bound = dp.polars.Bound
    return dp.unit_of(
        contributions=[
            bound(per_group=contributions),
            bound(by=list(q.by), per_group=q.rows_per_cell, num_groups=contributions),
        ]
    )


def _make(dp: Any, ctx: Any, plan: pl.LazyFrame, scale: float) -> Any:
    acct = ctx.accountant
    return dp.m.make_private_lazyframe(
        acct.input_domain, acct.input_metric, acct.output_measure, plan, global_scale=scale
    )


def _calibrate(dp: Any, ctx: Any, plan: pl.LazyFrame, d_mid: float) -> tuple[Any, float]:
    """The measurement at the largest global scale whose ρ is within ``d_mid``, and that scale.

    OpenDP gives each measure the noise scale ``global_scale × its sensitivity``: a count's σ,
    a sum's σ (times its bound), a quantile's Gumbel scale on its score. Every term of the
    table's ρ is ∝ 1/global_scale² (Gaussian: Δ²/2σ²; report-noisy-max under zCDP: ε²/8 with
    ε ∝ 1/scale), so one map at scale 1 lands on the target up to float rounding.
    """
    d_in = ctx.d_in
    scale = 1.0
    rho_at_1 = float(_make(dp, ctx, plan, scale).map(d_in))
    scale = math.sqrt(rho_at_1 / d_mid) * (1 + 1e-9)
    for _ in range(50):
        meas = _make(dp, ctx, plan, scale)
        if meas.check(d_in, d_mid):
            return meas, scale
        scale *= 1.0001
    raise RuntimeError(f"could not calibrate the noise scale to ρ={d_mid}")  # pragma: no cover


def _measure_rhos(
    dp: Any, ctx: Any, schema: pl.Schema, q: TableQuery, scale: float, rho_q: float
) -> list[float]:
    """Each measure's ρ at the table's calibrated scale, from OpenDP's own privacy map.

    The shares are not equal: at ``contributions`` k > 1 OpenDP charges a quantile twice what
    a count or sum costs at the same global scale (k = 4: 16/s² against 8/s²). They add up to
    the table's ρ (zCDP composes by addition); the sum is scaled onto ``rho_q`` exactly to
    absorb the calibration's rounding.
    """
    if len(q.measures) == 1:
        return [rho_q]
    one = [
        float(_make(dp, ctx, _plan(schema, replace(q, measures=[m])), scale).map(ctx.d_in))
        for m in q.measures
    ]
    total = sum(one)
    return [rho_q * r / total for r in one]


def _noise_info(
    row: dict[str, Any], m: Measure, alpha: float, share: float, global_scale: float
) -> NoiseInfo:
    """The measure's noise with an interval whose stated level is its actual level.

    For integer (discrete Gaussian) noise OpenDP's accuracy is a conservative tail bound (its
    "95 %" covers 99.5–99.9 %); the exact discrete-Gaussian quantile replaces it, and ``alpha``
    records 1 − the level the integer half-width really has (≥ the spec's 1 − α).

    A quantile gets no interval on its value but one in ranks: OpenDP's Gumbel scale is on
    the score ``|α_den·#(x<c) − α_num·(n − #(x=c))|``, i.e. ``α_den`` times a rank error,
    and its sensitivity is ``max(α_num, α_den − α_num)``; so the scale in ranks is
    ``global_scale · max(q, 1 − q)`` whatever OpenDP's fraction for q
    (``accuracy.quantile_rank_error``).
    """
    scale = float(row["scale"])
    if m.aggregate == "quantile":
        assert m.quantile is not None and m.candidates is not None
        b = global_scale * max(m.quantile, 1.0 - m.quantile)
        return NoiseInfo(
            column=row["column"],
            aggregate=row["aggregate"],
            distribution=row["distribution"],
            scale=scale,
            accuracy=float("nan"),
            alpha=alpha,
            rho=share,
            rank_scale=b,
            rank_error=accuracy.quantile_rank_error(b, len(m.candidates), alpha),
            candidates=len(m.candidates),
        )
    width, level = float(row["accuracy"]), 1.0 - alpha
    if "Integer" in str(row["distribution"]):
        h, level = accuracy.discrete_gaussian_half_width(scale, alpha)
        width = float(h)
    return NoiseInfo(
        column=row["column"],
        aggregate=row["aggregate"],
        distribution=row["distribution"],
        scale=scale,
        accuracy=width,
        alpha=1.0 - level,
        rho=share,
    )


@dataclass(frozen=True)
class TableMeasurement:
    """One table's calibrated OpenDP measurement (public: it depends on the spec only).

    ``measurement`` is non-interactive: invoking it on a bounded frame draws fresh noise, so
    the simulation tests call it many times over fixed data; a release invokes it exactly
    once, through the table's compositor (``release_tables``).
    """

    query: TableQuery
    context: Any  # dp.Context.compositor holding the table's ρ
    measurement: Any
    global_scale: float
    rho: float
    noise: list[NoiseInfo]


def table_measurement(
    q: TableQuery,
    rho_q: float,
    contributions: int = 1,
    max_units: int = 50_000_000,
    alpha: float = 0.05,
    data: pl.LazyFrame | None = None,
) -> TableMeasurement:
    """Calibrate ``q``'s measurement to ``rho_q`` over ``data`` (default: the query's frame).

    ``data`` may be an empty frame of the bounded schema (planning): nothing is read.
    """
    dp = _dp()
    frame = _integer_sums(q) if data is None else data
    schema = frame.collect_schema()
    with warnings.catch_warnings():
        # OpenDP warns that large public key sets are slow; ours are small.
        warnings.simplefilter("ignore")
        ctx = dp.Context.compositor(
            data=frame,
            privacy_unit=_unit(dp, q, contributions),
            privacy_loss=dp.loss_of(rho=rho_q),
            split_evenly_over=1,
            margins=[dp.polars.Margin(by=[], max_length=max_units)],
        )
        meas, scale = _calibrate(dp, ctx, _plan(schema, q), ctx.d_mids[0])
        summary = dp.summarize_polars_measurement(meas, alpha)
        shares = _measure_rhos(dp, ctx, schema, q, scale, rho_q)
    rows = list(summary.iter_rows(named=True))
    by_name = {m.name: m for m in q.measures}
    noise = [
        _noise_info(row, by_name[row["column"]], alpha, share, scale)
        for row, share in zip(rows, shares, strict=True)
    ]
    return TableMeasurement(q, ctx, meas, scale, rho_q, noise)


def release_tables(
    queries: list[TableQuery],
    rho: float,
    contributions: int = 1,
    max_units: int = 50_000_000,
    alpha: float = 0.05,
) -> list[TableDraw]:
    """Measure every table under zCDP with total ``rho`` split by the tables' weights.

    Each frame must hold at most ``contributions`` rows per privacy unit (the caller's
    bounding pre-aggregation guarantees it); group keys outside ``keys`` are dropped and
    keys absent from the data are released as noise around zero. Counts and sums are
    aggregated first (``q.cells`` or ``exact_cells``), quantiles measured on the rows.
    """
    dp = _dp()
    total_w = sum(q.weight for q in queries)
    draws: list[TableDraw] = []
    for q in queries:
        rho_q = rho * q.weight / total_w
        cells = q.cells
        if cells is None and aggregable(q.measures):
            cells = exact_cells(q.frame, q.by, q.measures).collect(engine="streaming")
        # With exact cells, the measurement is calibrated on the bounded schema only.
        schema_only = (
            None if cells is None else pl.LazyFrame(schema=_integer_sums(q).collect_schema())
        )
        tm = table_measurement(q, rho_q, contributions, max_units, alpha, data=schema_only)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cells is not None:
                frame = _noisy_cells(dp, q, cells, tm, contributions, alpha)
            else:
                released = tm.context(tm.measurement).collect()
                # The join keeps the key set's order only loosely; fix it for deterministic
                # outputs.
                frame = q.keys.join(
                    released, on=q.by, how="left", nulls_equal=True, maintain_order="left"
                )
        draws.append(TableDraw(name=q.name, frame=frame, noise=tm.noise, rho=tm.rho))
    return draws


def plan_noise(
    queries: list[TableQuery],
    rho: float,
    contributions: int = 1,
    max_units: int = 50_000_000,
    alpha: float = 0.05,
) -> dict[str, list[NoiseInfo]]:
    """The noise each table's measures *would* get under ``rho``, without any data.

    The same calibration as ``release_tables`` over an empty frame of the bounded frames'
    schema: nothing is read, nothing is drawn, nothing is charged (accuracy-first planning).
    """
    total_w = sum(q.weight for q in queries)
    out: dict[str, list[NoiseInfo]] = {}
    for q in queries:
        empty = pl.LazyFrame(schema=_integer_sums(q).collect_schema())
        tm = table_measurement(
            q, rho * q.weight / total_w, contributions, max_units, alpha, data=empty
        )
        out[q.name] = tm.noise
    return out


def rho_for_half_width(
    rho: float, half_width_now: float, target: float, scale_now: float, alpha: float
) -> float:
    """A closed-form estimate of the release ρ at which a measure's half-width is ``target``.

    For a continuous Gaussian ρ ∝ 1/σ², so σ(ρ') = σ·sqrt(ρ/ρ'); the largest σ whose integer
    half-width is within target is found by bisection and converted to ρ. At small scales
    OpenDP's discrete-Gaussian ρ departs from 1/σ²: ``products.planning`` starts its own
    bisection over OpenDP's calibration from this estimate.
    """
    if target <= 0:
        raise ValueError("target half-width must be positive")
    lo, hi = 1e-9, scale_now * max(1.0, 2 * target / max(half_width_now, 1e-9)) + 1.0
    for _ in range(200):  # largest σ whose half-width is within target
        mid = (lo + hi) / 2
        h, _level = accuracy.discrete_gaussian_half_width(mid, alpha)
        lo, hi = (mid, hi) if h <= target else (lo, mid)
    return rho * (scale_now / lo) ** 2
