"""Compile a spec's ``query`` to polars LazyFrame plans: rows → per-unit bounded cells.

``check`` refuses (before any charge) an unknown or undeclared field, a join that is neither on
the privacy unit nor on a catalog ``references`` field, a dimension word without what it needs,
an unknown code-list mapping, field types that do not fit their use, keys a word cannot
produce, identifiers as keys or selectors. ``match_rates`` reads the join keys of the whole
snapshots (and nothing else) so the engine can refuse a join below its floor before the
charge. ``rows`` is the filtered, joined row plan with one key column per dimension;
``bounded`` reduces it, per table, to at most ``privacy_unit.contributions`` cells per unit
with each value pre-aggregated per unit and clipped. Columns are named ``CODE.field`` inside
the plan so joined fields never collide.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.models import FieldSpec
from catalogs.product_language import FilterSpec, QuerySpec, ValueSpec, quantile_problems
from catalogs.product_models import ProductSpec, TableSpec
from catalogs.vocabulary import PiiType
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
    if not problems:  # the fields exist: their catalogued types and roles can be judged
        problems += typing_problems(spec, catalog)
        problems += key_problems(spec)
    _refuse(spec, problems)


def _field(catalog: Catalog, q: QuerySpec, ref: str) -> FieldSpec:
    code, name = qualify(q, ref)
    return catalog.get(code).field(name)


_DATES = ("date", "datetime")
_NUMBERS = ("int", "float")
# What each vocabulary word reads (catalogued field types).
_WORD_TYPES: dict[str, tuple[str, ...]] = {
    "year": (*_DATES, "string"),
    "quarter": (*_DATES, "string"),
    "month": (*_DATES, "string"),
    "age_band": _DATES,
    "province": ("string", "int"),
    "prefecture": ("string", "int"),
    "county": ("string", "int"),
    "map": ("string",),
    "band": _NUMBERS,
    # A float's text ("3000.0") is no key anyone writes: amounts are grouped with bands.
    "value": ("string", "int", "bool", *_DATES),
}
# A date of birth may be generalized (age band, year, quarter, month); no other personal
# identifier may become a key, and none through ``value``.
_BIRTH_WORDS = ("age_band", "year", "quarter", "month")


def _literal_problem(f: FilterSpec, ftype: str, value: Any) -> str | None:
    if ftype in _NUMBERS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif ftype in _DATES:
        if not isinstance(value, str):
            ok = False
        else:
            try:
                dt.date.fromisoformat(value)
                ok = True
            except ValueError:
                return f"filter on {f.field}: {value!r} is not a date (YYYY-MM-DD)"
    elif ftype == "bool":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if ok:
        return None
    return f"filter on {f.field}: {f.op} compares a {ftype} field with {value!r}"


def typing_problems(spec: ProductSpec, catalog: Catalog) -> list[str]:
    """Each field fits its use (catalogued type), and no personal identifier becomes a key.

    Without this a mismatch fails only when the data is read, i.e. after the charge.
    """
    q = query_of(spec)
    out: list[str] = []
    for d in q.derive:
        fs = _field(catalog, q, d.field)
        ref = col_name(q, d.field)
        wanted = _WORD_TYPES.get(d.as_)
        if wanted is not None and fs.type not in wanted:
            kind = "a number" if wanted == _NUMBERS else ", ".join(wanted)
            out.append(f"dimension {d.dimension}: as {d.as_} needs {kind}, {ref} is {fs.type}")
        if fs.pii_type is not None and not (
            fs.pii_type == PiiType.DATE_OF_BIRTH and d.as_ in _BIRTH_WORDS
        ):
            out.append(
                f"dimension {d.dimension}: derived from {ref}, a personal identifier "
                f"({fs.pii_type.value}) — identifiers are counted, never keys"
            )
    summed = {m.field for t in spec.tables for m in t.measures if m.aggregate == "sum"}
    for v in q.values:
        if v.name in summed and any(b != int(b) for b in v.bounds):
            # Sums are released in whole units (each unit's value is rounded before the sum):
            # within fractional bounds the rounding would be most of the value.
            out.append(
                f"value {v.name}: bounds {list(v.bounds)} are not whole numbers, and sums are "
                "released in whole units (bound a finer unit, e.g. 元 not 万元)"
            )
        if v.field is None:
            continue
        fs = _field(catalog, q, v.field)
        if fs.type not in _NUMBERS:
            out.append(
                f"value {v.name}: {v.per_unit} needs a number, {col_name(q, v.field)} is {fs.type}"
            )
    if q.period_field is not None and qualify(q, q.period_field)[0] != q.base:
        out.append(
            f"period_field {col_name(q, q.period_field)} is not a field of the base {q.base}: "
            "the reference period selects the rows measured"
        )
    elif q.period_field is not None:
        fs = _field(catalog, q, q.period_field)
        if fs.type not in (*_DATES, "string"):
            out.append(
                f"period_field {col_name(q, q.period_field)} is {fs.type}: give a date or "
                "YYYYMM text field"
            )
    for f in q.filters:
        if f.op == "not_null":
            continue
        fs = _field(catalog, q, f.field)
        if fs.pii_type is not None and not (
            fs.pii_type == PiiType.DATE_OF_BIRTH and f.op in ("lt", "le", "gt", "ge")
        ):
            # ``公民身份号码 eq …`` would make the release about one person (and its free,
            # pre-charge checks an oracle about them); a birth date selects only by range.
            out.append(
                f"filter on {col_name(q, f.field)}: a personal identifier "
                f"({fs.pii_type.value}) may not select rows ({f.op}); only not_null, or a "
                "range (lt/le/gt/ge) on a birth date"
            )
            continue
        ftype = fs.type
        literals = f.value if isinstance(f.value, list) else [f.value]
        out += [p for p in (_literal_problem(f, ftype, x) for x in literals) if p]
    return out


_KEY_SHAPES: dict[str, re.Pattern[str]] = {
    "year": re.compile(r"^\d{4}$"),
    "quarter": re.compile(r"^\d{4}Q[1-4]$"),
    "month": re.compile(r"^\d{4}-(0[1-9]|1[0-2])$"),
    "province": re.compile(r"^\d{2}0000$"),
    "prefecture": re.compile(r"^\d{4}00$"),
    "county": re.compile(r"^\d{6}$"),
}


def _period_key(word: str, day: dt.date) -> str:
    if word == "year":
        return f"{day.year}"
    if word == "quarter":
        return f"{day.year}Q{(day.month - 1) // 3 + 1}"
    return f"{day.year}-{day.month:02d}"


def key_problems(spec: ProductSpec) -> list[str]:
    """Every public key can come out of its derivation. A key the word never produces (a
    county code under ``as: province``, a section under the ICD-10 mapping, a quarter
    outside the reference period of the period field) would be a cell of pure noise: a spec
    mistake, refused rather than released."""
    q = query_of(spec)
    out: list[str] = []
    for d in q.derive:
        dim = spec.dimension(d.dimension)
        if dim.bands is not None or d.as_ in ("value", "age_band", "band"):
            continue
        keys = specs.dimension_keys(dim)
        if d.as_ == "map":
            assert d.mapping is not None
            produced = {code for _lo, _hi, code in vocabulary.mapping(d.mapping)}
            never = [k for k in keys if k not in produced]
        else:
            never = [k for k in keys if not _KEY_SHAPES[d.as_].match(k)]
        if never:
            shown = ", ".join(never[:5]) + (" …" if len(never) > 5 else "")
            how = f"mapping {d.mapping}" if d.as_ == "map" else f"as {d.as_}"
            out.append(f"dimension {d.dimension}: {how} can never produce key(s) {shown}")
            continue
        if (
            q.period_field is not None
            and d.as_ in ("year", "quarter", "month")
            and (col_name(q, d.field) == col_name(q, q.period_field))
        ):
            assert spec.reference_period is not None
            first, last = (_period_key(d.as_, day) for day in spec.reference_period)
            outside = [k for k in keys if not first <= k <= last]
            if outside:
                shown = ", ".join(outside[:5]) + (" …" if len(outside) > 5 else "")
                out.append(
                    f"dimension {d.dimension}: key(s) {shown} lie outside the reference_period "
                    f"({first}..{last}) that {col_name(q, d.field)} is kept inside"
                )
    return out


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
    if not (on_unit or on_reference):
        return [
            f"join {q.base}.{on} = {code}.{field} is neither on the privacy unit nor on a "
            "catalog references field"
        ]
    # A reference to another privacy unit (an employee's employer, an enterprise's legal
    # representative) puts one unit of the joined resource behind many units of the base:
    # its contribution is bounded by nothing, and the ρ charged to it would not hold. So is
    # a reference from another field than the base's unit (its rows are not that unit's).
    if other.privacy_unit != unit:
        return [
            f"join {q.base}.{on} = {code}.{field}: {code} is protected per "
            f"{other.privacy_unit}, not per {unit} (the spec's privacy unit), so one of its "
            f"units would add to many {unit} cells unbounded"
        ]
    if on != unit:
        return [
            f"join {q.base}.{on} = {code}.{field}: the key is not the privacy unit {unit}, so "
            f"one {code} row would add to many units' cells unbounded"
        ]
    return []


def _lit(value: Any, dtype: pl.DataType) -> Any:
    if dtype == pl.Date and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def _filter(f: FilterSpec, col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    cond = _compare(f, col, dtype)
    return cond | col.is_null() if f.or_null else cond


def _compare(f: FilterSpec, col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
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


def _joined(ctx: BuildContext, code: str, field: str, filtered: bool = True) -> pl.LazyFrame:
    """The joined resource reduced to one row per join key (duplicates reduced to one).

    ``filtered=False`` skips the spec's filters on it: the match rate is about the snapshots
    (are the base's keys found at all), and a filter on the joined resource (e.g. 性别 eq 女)
    is a selection, not a failed match.
    """
    q = query_of(ctx.spec)
    lf = _scan(ctx, code)
    schema = lf.collect_schema()
    conds = [
        _filter(f, pl.col(col_name(q, f.field)), schema[col_name(q, f.field)])
        for f in q.filters
        if filtered and qualify(q, f.field)[0] == code
    ]
    lf = lf.filter(*conds) if conds else lf
    key = f"{code}.{field}"
    return lf.filter(pl.col(key).is_not_null()).unique(subset=[key], keep="any")


def match_rates(ctx: BuildContext) -> dict[str, float]:
    """Share of the base snapshot's rows whose join key finds a row of the joined snapshot,
    per join: a property of the two snapshots, never of the spec's selection.

    Neither the filters nor the period enter it. It is computed and can refuse before any
    charge, for free: over rows a spec selects (a few settlements picked by amount and day)
    it would answer, exactly and for nothing, whether those persons are in the registry.
    Reads the join keys only; an empty base has nothing to lose (rate 1).
    """
    return rates_of(*match_counts(ctx))


def rates_of(total: int, found: dict[str, int]) -> dict[str, float]:
    return {code: 1.0 if total == 0 else n / total for code, n in found.items()}


def match_counts(ctx: BuildContext) -> tuple[int, dict[str, int]]:
    """Base rows (the whole snapshot), and per join how many find a row. Counts add up
    over co-partitions when the joins are on the partitioning fields (``scaleout``)."""
    q = query_of(ctx.spec)
    base = _scan(ctx, q.base)
    total = base.select(pl.len()).collect(engine="streaming").item()
    out: dict[str, int] = {}
    for j in q.joins:
        field = j.field or j.key
        keys = _joined(ctx, j.resource, field, filtered=False).select(
            pl.col(f"{j.resource}.{field}")
        )
        found = (
            base.select(pl.col(f"{q.base}.{j.key}"))
            .join(keys, left_on=f"{q.base}.{j.key}", right_on=f"{j.resource}.{field}", how="semi")
            .select(pl.len())
            .collect(engine="streaming")
            .item()
        )
        out[j.resource] = int(found)
    return int(total), out


def require_match_rates(
    ctx: BuildContext, rates: dict[str, float] | None = None
) -> dict[str, float]:
    """``rates`` (default: :func:`match_rates`, or already computed by ``cells.compute``),
    refused when a join is below its floor."""
    q = query_of(ctx.spec)
    rates = match_rates(ctx) if rates is None else rates
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
        lf = first_per_unit(lf, unit, q.bounding.max_rows_per_unit)
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
    # Two values may read one field (its sum and its max): select each column once.
    values = [pl.col(c) for c in dict.fromkeys(col_name(q, v.field) for v in q.values if v.field)]
    return lf.select(pl.col(unit).alias(UNIT_COL), *keys, *values)


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
        base = first_per_unit(base, unit, q.bounding.max_rows_per_unit)
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
        cells = first_per_unit(cells, UNIT_COL, spec.privacy_unit.contributions)
    return cells.select([UNIT_COL, *by, *summed])


def first_per_unit(lf: pl.LazyFrame, unit: str, n: int) -> pl.LazyFrame:
    """At most ``n`` rows per unit, chosen by the rows' content, not by their order.

    ``group_by(unit).head(n)`` keeps whichever rows come first, and the order differs between
    a streaming run over the whole data and one per partition (or between two runs), so the
    bounded cells — what the DP measurement sees — would differ. Ranking each unit's rows by
    a hash of the unit and the whole row picks the same rows wherever and however often it
    runs, and, unlike a sort by the keys, favours no key. Rows with equal hashes are equal
    rows (up to 64-bit collisions), so which of them is kept does not matter. (polars' hash
    is stable within one polars version, which the driver and its workers share.)
    """
    cols = lf.collect_schema().names()
    h = "__shuyu_pick"
    return (
        lf.with_columns(pl.struct(cols).hash(0x5348_5559).alias(h))
        .sort([unit, h])
        .group_by(unit, maintain_order=True)
        .head(n)
        .select(cols)
    )


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
