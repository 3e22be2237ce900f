"""The product language (产品描述语言): the ``query`` section of a statistical report spec.

A spec's ``dimensions`` hold the *public* key sets (code lists, bands, quarters, values); its
``tables`` hold the measures. The ``query`` section says how rows of catalogued resources become
per-unit bounded rows over those dimensions, without any product-specific Python:

- ``base``: the resource whose rows are measured; its rows belong to the spec's privacy unit;
- ``joins``: other resources joined on the privacy unit or on a catalog ``references`` field,
  reduced to one row per key; a join whose match rate is below ``min_match_rate`` is refused
  before anything is charged;
- ``filters``: comparisons on fields; ``period_field``: rows inside the reference period;
- ``derive``: for each dimension, the field it comes from and the vocabulary word that maps a
  value to a key (date → year/quarter/month, birth date → age band at the period's end, GB/T
  2260 code → province/prefecture/county, a code-list mapping, numeric bands, or the value);
- ``values``: per-unit pre-aggregates (rows, sum, mean, max) clipped to declared bounds;
- ``bounding``: at most ``privacy_unit.contributions`` cells per unit in each table (and
  optionally at most ``max_rows_per_unit`` raw rows per unit).

docs/products.md ("The product language") has annotated examples. Checks that need the
catalog or the rest of the spec live in ``products.language.compile``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    # ``as`` is a Python keyword: the field is ``as_``, read and written as ``as``.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )


FilterOp = Literal["eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "not_null"]
Scalar = str | int | float


class FilterSpec(_Strict):
    """``field op value``; ``field`` is ``CODE.field`` or a field of the base resource."""

    field: str
    op: FilterOp
    value: Scalar | list[Scalar] | None = None
    or_null: bool = Field(
        default=False, description="a null field also passes (e.g. not deregistered before X)"
    )

    @model_validator(mode="after")
    def _value_fits(self) -> FilterSpec:
        listy = isinstance(self.value, list)
        if self.op == "not_null" and self.value is not None:
            raise ValueError(f"filter on {self.field}: not_null takes no value")
        if self.op in ("in", "not_in") and not listy:
            raise ValueError(f"filter on {self.field}: {self.op} takes a list")
        if self.op not in ("in", "not_in", "not_null") and (listy or self.value is None):
            raise ValueError(f"filter on {self.field}: {self.op} takes one value")
        return self


class JoinSpec(_Strict):
    """Join ``resource`` (one row per key) on the base's field ``key`` = its field ``field``.

    (``key``, not ``on``: YAML 1.1 reads a bare ``on`` as the boolean true.)
    """

    resource: str
    key: str = Field(description="field of the base resource")
    field: str | None = Field(
        default=None, description="field of the joined resource (default: key)"
    )
    min_match_rate: float = Field(
        default=0.95, ge=0, le=1, description="share of base rows that must find a match"
    )


DeriveAs = Literal[
    "value",
    "year",
    "quarter",
    "month",
    "age_band",
    "province",
    "prefecture",
    "county",
    "map",
    "band",
]


class DeriveSpec(_Strict):
    """How the dimension ``dimension`` is computed from ``field`` (keys stay public)."""

    dimension: str = Field(pattern=_NAME)
    field: str
    as_: DeriveAs = Field(alias="as")
    mapping: str | None = Field(
        default=None, description="code-list mapping (catalogs/codelists/maps/<name>.csv), as: map"
    )

    @model_validator(mode="after")
    def _mapping(self) -> DeriveSpec:
        if (self.as_ == "map") != (self.mapping is not None):
            raise ValueError(f"dimension {self.dimension}: give mapping exactly with as: map")
        return self


class ValueSpec(_Strict):
    """One per-unit (and per-cell) pre-aggregate, clipped to ``bounds``.

    ``rows``: the unit's rows in the cell; ``sum`` / ``mean`` / ``max`` of ``field``.
    """

    name: str = Field(pattern=_NAME)
    per_unit: Literal["rows", "sum", "mean", "max"]
    field: str | None = None
    bounds: tuple[float, float]

    @model_validator(mode="after")
    def _shape(self) -> ValueSpec:
        if (self.per_unit == "rows") != (self.field is None):
            raise ValueError(f"value {self.name}: rows takes no field; sum/mean/max need one")
        if self.bounds[1] <= self.bounds[0]:
            raise ValueError(f"value {self.name}: bounds must be (lower, upper)")
        if self.per_unit == "rows" and self.bounds[0] < 0:
            raise ValueError(f"value {self.name}: a row count cannot be negative")
        return self


class BoundingSpec(_Strict):
    """The cells a unit may add to in each table are ``privacy_unit.contributions``."""

    max_rows_per_unit: int | None = Field(
        default=None, ge=1, description="raw rows kept per unit before aggregation"
    )


class QuerySpec(_Strict):
    base: str
    joins: list[JoinSpec] = Field(default_factory=list)
    filters: list[FilterSpec] = Field(default_factory=list)
    period_field: str | None = Field(
        default=None, description="date (or YYYYMM text) field kept inside reference_period"
    )
    derive: list[DeriveSpec] = Field(min_length=1)
    values: list[ValueSpec] = Field(default_factory=list)
    bounding: BoundingSpec = BoundingSpec()

    @model_validator(mode="after")
    def _unique(self) -> QuerySpec:
        dims = [d.dimension for d in self.derive]
        vals = [v.name for v in self.values]
        for what, names in (("dimension", dims), ("value", vals)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"query: {what}(s) {', '.join(dupes)} derived twice")
        clash = sorted(set(dims) & set(vals))
        if clash:
            raise ValueError(f"query: {', '.join(clash)} named both as dimension and value")
        joined = [j.resource for j in self.joins]
        if self.base in joined or len(set(joined)) != len(joined):
            raise ValueError("query: each resource is joined once and never to itself")
        return self

    def value(self, name: str) -> ValueSpec:
        for v in self.values:
            if v.name == name:
                return v
        raise KeyError(name)


def quantile_problems(tables: Iterable[Any], values: dict[str, ValueSpec]) -> list[str]:
    """Candidates of every quantile measure: strictly ascending, inside the bounds its value
    is clipped to, and a count in the same table (its cell is withheld by that noisy count).

    Checked at spec validation and again when the build is planned (before any charge), so
    a spec object built around the validators is refused too. Candidates are public (spec
    only); a candidate outside the value's bounds can never be the true quantile of clipped
    values, and without a count a quantile of a near-empty cell could not be withheld.
    """
    out: list[str] = []
    for t in tables:
        quantiles = [m for m in t.measures if m.aggregate == "quantile"]
        if quantiles and not any(m.aggregate == "count" for m in t.measures):
            out.append(f"table {t.name}: a quantile needs a count measure in its table")
        for m in quantiles:
            c = list(m.candidates or [])
            if len(c) < 2 or any(b <= a for a, b in itertools.pairwise(c)):
                out.append(f"table {t.name}: quantile {m.name}: candidates must strictly ascend")
                continue
            v = values.get(m.field or "")
            if v is not None and (c[0] < v.bounds[0] or c[-1] > v.bounds[1]):
                out.append(
                    f"table {t.name}: quantile {m.name}: candidates [{c[0]:g}, {c[-1]:g}] "
                    f"outside the bounds {list(v.bounds)} of value {v.name}"
                )
    return out
