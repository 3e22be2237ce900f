"""The generic statistical-report builder: any spec written in the product language.

Order (inside the engine's charge → draw once → store): ``plan`` runs every refusal before the
charge (static checks, the lazy plans' schemas, the join match rates) and, in the same
streaming pass as the match rates, computes the exact cells of every count/sum table
(``products.language.cells``: nothing is released or kept on disk; a refusal discards them);
``draw`` measures them with OpenDP over the public key sets — a table with a quantile has its
per-unit bounded cells sunk with the streaming engine (identifier dropped) and measured by
OpenDP's polars plan; ``finish`` applies accuracy, suppression and derived values, and records
every output column's lineage (source fields and derivation).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.product_models import ProductSpec
from privacy.dp.mechanisms import TableQuery, mechanism_measure, release_tables
from products import outputs, report, specs
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.language import cells as exact_pass
from products.language import compile as qc
from products.release import ColumnLineage, ContributionBound, InputRef
from products.tables import TableResult, finish_tables
from scaleout.placement import BoundingPlan, choose, partitioned_on
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home


def _plans(ctx: BuildContext) -> dict[str, pl.LazyFrame]:
    rows = qc.rows(ctx)
    plans: dict[str, pl.LazyFrame] = {}
    for t in ctx.spec.tables:
        fast = qc.unit_first(ctx, t)
        plans[t.name] = fast if fast is not None else qc.bounded(ctx.spec, rows, t)
    return plans


def _rows_do_not_fit(ctx: BuildContext, exc: pl.exceptions.PolarsError) -> ValidationError:
    """The data did not fit the plan (a value the static checks could not foresee)."""
    first = str(exc).splitlines()[0][:200]
    return ValidationError(
        f"product {ctx.spec.id}: the rows do not fit the query ({type(exc).__name__}: {first})",
        hint="check the field types and values the query reads; nothing was drawn, and any "
        "charge is void",
    )


def table_plans(ctx: BuildContext) -> dict[str, pl.LazyFrame]:
    """Every table's per-unit bounding plan (unit column kept), lazily."""
    return _plans(ctx)


def table_plan(table: str, ctx: BuildContext) -> pl.LazyFrame:
    """One table's per-unit bounding plan (unit column kept): what a worker runs over its
    co-partition (module level, so it pickles)."""
    return _plans(ctx)[table]


class LanguageReportBuilder:
    def __init__(self) -> None:
        # Join match rates and exact cells computed by plan (before the charge), used by the
        # draw: each is a pass over the base rows.
        self._rates: dict[str, dict[str, float]] = {}
        self._cells: dict[str, dict[str, pl.DataFrame]] = {}

    def extra_inputs(self, home: Home, spec: ProductSpec, options: BuildOptions) -> list[InputRef]:
        return []

    def reversible_outputs(self, spec: ProductSpec) -> bool:
        return False

    def plan(self, ctx: BuildContext) -> None:
        spec = ctx.spec
        qc.check(spec, ctx.catalog)
        for name, lf in _plans(ctx).items():
            cols = set(lf.collect_schema().names())  # resolves every column, reads no data
            t = next(t for t in spec.tables if t.name == name)
            missing = [
                c for c in [*t.by, *(m.field for m in t.measures if m.field)] if c not in cols
            ]
            if missing:  # pragma: no cover - _query_fits guarantees them
                raise ValidationError(
                    f"product {spec.id}: table {name} lacks {', '.join(missing)}",
                    hint="derive every dimension and declare every summed value",
                )
        cluster_rates = self._cluster_rates(ctx)
        if cluster_rates is not None or self._distributed(ctx):
            # The bounding runs on the workers: no driver pass over the rows.
            self._rates[ctx.release_id] = qc.require_match_rates(ctx, cluster_rates)
            return
        try:
            exact = exact_pass.compute(ctx)
        except pl.exceptions.PolarsError as exc:
            raise _rows_do_not_fit(ctx, exc) from exc
        self._rates[ctx.release_id] = qc.require_match_rates(ctx, exact.rates)
        self._cells[ctx.release_id] = exact.cells

    def _distributed(self, ctx: BuildContext) -> bool:
        return choose(ctx, self, ctx.options.cluster).distributed

    def _cluster_rates(self, ctx: BuildContext) -> dict[str, float] | None:
        """The join match rates counted per co-partition on the cluster when the build runs
        there (the counts add up: the joins are on the partitioning fields); else None."""
        if not qc.query_of(ctx.spec).joins:
            return None
        placement = choose(ctx, self, ctx.options.cluster)
        if not placement.distributed:
            return None
        from scaleout.backends import open_backend
        from scaleout.driver import match_counts

        with open_backend(placement.setting, ctx.home) as backend:
            return qc.rates_of(*match_counts(ctx, backend))

    def match_rates(self, release_id: str) -> dict[str, float]:
        """The join match rates ``plan`` computed for ``release_id``."""
        return self._rates.get(release_id, {})

    def exact_cells(self, release_id: str) -> dict[str, pl.DataFrame]:
        """The exact cells ``plan`` computed for ``release_id`` (taken: used by one draw)."""
        return self._cells.pop(release_id, {})

    def draw(self, ctx: BuildContext) -> Draw:
        rates = self._rates.pop(ctx.release_id, None)
        cells = self._cells.pop(ctx.release_id, None)
        try:
            if cells is None:  # plan not run by this builder: one pass now
                cells = exact_pass.compute(ctx).cells
            rest = [t.name for t in ctx.spec.tables if t.name not in cells]
            frames = bounded_frames(ctx, rest) if rest else {}
        except pl.exceptions.PolarsError as exc:
            # No noise has been drawn yet: a refusal, so the engine voids the charge instead
            # of keeping a charge that no draw will ever use.
            raise _rows_do_not_fit(ctx, exc) from exc
        return measure(ctx, frames, rates, cells)

    def bounding_plans(self, ctx: BuildContext) -> dict[str, BoundingPlan]:
        """Per table its bounding plan, for a build whose bounding runs on a cluster
        (``scaleout.placement``); ``measure`` then draws over the bounded parts."""
        return {
            t.name: BoundingPlan(partial(table_plan, t.name), qc.UNIT_COL) for t in ctx.spec.tables
        }

    def measure(self, ctx: BuildContext, frames: dict[str, pl.LazyFrame]) -> Draw:
        return measure(ctx, frames, self._rates.get(ctx.release_id))

    def partitionwise(self, ctx: BuildContext) -> str | None:
        """Per co-partition equals whole data when the base is partitioned on the privacy
        unit (the caps are per unit) and every join is on both sides' partitioning field
        (part *i* of one input meets only part *i* of the other)."""
        spec, q = ctx.spec, qc.query_of(ctx.spec)
        assert spec.privacy_unit is not None
        on = partitioned_on(ctx.inputs)
        if on.get(q.base) != spec.privacy_unit.field:
            return f"{q.base} is partitioned on {on.get(q.base)}, not the unit"
        off = [
            f"{q.base}.{j.key} = {j.resource}.{j.field or j.key}"
            for j in q.joins
            if j.key != on[q.base] or (j.field or j.key) != on.get(j.resource)
        ]
        return f"join(s) not on the partitioning field: {'; '.join(off)}" if off else None

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
        return finish(ctx, draw, stage)


def bounded_frames(ctx: BuildContext, tables: list[str] | None = None) -> dict[str, pl.LazyFrame]:
    """Each table's (or each of ``tables``') per-unit bounded cells, sunk with the streaming
    engine to the build's work directory without the unit identifier, and scanned back.

    All tables' sinks run in one ``collect_all``, so polars scans and joins the inputs once
    for all of them (common sub-plan elimination) instead of once per table.
    """
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in ctx.spec.tables if tables is None or t.name in tables]
    paths = {name: ctx.workdir / f"{name}.parquet" for name in names}
    sinks = [
        lf.drop(qc.UNIT_COL).sink_parquet(paths[name], lazy=True)
        for name, lf in _plans(ctx).items()
        if name in paths
    ]
    pl.collect_all(sinks, engine="streaming")
    return {name: pl.scan_parquet(path) for name, path in paths.items()}


def measure(
    ctx: BuildContext,
    frames: dict[str, pl.LazyFrame],
    rates: dict[str, float] | None = None,
    cells: dict[str, pl.DataFrame] | None = None,
) -> Draw:
    """One OpenDP measurement per table over its public key set: of its exact ``cells`` when
    given (counts and sums), else of its bounded frame."""
    spec = ctx.spec
    assert spec.budget is not None and spec.privacy_unit is not None
    cells = cells or {}
    plans = _plans(ctx) if any(t.name not in frames for t in spec.tables) else {}
    queries = [
        TableQuery(
            name=t.name,
            # with cells, the frame is only the schema the measurement is calibrated on
            frame=frames[t.name] if t.name in frames else plans[t.name].drop(qc.UNIT_COL),
            by=list(t.by),
            keys=specs.key_frame(spec, list(t.by)),
            measures=[mechanism_measure(m) for m in t.measures],
            weight=t.weight,
            cells=cells.get(t.name),
            # ``qc.bounded`` / ``qc.unit_first`` keep one row per unit and cell
            rows_per_cell=1,
        )
        for t in spec.tables
    ]
    draws = release_tables(
        queries,
        rho=spec.budget.zcdp_rho,
        contributions=spec.privacy_unit.contributions,
        max_units=spec.privacy_unit.max_units,
        alpha=spec.alpha,
    )
    return Draw(
        tables={d.name: d.frame for d in draws},
        meta={
            "noise": {d.name: [n.to_dict() for n in d.noise] for d in draws},
            "rho": {d.name: d.rho for d in draws},
            "match_rates": qc.match_rates(ctx) if rates is None else rates,
        },
    )


def finish(ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
    spec = ctx.spec
    results = finish_tables(ctx, draw)
    files: list[Any] = []
    for r in results:
        files += outputs.write_table(
            stage,
            r.name,
            r.frame,
            list(spec.outputs.formats),
            "dp_aggregate",
            r.descriptions,
            lineage(spec, r),
        )
    accuracy = [c for r in results for c in r.accuracy]
    suppressed = [c for r in results for c in r.suppressed]
    if "html" in spec.outputs.formats:
        html = report.render_stat_report(ctx, results, accuracy, draw.meta)
        files.append(outputs.html_output(stage, "report", html, "dp_aggregate"))
    derived = {"report": [r.name for r in results]} if "html" in spec.outputs.formats else {}
    rates = draw.meta.get("match_rates", {})
    notes = [f"{code} 匹配率 match rate {rate:.2%}" for code, rate in sorted(rates.items())]
    notes.append(
        "Rows whose keys are outside the public key sets are not counted; counts are "
        "distinct units per cell."
    )
    return Finished(
        outputs=files,
        accuracy=accuracy,
        suppressed=suppressed,
        contribution_bounds=contribution_bounds(spec),
        derived_from=derived,
        notes=notes,
    )


def contribution_bounds(spec: ProductSpec) -> list[ContributionBound]:
    q = qc.query_of(spec)
    assert spec.privacy_unit is not None
    k = spec.privacy_unit.contributions
    cap = q.bounding.max_rows_per_unit
    pre = f"at most {cap} rows per unit, then " if cap else ""
    out = [
        ContributionBound(
            resource=q.base,
            measure="count",
            source_field=spec.privacy_unit.field,
            reduction=f"{pre}one row per unit and cell, at most {k} cells per unit per table",
            max_rows_per_unit=k,
        )
    ]
    for v in q.values:
        code, name = qc.qualify(q, v.field) if v.field else (q.base, spec.privacy_unit.field)
        out.append(
            ContributionBound(
                resource=code,
                measure=v.name,
                source_field=name,
                reduction=f"per unit and cell: {v.per_unit}, clipped",
                lower=v.bounds[0],
                upper=v.bounds[1],
                max_rows_per_unit=k,
            )
        )
    return out


def lineage(spec: ProductSpec, r: TableResult) -> dict[str, ColumnLineage]:
    """Every output column: its source fields (``CODE.field``) and its derivation."""
    q = qc.query_of(spec)
    assert spec.privacy_unit is not None
    unit = f"{q.base}.{spec.privacy_unit.field}"
    conditions = [f"{qc.col_name(q, f.field)} {f.op} {f.value}" for f in q.filters]
    if q.period_field:
        conditions.append(f"{qc.col_name(q, q.period_field)} in {spec.reference_period}")
    joins = [f"{q.base}.{j.key} = {j.resource}.{j.field or j.key}" for j in q.joins]
    table = next(t for t in spec.tables if t.name == r.name)
    derive = {d.dimension: d for d in q.derive}
    measures = {m.name: m for m in table.measures}
    derived = {d.name: d for d in table.derived}

    def measure_sources(name: str) -> tuple[list[str], dict[str, Any]]:
        m = measures[name]
        if m.aggregate == "count":
            return [unit], {"aggregate": "count of distinct units"}
        v = q.value(m.field or "")
        src = [qc.col_name(q, v.field)] if v.field else [unit]
        if m.aggregate == "quantile":
            return src, {
                "aggregate": f"DP {m.quantile:g}-quantile of per-unit {v.per_unit}",
                "candidates": [min(m.candidates or [0]), max(m.candidates or [0])],
            }
        return src, {"aggregate": f"sum of per-unit {v.per_unit}", "bounds": list(v.bounds)}

    out: dict[str, ColumnLineage] = {}
    for c in r.frame.columns:
        base = c.removesuffix("_name").removesuffix("_ci95")
        if base in derive:
            d = derive[base]
            params: dict[str, Any] = {"derive": d.as_, "keys": "public key set of the spec"}
            if d.mapping:
                params["mapping"] = d.mapping
            out[c] = ColumnLineage(
                sources=[qc.col_name(q, d.field)], operator="public_key", params=params
            )
        elif base in measures:
            src, params = measure_sources(base)
            params |= {"conditions": conditions, "joins": joins}
            if c.endswith("_ci95"):
                params["of"] = base
            out[c] = ColumnLineage(sources=src, operator="dp_aggregate", params=params)
        elif base in derived:
            d2 = derived[base]
            src = sorted({s for op in d2.operands for s in measure_sources(op)[0]})
            out[c] = ColumnLineage(
                sources=src,
                operator="dp_aggregate",
                params={"derived": d2.op, "of": list(d2.operands)},
            )
        else:  # suppressed / suppression_reason: from the released values only
            out[c] = ColumnLineage(sources=[], operator="post_processing")
    return out
