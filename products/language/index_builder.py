"""The generic index builder: any spec of kind ``index`` written in the product language.

Each row set of ``index.rows`` is a product-language query; the tables that name it (``filter``)
are compiled and bounded exactly as a statistical report's (``products.language.builder``),
and all tables are measured in one zCDP release split by their weights. The index itself is
post-processing (``products.language.index_eval``): no budget, no product-specific Python.

The tables feeding an index are released like a report's (suppression of small or inaccurate
cells, the domain's floors), after clamping each noisy value to its measure's valid range (a
count is never below 0). A score with a withheld input is withheld (correction 1); because
that decision selects on the inputs' noise, the bands condition on it (correction 2, see
``index_eval`` and ``index_band``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from catalogs.index_language import measure_ranges
from catalogs.product_models import ProductSpec
from products import outputs, report
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.language import builder as lang
from products.language import compile as qc
from products.language import index_eval
from products.release import AccuracyCell, ColumnLineage, InputRef, SuppressedCell
from products.specs import dimension_labels
from products.tables import TableResult, finish_tables
from scaleout.placement import BoundingPlan
from shuyu_core.home import Home


def row_set_spec(spec: ProductSpec, name: str) -> ProductSpec:
    """The index spec seen as the statistical report of one row set (its query and the
    tables that name it), so the language's compiler and bounding apply unchanged."""
    assert spec.index is not None
    return spec.model_copy(
        update={
            "kind": "statistical_report",
            "query": spec.index.rows[name],
            "tables": [t for t in spec.tables if t.filter == name],
            "index": None,
        }
    )


def _row_sets(ctx: BuildContext) -> list[BuildContext]:
    assert ctx.spec.index is not None
    return [
        dataclasses.replace(ctx, spec=row_set_spec(ctx.spec, name))
        for name in ctx.spec.index.rows
        if any(t.filter == name for t in ctx.spec.tables)
    ]


class LanguageIndexBuilder:
    def __init__(self) -> None:
        self._rates: dict[str, dict[str, float]] = {}
        self._cells: dict[str, dict[str, pl.DataFrame]] = {}

    def extra_inputs(self, home: Home, spec: ProductSpec, options: BuildOptions) -> list[InputRef]:
        return []

    def reversible_outputs(self, spec: ProductSpec) -> bool:
        return False

    def plan(self, ctx: BuildContext) -> None:
        rates: dict[str, float] = {}
        cells: dict[str, pl.DataFrame] = {}
        for sub in _row_sets(ctx):
            report_builder = lang.LanguageReportBuilder()
            # static checks, schemas, join match rates and (built here) the exact cells
            report_builder.plan(sub)
            for code, rate in report_builder.match_rates(sub.release_id).items():
                rates[f"{_row_set_name(sub)}/{code}"] = rate
            cells.update(report_builder.exact_cells(sub.release_id))
        self._rates[ctx.release_id] = rates
        self._cells[ctx.release_id] = cells

    def draw(self, ctx: BuildContext) -> Draw:
        """Tables whose exact cells the plan computed are measured on them (the row set's
        plan only gives the schema the measurement is calibrated on); the others on their
        bounded frames."""
        cells = self._cells.pop(ctx.release_id, {})
        frames: dict[str, pl.LazyFrame] = {}
        for sub in _row_sets(ctx):
            rest = [t.name for t in sub.spec.tables if t.name not in cells]
            if rest:
                frames.update(lang.bounded_frames(sub, rest))
            plans = lang.table_plans(sub)
            frames.update({t: plans[t].drop(qc.UNIT_COL) for t in plans if t in cells})
        return lang.measure(ctx, frames, self._rates.get(ctx.release_id, {}), cells)

    def measure(self, ctx: BuildContext, frames: dict[str, pl.LazyFrame]) -> Draw:
        return lang.measure(ctx, frames, self._rates.get(ctx.release_id, {}))

    def bounding_plans(self, ctx: BuildContext) -> dict[str, BoundingPlan]:
        """Per table its row set's bounding plan, for a build whose bounding runs on a cluster
        (``scaleout.placement``); ``measure`` then draws over the bounded parts."""
        return {
            t.name: BoundingPlan(
                partial(row_set_table_plan, _row_set_name(sub), t.name), qc.UNIT_COL
            )
            for sub in _row_sets(ctx)
            for t in sub.spec.tables
        }

    def partitionwise(self, ctx: BuildContext) -> str | None:
        """None when every row set's bounding, per co-partition, adds up to the whole's."""
        reasons = [
            reason
            for sub in _row_sets(ctx)
            if (reason := lang.LanguageReportBuilder().partitionwise(sub)) is not None
        ]
        return "; ".join(reasons) if reasons else None

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
        return finish(ctx, draw, stage)


def row_set_table_plan(row_set: str, table: str, ctx: BuildContext) -> pl.LazyFrame:
    """One table's per-unit bounding plan over its row set (module level, so it pickles to
    the workers, which call it with their co-partition's context)."""
    sub = dataclasses.replace(ctx, spec=row_set_spec(ctx.spec, row_set))
    return lang.table_plan(table, sub)


def _row_set_name(sub: BuildContext) -> str:
    return str(sub.spec.tables[0].filter)


def _noise(draw: Draw) -> dict[str, dict[str, dict[str, Any]]]:
    return {t: {n["column"]: n for n in rows} for t, rows in draw.meta["noise"].items()}


def clamped(spec: ProductSpec, draw: Draw) -> Draw:
    """The draw with every measure clamped to its valid range (post-processing)."""
    ranges = measure_ranges(spec)
    tables = {}
    for t in spec.tables:
        frame = draw.tables[t.name]
        cols = []
        for m in t.measures:
            lo, hi = ranges.get(f"{t.name}.{m.name}", (-np.inf, np.inf))
            if np.isfinite(lo) or np.isfinite(hi):
                cols.append(
                    pl.col(m.name).clip(
                        None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi
                    )
                )
        tables[t.name] = frame.with_columns(cols) if cols else frame
    return Draw(tables=tables, meta=draw.meta)


def withheld_cells(spec: ProductSpec, results: list[TableResult]) -> dict[str, pl.DataFrame]:
    """Per released table: its keys and, per measure, whether the released value is withheld."""
    out: dict[str, pl.DataFrame] = {}
    for t, r in zip(spec.tables, results, strict=True):
        out[r.name] = r.frame.select(
            *t.by, *(pl.col(m.name).is_null().alias(m.name) for m in t.measures)
        )
    return out


def index_frame(
    spec: ProductSpec, values: index_eval.IndexValues
) -> tuple[pl.DataFrame, list[AccuracyCell], list[SuppressedCell]]:
    """The released index table, its accuracy cells and withheld cells."""
    idx = spec.index
    assert idx is not None
    grid = values.grid
    keys = pl.DataFrame(
        [
            tuple(grid.keys[d][i] for d, i in zip(grid.dims, pos, strict=True))
            for pos in np.ndindex(*grid.shape)
        ],
        schema=dict.fromkeys(grid.dims, pl.String),
        orient="row",
    )
    hidden = values.withheld.ravel()
    reasons = ["; ".join(r for r in rs if r) or None for rs in values.reasons]

    def shown(a: np.ndarray, digits: int) -> pl.Series:
        return pl.Series(
            [
                None if h else round(float(v), digits)
                for v, h in zip(a.ravel(), hidden, strict=True)
            ],
            dtype=pl.Float64,
        )

    cols: dict[str, Any] = {}
    for d in grid.dims:
        cols[d] = keys[d]
        labels = dimension_labels(spec.dimension(d))
        if any(labels.get(k, k) != k for k in labels):
            cols[f"{d}_name"] = [labels.get(k, k) for k in keys[d].to_list()]
    half = (values.upper - values.lower) / 2.0
    cols["score"] = shown(values.score, 1)
    # The band's ends are rounded outwards, so rounding never narrows it.
    cols["score_lower"] = shown(np.floor(values.lower * 10) / 10, 1)
    cols["score_upper"] = shown(np.ceil(values.upper * 10) / 10, 1)
    cols["score_ci95"] = shown(np.ceil(half * 10) / 10, 1)
    for c in idx.components:
        cols[c.name] = shown(values.components[c.name], 4)
    cols["suppressed"] = pl.Series([bool(h) for h in hidden], dtype=pl.Boolean)
    cols["suppression_reason"] = pl.Series(reasons, dtype=pl.String)
    frame = pl.DataFrame(cols)

    cells: list[AccuracyCell] = []
    suppressed: list[SuppressedCell] = []
    key_dicts = keys.to_dicts()
    flat_score, flat_half = values.score.ravel(), half.ravel()
    for i, key in enumerate(key_dicts):
        h = bool(hidden[i])
        cells.append(
            AccuracyCell(
                output=idx.output,
                key=key,
                measure="score",
                estimate=None if h else float(flat_score[i]),
                ci_half_width=None if h else float(flat_half[i]),
                alpha=spec.alpha,
                relative_error=None
                if h or flat_score[i] <= 0
                else float(flat_half[i] / flat_score[i]),
                method="interval",
                distribution="derived",
                suppressed=h,
                reason=reasons[i] if h else None,
            )
        )
        if h:
            suppressed.append(
                SuppressedCell(output=idx.output, key=key, measure="score", reason=str(reasons[i]))
            )
    return frame, cells, suppressed


def coverage_statement(spec: ProductSpec) -> str:
    level = 1 - spec.alpha
    return (
        f"指数置信带的覆盖率至少为 {level:.0%}：对每个已发布的单元，真实指数（无噪声输入按同一公式"
        f"计算）落在置信带内的概率 ≥ {level:.0%}（在“该指数已发布”的条件下，无论数据如何）。"
        f" The band covers the true score with probability at least {level:.0%} for every "
        "cell, conditional on the score being released, whatever the data: each of the k "
        f"input cells the score reads gets an interval at level {level:.2f}^(1/k) that inverts "
        "the noise's law given the cell's release (small-cell suppression selects on the "
        "noise), and the band is the score's range over them (interval arithmetic). It is "
        "conservative: the measured coverage is higher (docs/products.md, Index)."
    )


def finish(ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
    spec = ctx.spec
    idx = spec.index
    assert idx is not None
    noisy = clamped(spec, draw)
    results = finish_tables(ctx, noisy)
    # The index reads the raw noisy values; its bands condition on the tables' release.
    values = index_eval.compute(spec, draw.tables, _noise(draw), withheld_cells(spec, results))
    frame, cells, suppressed = index_frame(spec, values)
    files: list[Any] = []
    subs = {t.name: row_set_spec(spec, str(t.filter)) for t in spec.tables}
    for r in results:
        files += outputs.write_table(
            stage,
            r.name,
            r.frame,
            list(spec.outputs.formats),
            "dp_aggregate",
            r.descriptions,
            lang.lineage(subs[r.name], r),
        )
    files += outputs.write_table(
        stage,
        idx.output,
        frame,
        list(spec.outputs.formats),
        "dp_aggregate",
        descriptions(spec),
        index_lineage(spec, frame),
    )
    accuracy = [c for r in results for c in r.accuracy] + cells
    all_suppressed = [c for r in results for c in r.suppressed] + suppressed
    rates = draw.meta.get("match_rates", {})
    notes = [f"{code} 匹配率 match rate {rate:.2%}" for code, rate in sorted(rates.items())]
    notes += [
        coverage_statement(spec),
        "Weights: " + ", ".join(f"{c.name} {c.weight:g} ({c.direction})" for c in idx.components),
        "Negative noisy values of the index's tables are shown as 0 (post-processing); a score "
        "with a withheld input cell is withheld, and its band accounts for that selection.",
    ]
    if "html" in spec.outputs.formats:
        html = report.render_index(ctx, results, frame, accuracy, notes)
        files.append(outputs.html_output(stage, "report", html, "dp_aggregate"))
    bounds = [
        b
        for name in _used_row_sets(spec)
        for b in lang.contribution_bounds(row_set_spec(spec, name))
    ]
    tables = [t.name for t in spec.tables]
    derived = {idx.output: tables}
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


def _used_row_sets(spec: ProductSpec) -> list[str]:
    return list(dict.fromkeys(str(t.filter) for t in spec.tables))


def descriptions(spec: ProductSpec) -> dict[str, str]:
    idx = spec.index
    assert idx is not None
    level = 1 - spec.alpha
    out = {d: spec.dimension(d).title for d in idx.by}
    out |= {f"{d}_name": f"{spec.dimension(d).title} (label)" for d in idx.by}
    band = f"the band (holds the true score with probability ≥ {level:.0%})"
    out |= {
        "score": f"{idx.title} {idx.title_en}, 0–100 (null when withheld)",
        "score_lower": f"lower end of {band}",
        "score_upper": f"upper end of {band}",
        "score_ci95": "half the band's width (the band need not be symmetric)",
        "suppressed": "the score is withheld",
        "suppression_reason": "why the score is withheld",
    }
    for t in idx.terms:
        out[t.name] = t.title or t.expr
    for c in idx.components:
        out[c.name] = f"{c.title}: {c.expr}, clamped to {list(c.range)}"
    return out


def index_lineage(spec: ProductSpec, frame: pl.DataFrame) -> dict[str, ColumnLineage]:
    idx = spec.index
    assert idx is not None
    srcs = sorted(
        {qc.col_name(q, v.field) for q in idx.rows.values() for v in q.values if v.field}
        | {f"{q.base}.{spec.privacy_unit.field}" for q in idx.rows.values()}  # type: ignore[union-attr]
    )
    tables = [t.name for t in spec.tables]
    exprs = {c.name: c.expr for c in idx.components}
    out: dict[str, ColumnLineage] = {}
    for c in frame.columns:
        if c in idx.by or c.removesuffix("_name") in idx.by:
            out[c] = ColumnLineage(
                sources=[], operator="public_key", params={"keys": "public key set of the spec"}
            )
        elif c in ("suppressed", "suppression_reason"):
            out[c] = ColumnLineage(sources=[], operator="post_processing")
        else:
            params: dict[str, Any] = {"derived": "index", "of": tables}
            if c in exprs:
                params["expr"] = exprs[c]
            out[c] = ColumnLineage(sources=srcs, operator="dp_aggregate", params=params)
    return out
