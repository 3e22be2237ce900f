"""Index 区域营商活力指数 (regional business vitality) per district and quarter, from SCZTDJ.

Privacy unit: the enterprise (统一社会信用代码); registry duplicates are reduced to one row per
enterprise first. Three noisy tables (each enterprise adds at most one row to each):

- ``new`` — enterprises founded in the quarter (成立日期), count and registered capital
  (注册资本, 万元, clipped to ``index.capital_bounds``);
- ``deregistered`` — enterprises deregistered in the quarter (注销日期), count;
- ``active_at_start`` — enterprises active on the first day of the first quarter, count.

Everything else is post-processing of those noisy values (no extra budget):

- active stock before quarter q: A(q) = active_at_start + Σ_{j<q} (new(j) − deregistered(j));
- components: ``new_rate`` = new / A(q), ``dereg_rate`` = deregistered / A(q),
  ``capital_per_new`` = capital / new (万元), ``growth`` = (new − deregistered) / A(q);
- normalization: each component is mapped linearly from its spec anchor [a, b] to [0, 1]
  and clipped (fixed anchors, so scores compare across quarters and releases); a
  ``negative`` component enters as 1 − z;
- score = 100 · Σ wᵢ zᵢ / Σ wᵢ on a 0–100 scale;
- uncertainty band: the central 95 % of scores recomputed from ``simulations`` draws of
  every input's noise (Gaussian with the mechanism's scale) around the released values.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from catalogs.product_models import ProductSpec, quarter_index, quarter_start
from privacy.dp import accuracy as acc
from privacy.dp import bounding
from privacy.dp.mechanisms import Measure, TableQuery, release_tables
from products import outputs, report, specs
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.release import AccuracyCell, ContributionBound, InputRef, SuppressedCell
from products.tables import TableResult, finish_tables, write_tables
from scaleout.placement import BoundingPlan, partitioned_on
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

UNIT = "统一社会信用代码"
FILTERS = ("new", "deregistered", "active_at_start")
COMPONENTS = ("new_rate", "dereg_rate", "capital_per_new", "growth")


def _quarter(col: str) -> pl.Expr:
    return pl.format("{}Q{}", pl.col(col).dt.year(), pl.col(col).dt.quarter())


def _window(spec: ProductSpec) -> tuple[dt.date, dt.date, list[str]]:
    dim = spec.dimension("quarter")
    quarters = specs.dimension_keys(dim)
    first = quarter_start(quarters[0])
    last_i = quarter_index(quarters[-1]) + 1
    end = dt.date(last_i // 4, (last_i % 4) * 3 + 1, 1)  # exclusive
    return first, end, quarters


def _table_measures(spec: ProductSpec) -> dict[str, tuple[str, str | None]]:
    """filter -> (count measure name, capital sum measure name or None)."""
    out: dict[str, tuple[str, str | None]] = {}
    for t in spec.tables:
        if t.filter not in FILTERS:
            raise ValidationError(
                f"product {spec.id}: table {t.name} needs filter one of {', '.join(FILTERS)}",
                hint="see docs/products.md (index)",
            )
        count = next((m.name for m in t.measures if m.aggregate == "count"), None)
        total = next((m.name for m in t.measures if m.aggregate == "sum"), None)
        if count is None:
            raise ValidationError(
                f"product {spec.id}: table {t.name} needs a count", hint="add a count measure"
            )
        out[t.filter] = (count, total)
    missing = [f for f in FILTERS if f not in out]
    if missing or out["new"][1] is None:
        raise ValidationError(
            f"product {spec.id}: the index needs tables new (count + capital sum), "
            "deregistered and active_at_start",
            hint="see docs/products.md (index)",
        )
    return out


def _per_unit(ctx: BuildContext) -> pl.LazyFrame:
    """One lazy row per enterprise with its quarter flags and clipped capital."""
    spec = ctx.spec
    assert spec.index is not None
    start, end, _quarters = _window(spec)
    lo, hi = spec.index.capital_bounds
    registry = bounding.first_per_unit(ctx.scan("SCZTDJ"), UNIT)
    founded, closed = pl.col("成立日期"), pl.col("注销日期")
    in_window = lambda c: (c >= pl.lit(start)) & (c < pl.lit(end))  # noqa: E731
    return registry.select(
        pl.col(UNIT),
        pl.col("区划代码").alias("district"),
        pl.when(in_window(founded)).then(_quarter("成立日期")).alias("new_quarter"),
        pl.when(in_window(closed)).then(_quarter("注销日期")).alias("closed_quarter"),
        ((founded < pl.lit(start)) & (closed.is_null() | (closed >= pl.lit(start)))).alias(
            "active_at_start"
        ),
        pl.col("注册资本").fill_null(0.0).clip(lo, hi).alias("capital"),
    )


class VitalityIndexBuilder:
    def extra_inputs(self, home: Home, spec: ProductSpec, options: BuildOptions) -> list[InputRef]:
        return []

    def reversible_outputs(self, spec: ProductSpec) -> bool:
        return False

    def plan(self, ctx: BuildContext) -> None:
        _table_measures(ctx.spec)
        _per_unit(ctx).collect_schema()  # the declared fields suffice (reads no data)
        allowed = {"district", "quarter"}
        for t in ctx.spec.tables:
            unknown = [b for b in t.by if b not in allowed]
            if unknown or (t.filter == "active_at_start" and "quarter" in t.by):
                raise ValidationError(
                    f"product {ctx.spec.id}: table {t.name} groups by {', '.join(t.by)}; the "
                    "index builder knows district and quarter (not quarter for active_at_start)",
                    hint="see docs/products.md (index)",
                )

    def draw(self, ctx: BuildContext) -> Draw:
        bounded = bounding.sink_bounded(_per_unit(ctx), UNIT, ctx.workdir / "bounded.parquet")
        return self.measure(ctx, {"bounded": bounded})

    def bounding_plans(self, ctx: BuildContext) -> dict[str, BoundingPlan]:
        """The per-enterprise plan, for a build whose bounding runs on a cluster."""
        return {"bounded": BoundingPlan(_per_unit, UNIT)}

    def partitionwise(self, ctx: BuildContext) -> str | None:
        on = partitioned_on(ctx.inputs).get("SCZTDJ")
        return None if on == UNIT else f"SCZTDJ is partitioned on {on}, not {UNIT}"

    def measure(self, ctx: BuildContext, frames: dict[str, pl.LazyFrame]) -> Draw:
        spec = ctx.spec
        assert spec.index is not None and spec.budget is not None and spec.privacy_unit
        _table_measures(spec)
        bounded = frames["bounded"]
        frames = {
            "new": bounded.filter(pl.col("new_quarter").is_not_null()).select(
                "district", pl.col("new_quarter").alias("quarter"), "capital"
            ),
            "deregistered": bounded.filter(pl.col("closed_quarter").is_not_null()).select(
                "district", pl.col("closed_quarter").alias("quarter")
            ),
            "active_at_start": bounded.filter(pl.col("active_at_start")).select("district"),
        }
        queries = []
        for t in spec.tables:
            assert t.filter is not None
            queries.append(
                TableQuery(
                    name=t.name,
                    frame=frames[t.filter],
                    by=list(t.by),
                    keys=specs.key_frame(spec, list(t.by)),
                    measures=[
                        Measure(m.name, m.aggregate, "capital" if m.field else None, m.bounds)
                        for m in t.measures
                    ],
                    weight=t.weight,
                )
            )
        draws = release_tables(
            queries,
            rho=spec.budget.zcdp_rho,
            contributions=spec.privacy_unit.contributions,
            max_units=spec.privacy_unit.max_units,
            alpha=spec.alpha,
        )
        return Draw(
            tables={d.name: d.frame for d in draws},
            meta={"noise": {d.name: [n.to_dict() for n in d.noise] for d in draws}},
        )

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
        spec = ctx.spec
        assert spec.index is not None
        results = finish_tables(ctx, draw)
        index_frame, cells, suppressed = compute_index(
            spec, draw, ctx.seed, withheld_cells(results)
        )
        files = write_tables(ctx, results, stage)
        files += outputs.write_table(
            stage,
            "vitality_index",
            index_frame,
            list(spec.outputs.formats),
            "dp_aggregate",
            INDEX_DESCRIPTIONS,
        )
        accuracy = [c for r in results for c in r.accuracy] + cells
        all_suppressed = [c for r in results for c in r.suppressed] + suppressed
        notes = [
            "Scores are post-processing of three noisy tables; their bands come from "
            f"{spec.index.simulations} simulations of the known noise (Gaussian approximation "
            "of the discrete Gaussian).",
            "Weights: "
            + ", ".join(f"{c.name} {c.weight:g} ({c.direction})" for c in spec.index.components),
            "Enterprises that moved out (迁出) or were revoked (吊销) without a deregistration "
            "date count as active.",
        ]
        if "html" in spec.outputs.formats:
            html = report.render_index(ctx, results, index_frame, accuracy, notes)
            files.append(outputs.html_output(stage, "report", html, "dp_aggregate"))
        lo, hi = spec.index.capital_bounds
        bounds = [
            ContributionBound(
                resource="SCZTDJ",
                measure="counts",
                source_field="成立日期, 注销日期",
                reduction="one registry row per enterprise; it adds at most 1 to one cell of "
                "each table",
                max_rows_per_unit=1,
            ),
            ContributionBound(
                resource="SCZTDJ",
                measure="capital",
                source_field="注册资本",
                reduction="registered capital of a new enterprise, clipped (万元)",
                lower=lo,
                upper=hi,
                max_rows_per_unit=1,
            ),
        ]
        tables = [t.name for t in spec.tables]
        derived = {"vitality_index": tables}
        if "html" in spec.outputs.formats:
            derived["report"] = tables
        return Finished(
            outputs=files,
            accuracy=accuracy,
            suppressed=all_suppressed,
            contribution_bounds=bounds,
            derived_from=derived,
            notes=notes,
        )


INDEX_DESCRIPTIONS = {
    "district": "区县代码 district code (GB/T 2260)",
    "district_name": "区县 district",
    "quarter": "季度 quarter",
    "score": "活力指数 vitality score, 0–100 (null when withheld)",
    "score_lower": "lower end of the 95% uncertainty band",
    "score_upper": "upper end of the 95% uncertainty band",
    "score_ci95": "half-width of the 95% uncertainty band",
    "new_rate": "新设率 new registrations / active stock before the quarter",
    "dereg_rate": "注销率 deregistrations / active stock before the quarter",
    "capital_per_new": "新设企业平均注册资本 average registered capital of new enterprises (万元)",
    "growth": "存量增长率 growth of the active stock in the quarter",
    "suppressed": "the score is withheld",
    "suppression_reason": "why the score is withheld",
}


def _grid(frame: pl.DataFrame, col: str, districts: list[str], quarters: list[str]) -> np.ndarray:
    lookup = {(r["district"], r["quarter"]): r[col] for r in frame.iter_rows(named=True)}
    return np.array(
        [[float(lookup.get((d, q)) or 0.0) for q in quarters] for d in districts], dtype=np.float64
    )


def _scores(
    spec: ProductSpec, n: np.ndarray, cap: np.ndarray, dr: np.ndarray, a0: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Scores and components for arrays shaped (..., districts, quarters); a0 (..., districts)."""
    assert spec.index is not None
    net = n - dr
    before = np.cumsum(net, axis=-1) - net  # Σ_{j<q}
    stock = a0[..., None] + before
    denom = np.maximum(stock, 1.0)
    comps = {
        "new_rate": n / denom,
        "dereg_rate": dr / denom,
        "capital_per_new": cap / np.maximum(n, 1.0),
        "growth": net / denom,
    }
    total_w = sum(c.weight for c in spec.index.components)
    score = np.zeros_like(n)
    for c in spec.index.components:
        lo, hi = c.anchor
        x = np.log1p(np.maximum(comps[c.name], 0.0)) if c.log else comps[c.name]
        z = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
        if c.direction == "negative":
            z = 1.0 - z
        score = score + c.weight * z
    return 100.0 * score / total_w, comps, stock


def withheld_cells(results: list[TableResult]) -> dict[str, pl.DataFrame]:
    """Per released table, its keys and, per measure, whether the released value is withheld."""
    out: dict[str, pl.DataFrame] = {}
    for r in results:
        keys = [c for c in ("district", "quarter") if c in r.frame.columns]
        measures = [c for c in r.raw.columns if c not in keys]
        out[r.name] = r.frame.select(*keys, *(pl.col(m).is_null().alias(m) for m in measures))
    return out


def _withheld_grid(
    frame: pl.DataFrame, col: str, districts: list[str], quarters: list[str]
) -> np.ndarray:
    lookup = {(r["district"], r["quarter"]): r[col] for r in frame.iter_rows(named=True)}
    return np.array([[bool(lookup.get((d, q), True)) for q in quarters] for d in districts])


def compute_index(
    spec: ProductSpec,
    draw: Draw,
    seed: int,
    withheld: dict[str, pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, list[AccuracyCell], list[SuppressedCell]]:
    """The index frame; with ``withheld`` (``withheld_cells`` of the released tables) every
    component whose inputs include a withheld cell is withheld, and so is the score."""
    assert spec.index is not None
    names = _table_measures(spec)
    by_filter = {t.filter: t for t in spec.tables}
    districts = specs.dimension_keys(spec.dimension("district"))
    quarters = specs.dimension_keys(spec.dimension("quarter"))
    labels = specs.dimension_labels(spec.dimension("district"))
    noise = {
        t: {n["column"]: float(n["scale"]) for n in draw.meta["noise"][t]}
        for t in draw.meta["noise"]
    }
    new_t, dereg_t, base_t = (
        by_filter["new"],
        by_filter["deregistered"],
        by_filter["active_at_start"],
    )
    n_col, cap_col = names["new"]
    assert cap_col is not None
    d_col = names["deregistered"][0]
    a_col = names["active_at_start"][0]
    new_f, dereg_f, base_f = (draw.tables[t.name] for t in (new_t, dereg_t, base_t))
    n = _grid(new_f, n_col, districts, quarters)
    cap = _grid(new_f, cap_col, districts, quarters)
    dr = _grid(dereg_f, d_col, districts, quarters)
    base_lookup = {r["district"]: r[a_col] for r in base_f.iter_rows(named=True)}
    a0 = np.array([float(base_lookup.get(d) or 0.0) for d in districts])

    score, comps, stock = _scores(spec, n, cap, dr, a0)
    # Dependencies of each component on released cells. The stock before quarter q uses the
    # district's active_at_start and every earlier quarter's new and deregistered counts.
    hidden_dep = {c: np.zeros(n.shape, dtype=bool) for c in COMPONENTS}
    if withheld is not None:
        w_n = _withheld_grid(withheld[new_t.name], n_col, districts, quarters)
        w_cap = _withheld_grid(withheld[new_t.name], cap_col, districts, quarters)
        w_dr = _withheld_grid(withheld[dereg_t.name], d_col, districts, quarters)
        base_w = {r["district"]: r[a_col] for r in withheld[base_t.name].iter_rows(named=True)}
        w_a0 = np.array([bool(base_w.get(d, True)) for d in districts])
        earlier = (np.cumsum(w_n | w_dr, axis=-1) - (w_n | w_dr)) > 0
        w_stock = w_a0[:, None] | earlier
        hidden_dep = {
            "new_rate": w_n | w_stock,
            "dereg_rate": w_dr | w_stock,
            "capital_per_new": w_n | w_cap,
            "growth": w_n | w_dr | w_stock,
        }
    rng = np.random.default_rng(seed)
    sims = spec.index.simulations
    shape = (sims, *n.shape)
    s_n = n[None] - rng.normal(0, noise[new_t.name][n_col], shape)
    s_cap = cap[None] - rng.normal(0, noise[new_t.name][cap_col], shape)
    s_dr = dr[None] - rng.normal(0, noise[dereg_t.name][d_col], shape)
    s_a0 = a0[None] - rng.normal(0, noise[base_t.name][a_col], (sims, len(districts)))
    s_score, _c, _s = _scores(spec, s_n, s_cap, s_dr, s_a0)
    flat = s_score.reshape(sims, -1)
    lower, upper = acc.interval(flat, spec.alpha)
    lower, upper = lower.reshape(n.shape), upper.reshape(n.shape)
    half = (upper - lower) / 2.0

    rows = []
    cells: list[AccuracyCell] = []
    suppressed: list[SuppressedCell] = []
    for i, d in enumerate(districts):
        for j, q in enumerate(quarters):
            reason = None
            # Reasons carry no noisy value: a withheld score must not leak through them.
            if stock[i, j] < spec.index.min_base:
                reason = f"noisy active stock below {spec.index.min_base:g}"
            elif not half[i, j] <= spec.index.max_band_half_width:  # NaN: no band at all
                reason = f"band half-width above {spec.index.max_band_half_width:g}"
            elif any(hidden_dep[c][i, j] for c in COMPONENTS):
                reason = "an input cell it depends on is withheld"
            key = {"district": d, "quarter": q}
            hidden = reason is not None
            rows.append(
                {
                    "district": d,
                    "district_name": labels.get(d, d),
                    "quarter": q,
                    "score": None if hidden else round(float(score[i, j]), 1),
                    "score_lower": None if hidden else round(float(lower[i, j]), 1),
                    "score_upper": None if hidden else round(float(upper[i, j]), 1),
                    "score_ci95": None if hidden else round(float(half[i, j]), 1),
                    **{c: None if hidden else round(float(comps[c][i, j]), 4) for c in COMPONENTS},
                    "suppressed": hidden,
                    "suppression_reason": reason,
                }
            )
            cells.append(
                AccuracyCell(
                    output="vitality_index",
                    key=key,
                    measure="score",
                    estimate=None if hidden else float(score[i, j]),
                    ci_half_width=None if hidden else float(half[i, j]),
                    alpha=spec.alpha,
                    relative_error=None
                    if hidden or score[i, j] <= 0
                    else float(half[i, j] / score[i, j]),
                    method="simulation",
                    distribution="derived",
                    suppressed=hidden,
                    reason=reason,
                )
            )
            if reason is not None:
                suppressed.append(
                    SuppressedCell(output="vitality_index", key=key, measure="score", reason=reason)
                )
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("suppression_reason").cast(pl.String),
        *(
            pl.col(c).cast(pl.Float64)
            for c in ("score", "score_lower", "score_upper", "score_ci95", *COMPONENTS)
        ),
    )
    return frame, cells, suppressed
