"""Compile a spec's ``query`` to polars LazyFrame plans: rows → per-unit bounded cells.

``check`` refuses (before any charge) an unknown or undeclared field, a join that is neither on
the privacy unit nor on a catalog ``references`` field, a dimension word without what it needs,
and an unknown code-list mapping. ``match_rates`` reads the join keys (and nothing else) so the
engine can refuse a join below its floor before the charge. ``rows`` is the filtered, joined
row plan with one key column per dimension; ``bounded`` reduces it, per table, to at most
``privacy_unit.contributions`` cells per unit with each value pre-aggregated per unit and
clipped. Columns are named ``CODE.field`` inside the plan so joined fields never collide.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.product_language import FilterSpec, QuerySpec, ValueSpec, quantile_problems
from catalogs.product_models import ProductSpec, TableSpec
from products import specs
from products.language import vocabulary
from shuyu_core.errors import NotFoundError, ValidationError

if TYPE_CHECKING:  # the engine imports the builders
    from products.engine import BuildContext

UNIT_COL = "__unit"


def query_of(spec: ProductSpec) -> QuerySpec:
    if spec.query is None:  # pragma: no cover - the registry routes only specs with a query
        raise ValidationError(f"product {spec.id} has no query", hint="add a query section")
    return spec.query


def qualify(q: QuerySpec, ref: str) -> tuple[str, str]:
    """``CODE.field`` → (CODE, field); a bare field belongs to the base resource."""
    code, dot, name = ref.partition(".")
    return (code, name) if dot else (q.base, ref)


def col_name(q: QuerySpec, ref: str) -> str:
    code, name = qualify(q, ref)
    return f"{code}.{name}"


def referenced_fields(spec: ProductSpec) -> list[str]:
    """Every ``CODE.field`` the query reads (for checks and lineage)."""
    q = query_of(spec)
    refs: list[str] = [f.field for f in q.filters]
    refs += [d.field for d in q.derive]
    refs += [v.field for v in q.values if v.field]
    if q.period_field:
        refs.append(q.period_field)
    out = [col_name(q, r) for r in refs]
    out += [f"{q.base}.{j.key}" for j in q.joins]
    out += [f"{j.resource}.{j.field or j.key}" for j in q.joins]
    assert spec.privacy_unit is not None
    out.append(f"{q.base}.{spec.privacy_unit.field}")
    return list(dict.fromkeys(out))


def _refuse(spec: ProductSpec, problems: list[str]) -> None:
    if problems:
        raise ValidationError(
            f"product {spec.id}: " + "; ".join(problems),
            hint="correct the query section (docs/products.md, 'The product language')",
        )


def check(spec: ProductSpec, catalog: Catalog) -> None:
    """Static refusals: fields, joins, dimension words, mappings (nothing is read)."""
    q = query_of(spec)
    assert spec.privacy_unit is not None
    problems: list[str] = []
    declared = spec.declared_fields
    if q.base not in declared:
        problems.append(f"query base {q.base} is not a declared input")
    for j in q.joins:
        if j.resource not in declared:
            problems.append(f"joined resource {j.resource} is not a declared input")
    reachable = {q.base, *(j.resource for j in q.joins)}
    for ref in referenced_fields(spec):
        code, name = ref.split(".", 1)
        if code not in reachable:
            problems.append(f"field {ref} is read but {code} is neither the base nor joined")
            continue
        res = catalog.resources.get(code)
        if res is None or name not in res.field_names:
            problems.append(f"unknown field {ref} (not in the catalog)")
        elif name not in declared.get(code, []):
            problems.append(f"field {ref} is read but not declared under inputs (最小必要)")
    if spec.privacy_unit.field not in declared.get(q.base, []):
        problems.append(f"the base {q.base} must carry the privacy unit {spec.privacy_unit.field}")
    for j in q.joins:
        problems += _join_problems(spec, catalog, q, j.resource, j.key, j.field or j.key)
    # Again here (also at spec validation): a spec object built around the validators.
    problems += quantile_problems(spec.tables, {v.name: v for v in q.values})
    for d in q.derive:
        try:
            dim = spec.dimension(d.dimension)
        except KeyError:
            problems.append(f"dimension {d.dimension} is derived but not declared")
            continue
        if vocabulary.needs_bands(d) and dim.bands is None:
            problems.append(f"dimension {d.dimension}: as {d.as_} needs bands as its key set")
        if d.as_ == "map" and d.mapping is not None:
            try:
                vocabulary.mapping(d.mapping)
            except NotFoundError as exc:
                problems.append(exc.message)
    _refuse(spec, problems)


def _join_problems(
    spec: ProductSpec, catalog: Catalog, q: QuerySpec, code: str, on: str, field: str
) -> list[str]:
    base, other = catalog.resources.get(q.base), catalog.resources.get(code)
    if base is None or other is None:
        return []
    unit = spec.privacy_unit.field if spec.privacy_unit else None
    on_unit = on == base.privacy_unit == unit and field == other.privacy_unit
    ref = next((f.rules.references for f in base.fields if f.name == on), None)
    on_reference = ref is not None and ref.resource == code and ref.field == field
    if on_unit or on_reference:
        return []
    return [
        f"join {q.base}.{on} = {code}.{field} is neither on the privacy unit nor on a catalog "
        "references field"
    ]


def _lit(value: Any, dtype: pl.DataType) -> Any:
    if dtype == pl.Date and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def _filter(f: FilterSpec, col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    v = f.value
    if f.op == "not_null":
        return col.is_not_null()
    if f.op in ("in", "not_in"):
        assert isinstance(v, list)
        inside = col.is_in([_lit(x, dtype) for x in v])
        return inside if f.op == "in" else ~inside
    lit = pl.lit(_lit(v, dtype))
    ops = {
        "eq": col == lit,
        "ne": col != lit,
        "lt": col < lit,
        "le": col <= lit,
        "gt": col > lit,
        "ge": col >= lit,
    }
    return ops[f.op]


def _period(col: pl.Expr, dtype: pl.DataType, start: dt.date, end: dt.date) -> pl.Expr:
    if dtype == pl.String:  # YYYYMM or YYYY-MM text: compare the month
        ym = col.str.replace_all("-", "").str.slice(0, 6)
        return ym.is_between(pl.lit(start.strftime("%Y%m")), pl.lit(end.strftime("%Y%m")))
    if dtype == pl.Datetime:
        return col.dt.date().is_between(start, end)
    return col.is_between(start, end)


def _scan(ctx: BuildContext, code: str) -> pl.LazyFrame:
    lf = ctx.scan(code)
    return lf.rename({c: f"{code}.{c}" for c in lf.collect_schema().names()})


def _base(ctx: BuildContext) -> pl.LazyFrame:
    """Base rows after the filters on base fields and the reference period."""
    spec, q = ctx.spec, query_of(ctx.spec)
    lf = _scan(ctx, q.base)
    schema = lf.collect_schema()
    conds = []
    for f in q.filters:
        name = col_name(q, f.field)
        if name in schema:
            conds.append(_filter(f, pl.col(name), schema[name]))
    if q.period_field:
        assert spec.reference_period is not None
        name = col_name(q, q.period_field)
        conds.append(_period(pl.col(name), schema[name], *spec.reference_period))
    return lf.filter(*conds) if conds else lf


def _joined(ctx: BuildContext, code: str, field: str) -> pl.LazyFrame:
    """The joined resource reduced to one row per join key (duplicates reduced to one)."""
    q = query_of(ctx.spec)
    lf = _scan(ctx, code)
    schema = lf.collect_schema()
    conds = [
        _filter(f, pl.col(col_name(q, f.field)), schema[col_name(q, f.field)])
        for f in q.filters
        if qualify(q, f.field)[0] == code
    ]
    lf = lf.filter(*conds) if conds else lf
    key = f"{code}.{field}"
    return lf.filter(pl.col(key).is_not_null()).unique(subset=[key], keep="any")


def match_rates(ctx: BuildContext) -> dict[str, float]:
    """Share of base rows (after filters and period) whose join key finds a row, per join.

    Reads the join keys only; a base without rows has nothing to lose (rate 1).
    """
    q = query_of(ctx.spec)
    base = _base(ctx)
    total = base.select(pl.len()).collect().item()
    out: dict[str, float] = {}
    for j in q.joins:
        field = j.field or j.key
        keys = _joined(ctx, j.resource, field).select(pl.col(f"{j.resource}.{field}"))
        found = (
            base.select(pl.col(f"{q.base}.{j.key}"))
            .join(keys, left_on=f"{q.base}.{j.key}", right_on=f"{j.resource}.{field}", how="semi")
            .select(pl.len())
            .collect()
            .item()
        )
        out[j.resource] = 1.0 if total == 0 else found / total
    return out


def require_match_rates(ctx: BuildContext) -> dict[str, float]:
    q = query_of(ctx.spec)
    rates = match_rates(ctx)
    low = [
        f"{j.resource} matches {rates[j.resource]:.1%} of {q.base} rows, below the floor "
        f"{j.min_match_rate:.0%}"
        for j in q.joins
        if rates[j.resource] < j.min_match_rate
    ]
    if low:
        raise ValidationError(
            f"product {ctx.spec.id}: join match rate too low: " + "; ".join(low),
            hint="check the snapshots (same extraction date?), or lower min_match_rate "
            "in a new version",
        )
    return rates


def rows(ctx: BuildContext) -> pl.LazyFrame:
    """Filtered, joined rows: the unit, one key column per dimension, the value fields."""
    spec, q = ctx.spec, query_of(ctx.spec)
    assert spec.privacy_unit is not None and spec.reference_period is not None
    lf = _base(ctx)
    for j in q.joins:
        field = j.field or j.key
        lf = lf.join(
            _joined(ctx, j.resource, field),
            left_on=f"{q.base}.{j.key}",
            right_on=f"{j.resource}.{field}",
            how="inner",
        )
    schema = lf.collect_schema()
    unit = f"{q.base}.{spec.privacy_unit.field}"
    lf = lf.filter(pl.col(unit).is_not_null())
    if q.bounding.max_rows_per_unit is not None:
        lf = lf.group_by(unit).head(q.bounding.max_rows_per_unit)
    end = spec.reference_period[1]
    keys = [
        vocabulary.derive(
            d,
            pl.col(col_name(q, d.field)),
            schema[col_name(q, d.field)],
            spec.dimension(d.dimension),
            end,
        ).alias(d.dimension)
        for d in q.derive
    ]
    # Several values may read one field (a sum and a mean of the same cost): select it once.
    fields = dict.fromkeys(col_name(q, v.field) for v in q.values if v.field)
    return lf.select(pl.col(unit).alias(UNIT_COL), *keys, *(pl.col(f) for f in fields))


def _per_unit(q: QuerySpec, v: ValueSpec) -> pl.Expr:
    if v.per_unit == "rows":
        agg = pl.len().cast(pl.Float64)
    else:
        assert v.field is not None
        c = pl.col(col_name(q, v.field)).cast(pl.Float64)
        agg = {"sum": c.sum(), "mean": c.mean(), "max": c.max()}[v.per_unit]
    return agg.fill_null(0.0).clip(v.bounds[0], v.bounds[1]).alias(v.name)


def unit_first(ctx: BuildContext, table: TableSpec) -> pl.LazyFrame | None:
    """The bounded cells of ``table`` computed unit-first, when that is the same result:
    every dimension comes from a resource joined on the privacy unit and every value from
    the base. Then the base rows are reduced to one row per unit *before* the join (as a
    hand-written polars query would), instead of joining every row. None otherwise."""
    spec, q = ctx.spec, query_of(ctx.spec)
    assert spec.privacy_unit is not None and spec.reference_period is not None
    summed = sorted({m.field for m in table.measures if m.field})
    values = [q.value(n) for n in summed]
    if not one_cell_per_unit(spec, table) or any(
        v.field and qualify(q, v.field)[0] != q.base for v in values
    ):
        return None
    unit = f"{q.base}.{spec.privacy_unit.field}"
    base = _base(ctx).filter(pl.col(unit).is_not_null())
    if q.bounding.max_rows_per_unit is not None:
        base = base.group_by(unit).head(q.bounding.max_rows_per_unit)
    lf = base.group_by(unit).agg([_per_unit(q, v) for v in values] or [pl.len().alias("__rows")])
    for j in q.joins:
        field = j.field or j.key
        lf = lf.join(
            _joined(ctx, j.resource, field),
            left_on=f"{q.base}.{j.key}",
            right_on=f"{j.resource}.{field}",
            how="inner",
        )
    schema = lf.collect_schema()
    end = spec.reference_period[1]
    derive = {d.dimension: d for d in q.derive}
    keys = [
        vocabulary.derive(
            derive[b],
            pl.col(col_name(q, derive[b].field)),
            schema[col_name(q, derive[b].field)],
            spec.dimension(b),
            end,
        ).alias(b)
        for b in table.by
    ]
    inside = [pl.col(b).is_in(specs.dimension_keys(spec.dimension(b))) for b in table.by]
    return lf.select(pl.col(unit).alias(UNIT_COL), *keys, *summed).filter(*inside)


def bounded(spec: ProductSpec, all_rows: pl.LazyFrame, table: TableSpec) -> pl.LazyFrame:
    """One row per (unit, cell) of ``table``, at most ``contributions`` cells per unit.

    Rows whose keys fall outside the public key sets are dropped *before* the cells are
    capped, so they never use up a unit's cells.
    """
    q = query_of(spec)
    assert spec.privacy_unit is not None
    by = list(table.by)
    inside = [pl.col(b).is_in(specs.dimension_keys(spec.dimension(b))) for b in by]
    summed = sorted({m.field for m in table.measures if m.field})
    aggs = [_per_unit(q, q.value(name)) for name in summed]
    cells = (
        all_rows.filter(*inside).group_by([UNIT_COL, *by]).agg(aggs or [pl.len().alias("__rows")])
    )
    if not one_cell_per_unit(spec, table):
        cells = cells.group_by(UNIT_COL).head(spec.privacy_unit.contributions)
    return cells.select([UNIT_COL, *by, *summed])


def one_cell_per_unit(spec: ProductSpec, table: TableSpec) -> bool:
    """Every dimension of ``table`` comes from a resource joined on the privacy unit (one row
    per unit after the join's reduction), so each unit has exactly one cell by construction
    and the per-unit cap (a second group-by over the units) can be skipped."""
    q = query_of(spec)
    assert spec.privacy_unit is not None
    unit = spec.privacy_unit.field
    per_unit = {j.resource for j in q.joins if j.key == unit and (j.field or j.key) == unit}
    derive = {d.dimension: d for d in q.derive}
    return all(qualify(q, derive[b].field)[0] in per_unit for b in table.by)
