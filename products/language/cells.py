"""Every table's exact per-cell aggregates in one streaming pass, with the join match rates.

OpenDP adds the noise to counts and sums per cell (``privacy.dp.mechanisms``), so a report
whose tables hold only counts and sums never needs its per-unit bounded frame on disk or in
memory: polars' streaming engine reduces the filtered input rows per unit, joins, derives the
public keys, caps the cells per unit, and groups into the (small) cells in one ``collect_all``
for all tables. The bounding is the compiler's (``compile.unit_first`` / ``compile.bounded``):
same per-unit values, same clipping, same caps.

When every join is on the privacy unit and no raw-row cap is declared, the tables that are
computed unit-first share one per-unit frame, left-joined to every joined resource with a
"matched" flag. The join match rates are not taken from it (they would be rates over the
spec's selection): ``compile.match_rates`` counts them over the whole snapshots.

When the inputs are co-partitioned on the unit (``shuyu ingest --partitions N``) the pass runs
part by part and the partial cells and row counts are added up: a unit's rows are all in one
part, so per-unit bounding per part is the whole bounding, and memory is that of one part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from catalogs.product_models import TableSpec
from privacy.dp.mechanisms import (
    Measure,
    aggregable,
    exact_cells,
    integer_bounds,
    mechanism_measure,
)
from products import specs
from products.language import compile as qc
from products.language import vocabulary
from shuyu_core import snapshots

if TYPE_CHECKING:
    from products.engine import BuildContext

_ROWS = "__rows_of_unit"
_UNITS = "__units"


def _matched(i: int) -> str:
    return f"__matched_{i}"


@dataclass
class Exact:
    """The pass's result: exact cells per aggregable table, and the join match rates over the
    whole snapshots (empty without joins)."""

    cells: dict[str, pl.DataFrame]
    rates: dict[str, float]


def aggregable_tables(ctx: BuildContext) -> list[TableSpec]:
    return [t for t in ctx.spec.tables if aggregable([mechanism_measure(m) for m in t.measures])]


def _joins_on_unit(ctx: BuildContext) -> bool:
    q = qc.query_of(ctx.spec)
    assert ctx.spec.privacy_unit is not None
    unit = ctx.spec.privacy_unit.field
    return all(j.key == unit and (j.field or j.key) == unit for j in q.joins)


def _summed(table: TableSpec) -> list[str]:
    return sorted({m.field for m in table.measures if m.field})


def _unit_first_tables(ctx: BuildContext, tables: list[TableSpec]) -> list[TableSpec]:
    """The tables ``compile.unit_first`` computes per unit before the join."""
    q = qc.query_of(ctx.spec)
    return [
        t
        for t in tables
        if qc.one_cell_per_unit(ctx.spec, t)
        and all(_from_base(q, n) for n in _summed(t))
        and _joins_on_unit(ctx)
    ]


def _from_base(q: qc.QuerySpec, value: str) -> bool:
    v = q.value(value)
    return not v.field or qc.qualify(q, v.field)[0] == q.base


def folds_rates(ctx: BuildContext) -> bool:
    """The match rates come out of the shared per-unit frame (see the module doc)."""
    q = qc.query_of(ctx.spec)
    shared = _unit_first_tables(ctx, aggregable_tables(ctx))
    return bool(q.joins) and bool(shared) and q.bounding.max_rows_per_unit is None


def _shared_unit_frame(ctx: BuildContext, tables: list[TableSpec], fold: bool) -> pl.LazyFrame:
    """One row per unit: the row count, every value the tables sum (per unit, clipped) and the
    joined fields, with a matched flag per join (left joins; ``fold`` keeps the rows of units
    without a match and of a null unit, for the rates)."""
    spec, q = ctx.spec, qc.query_of(ctx.spec)
    assert spec.privacy_unit is not None
    unit = f"{q.base}.{spec.privacy_unit.field}"
    base = qc._base(ctx)
    if not fold:
        base = base.filter(pl.col(unit).is_not_null())
        if q.bounding.max_rows_per_unit is not None:
            base = base.group_by(unit).head(q.bounding.max_rows_per_unit)
    values = sorted({n for t in tables for n in _summed(t)})
    lf = base.group_by(unit).agg(
        [qc._per_unit(q, q.value(n)) for n in values] + [pl.len().alias(_ROWS)]
    )
    for i, j in enumerate(q.joins):
        field = j.field or j.key
        right = qc._joined(ctx, j.resource, field).with_columns(pl.lit(True).alias(_matched(i)))
        lf = lf.join(right, left_on=unit, right_on=f"{j.resource}.{field}", how="left")
    return lf


def _sum_col(m: Measure) -> str:
    lo, hi = integer_bounds(m)
    return f"__sum|{m.field}|{lo}|{hi}"


def _unit_measures(tables: list[TableSpec]) -> list[Measure]:
    return [mechanism_measure(m) for t in tables for m in t.measures]


def _fine_cells(ctx: BuildContext, shared: pl.LazyFrame, tables: list[TableSpec]) -> pl.LazyFrame:
    """The shared per-unit frame grouped by every dimension of ``tables`` (raw derived keys)
    and the matched flags: units, base rows and each summed value (rounded, nulls as 0,
    clipped as ``exact_cells`` does) per group. One group-by after the join, so the per-unit
    frame is consumed once; each table's cells are re-aggregated from it in memory."""
    spec, q = ctx.spec, qc.query_of(ctx.spec)
    assert spec.privacy_unit is not None and spec.reference_period is not None
    schema = shared.collect_schema()
    derive = {d.dimension: d for d in q.derive}
    dims = list(dict.fromkeys(b for t in tables for b in t.by))
    end = spec.reference_period[1]
    keys = [
        vocabulary.derive(
            derive[b],
            pl.col(qc.col_name(q, derive[b].field)),
            schema[qc.col_name(q, derive[b].field)],
            spec.dimension(b),
            end,
        ).alias(b)
        for b in dims
    ]
    flags = [pl.col(_matched(i)).fill_null(False).alias(_matched(i)) for i in range(len(q.joins))]
    sums = {}
    for m in _unit_measures(tables):
        if m.aggregate == "sum":
            lo, hi = integer_bounds(m)
            v = pl.col(m.field).round(0).cast(pl.Int64).fill_null(0).clip(lo, hi)  # type: ignore[arg-type]
            sums[_sum_col(m)] = v.sum().cast(pl.Int64).alias(_sum_col(m))
    return shared.group_by([*keys, *flags]).agg(
        pl.len().cast(pl.Int64).alias(_UNITS),
        pl.col(_ROWS).sum().cast(pl.Int64).alias(_ROWS),
        *sums.values(),
    )


def _table_from_fine(ctx: BuildContext, fine: pl.DataFrame, table: TableSpec) -> pl.DataFrame:
    """``compile.unit_first`` then ``exact_cells`` of ``table``: units matched by every join,
    keys inside the public sets, counts and sums added up per cell."""
    spec, q = ctx.spec, qc.query_of(ctx.spec)
    matched = [pl.col(_matched(i)) for i in range(len(q.joins))]
    inside = [pl.col(b).is_in(specs.dimension_keys(spec.dimension(b))) for b in table.by]
    aggs = [
        (pl.col(_UNITS) if m.aggregate == "count" else pl.col(_sum_col(m)))
        .sum()
        .cast(pl.Int64)
        .alias(m.name)
        for m in (mechanism_measure(x) for x in table.measures)
    ]
    return fine.filter(*matched, *inside).group_by(list(table.by)).agg(aggs)


def _cells(bounded: pl.LazyFrame, table: TableSpec) -> pl.LazyFrame:
    return exact_cells(bounded, list(table.by), [mechanism_measure(m) for m in table.measures])


def plans(ctx: BuildContext) -> tuple[pl.LazyFrame | None, dict[str, pl.LazyFrame]]:
    """The fine cells of the tables computed unit-first (None if none), and the cells plan of
    every other aggregable table (the compiler's row plan, capped per unit)."""
    tables = aggregable_tables(ctx)
    shared_tables = _unit_first_tables(ctx, tables)
    fine = None
    if shared_tables:
        shared = _shared_unit_frame(ctx, shared_tables, folds_rates(ctx))
        fine = _fine_cells(ctx, shared, shared_tables)
    rest: dict[str, pl.LazyFrame] = {}
    others = [t for t in tables if t not in shared_tables]
    if others:
        rows = qc.rows(ctx)
        for t in others:
            rest[t.name] = _cells(qc.bounded(ctx.spec, rows, t).drop(qc.UNIT_COL), t)
    return fine, rest


def _collect(ctx: BuildContext) -> tuple[pl.DataFrame | None, dict[str, pl.DataFrame]]:
    fine, rest = plans(ctx)
    queries = [*([fine] if fine is not None else []), *rest.values()]
    frames = pl.collect_all(queries, engine="streaming") if queries else []
    if fine is not None:
        return frames[0], dict(zip(rest, frames[1:], strict=True))
    return None, dict(zip(rest, frames, strict=True))


def _co_partitions(ctx: BuildContext) -> int:
    """The common part count when every input is hash-partitioned on the unit alike and every
    join is on the unit (each unit's rows and joined rows in part *i*); else 1."""
    layouts = {
        (m.partitioning.count, m.partitioning.scheme) if m.partitioning else None
        for m in ctx.inputs.values()
    }
    if None in layouts or len(layouts) != 1 or not _joins_on_unit(ctx):
        return 1
    count, _scheme = next(iter(layouts))  # type: ignore[misc]
    return int(count)


def compute(ctx: BuildContext) -> Exact:
    """The exact cells of every aggregable table (and the match rates when they fold)."""
    parts = _co_partitions(ctx)
    q = qc.query_of(ctx.spec)
    if parts <= 1:
        fine, rest = _collect(ctx)
        counts = qc.match_counts(ctx) if q.joins else None
    else:
        fine, rest, counts = _by_part(ctx, parts)
    cells = dict(rest)
    shared_tables = _unit_first_tables(ctx, aggregable_tables(ctx))
    if fine is not None:
        for t in shared_tables:
            cells[t.name] = _table_from_fine(ctx, fine, t)
    # The match rates are never folded out of the cells' pass: it reads the rows the spec
    # selects (filters, period), and a rate over a selection is a free exact oracle before the
    # charge (are these few persons in the registry?). They are counted over the whole
    # snapshots (``compile.match_counts``), part by part when the inputs are co-partitioned.
    rates: dict[str, float] = qc.rates_of(*counts) if counts is not None else {}
    return Exact(
        cells={t.name: cells[t.name] for t in ctx.spec.tables if t.name in cells}, rates=rates
    )


def _by_part(
    ctx: BuildContext, parts: int
) -> tuple[pl.DataFrame | None, dict[str, pl.DataFrame], tuple[int, dict[str, int]] | None]:
    """``_collect`` part by part (the parts verified with their snapshots), added up: counts,
    row counts and sums add over parts because each unit is in exactly one part."""
    from products.engine import BuildContext

    for code in ctx.inputs:
        # The parts are read directly below: ctx.scan runs the integrity check (SM3 of the
        # parts) unless the engine is running it meanwhile (BuildContext.checking).
        ctx.scan(code)
    paths = {code: snapshots.part_paths(ctx.home, m) for code, m in ctx.inputs.items()}
    partial: list[tuple[pl.DataFrame | None, dict[str, pl.DataFrame]]] = []
    counted: list[tuple[int, dict[str, int]]] = []
    q = qc.query_of(ctx.spec)
    for i in range(parts):

        class PartContext(BuildContext):
            index = i

            def scan(self, code: str) -> pl.LazyFrame:
                cols = self.spec.input(code).fields
                return pl.scan_parquet(paths[code][self.index]).select(cols)

        part_ctx = PartContext(
            ctx.home,
            ctx.spec,
            ctx.catalog,
            ctx.inputs,
            ctx.release_id,
            ctx.options,
            ctx.extra_inputs,
        )
        partial.append(_collect(part_ctx))
        if q.joins:
            counted.append(qc.match_counts(part_ctx))

    fine = None
    if partial[0][0] is not None:
        # Fine cells: keys are the dimensions and the matched flags, the rest are additive.
        frames = [p[0] for p in partial if p[0] is not None]
        flags = {_matched(i) for i in range(len(qc.query_of(ctx.spec).joins))}
        added = [c for c in frames[0].columns if c.startswith("__") and c not in flags]
        keys = [c for c in frames[0].columns if c not in added]
        fine = pl.concat(frames).group_by(keys).agg(pl.col(added).sum())
    rest: dict[str, pl.DataFrame] = {}
    for t in ctx.spec.tables:
        if t.name in partial[0][1]:
            frames = [p[1][t.name] for p in partial]
            rest[t.name] = (
                pl.concat(frames)
                .group_by(list(t.by))
                .agg(pl.col([m.name for m in t.measures]).sum())
            )
    return fine, rest, _added(counted) if q.joins else None


def _added(counted: list[tuple[int, dict[str, int]]]) -> tuple[int, dict[str, int]]:
    """Match counts of the co-partitions added up (each key and its match in one part)."""
    found: dict[str, int] = {}
    for _total, per in counted:
        for code, n in per.items():
            found[code] = found.get(code, 0) + n
    return sum(t for t, _ in counted), found
