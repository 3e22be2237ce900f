"""Typed product specs (数据产品规格): one YAML file per product under ``catalogs/products/``.

A spec says what a product reads (resources and the exact fields: 最小必要), under which
agreement and scenario (一场景一授权), who it protects (the privacy unit), how much privacy
budget one release spends, its dimensions with their *public* key sets, its measures with
declared bounds, and how cells are suppressed. docs/products.md has an annotated example.

Cross-file checks (resources and fields exist in the catalog, code lists exist) live in
``products.specs`` because the catalog can change independently of a spec.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalogs.index_language import IndexSpec, check_index
from catalogs.product_language import QuerySpec, quantile_problems

ProductKind = Literal["statistical_report", "index", "verification", "desensitized_dataset"]
PurposeCategory = Literal["public_good", "industry"]
OutputFormat = Literal["parquet", "csv", "json", "html"]

_ID = r"^[a-z][a-z0-9_]{1,63}$"
_VERSION = r"^\d+\.\d+\.\d+$"
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: list[str], what: str) -> list[str]:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} {', '.join(dupes)} listed twice")
    return values


class InputSpec(Strict):
    """One input resource and the exact fields the build reads (nothing else is scanned)."""

    resource: str
    fields: list[str] = Field(min_length=1)

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        return _unique(v, "field(s)")


class PrivacyUnitSpec(Strict):
    """Who a DP release protects: each unit contributes at most ``contributions`` rows after
    the bounding pre-aggregation."""

    resource: str
    field: str
    contributions: int = Field(default=1, ge=1)
    max_units: int = Field(
        default=50_000_000,
        gt=0,
        description="public upper bound on the number of units (needed for float sums)",
    )


def rho_from_epsilon(epsilon: float, delta: float) -> float:
    """The largest ρ whose (ε, δ) conversion ε = ρ + 2·sqrt(ρ·ln(1/δ)) stays within ε."""
    log_term = math.log(1.0 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def epsilon_from_rho(rho: float, delta: float) -> float:
    """(ε, δ)-DP implied by ρ-zCDP (Bun & Steinke 2016, Prop. 1.3)."""
    if rho <= 0:
        return 0.0
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


class BudgetSpec(Strict):
    """Privacy loss of one release. Accounting is zCDP: give ``rho``, or ``epsilon`` with
    ``delta`` (converted to the largest ρ whose (ε, δ) guarantee fits)."""

    rho: float | None = Field(default=None, gt=0)
    epsilon: float | None = Field(default=None, gt=0)
    delta: float = Field(default=1e-7, gt=0, lt=1e-3)

    @model_validator(mode="after")
    def _one_of(self) -> BudgetSpec:
        if (self.rho is None) == (self.epsilon is None):
            raise ValueError("give exactly one of rho (zCDP) or epsilon (with delta)")
        return self

    @property
    def zcdp_rho(self) -> float:
        if self.rho is not None:
            return self.rho
        assert self.epsilon is not None
        return rho_from_epsilon(self.epsilon, self.delta)

    @property
    def implied_epsilon(self) -> float:
        return epsilon_from_rho(self.zcdp_rho, self.delta)


class Band(Strict):
    label: str
    lower: int = Field(ge=0, description="inclusive")
    upper: int = Field(description="inclusive")

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.upper < self.lower:
            raise ValueError(f"band {self.label}: upper {self.upper} < lower {self.lower}")
        return self


class DimensionSpec(Strict):
    """A grouping dimension and its public key set: a code list, explicit values, or bands.

    Keys never come from the private data, so an empty cell is released (as noise around 0)
    and the presence of a key reveals nothing.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    codelist: str | None = None
    values: list[str] | None = None
    bands: list[Band] | None = None
    quarters: tuple[str, str] | None = Field(
        default=None, description="first and last quarter, e.g. [2023Q1, 2024Q4]"
    )
    months: tuple[str, str] | None = Field(
        default=None, description="first and last month, e.g. [2025-01, 2025-12]"
    )

    @model_validator(mode="after")
    def _one_source(self) -> DimensionSpec:
        sources = (self.codelist, self.values, self.bands, self.quarters, self.months)
        given = [x for x in sources if x is not None]
        if len(given) != 1:
            raise ValueError(
                f"dimension {self.name}: give exactly one of codelist, values, bands, "
                "quarters, months"
            )
        if self.values == [] or self.bands == []:  # no cell at all: budget spent on nothing
            raise ValueError(f"dimension {self.name}: an empty key set has no cell to release")
        if self.months is not None:
            first_m, last_m = (month_index(m) for m in self.months)
            if last_m < first_m:
                raise ValueError(f"dimension {self.name}: months end before they start")
        if self.values is not None:
            _unique(self.values, f"dimension {self.name} value(s)")
        if self.bands is not None:
            bands = sorted(self.bands, key=lambda b: b.lower)
            for a, b in itertools.pairwise(bands):
                if b.lower <= a.upper:
                    raise ValueError(
                        f"dimension {self.name}: bands {a.label} and {b.label} overlap"
                    )
            _unique([b.label for b in self.bands], f"dimension {self.name} band label(s)")
        if self.quarters is not None:
            first, last = (quarter_index(q) for q in self.quarters)
            if last < first:
                raise ValueError(f"dimension {self.name}: quarters end before they start")
        return self


def quarter_index(q: str) -> int:
    m = _QUARTER.match(q)
    if not m:
        raise ValueError(f"{q!r} is not a quarter like 2024Q3")
    return int(m.group(1)) * 4 + int(m.group(2)) - 1


_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_index(m: str) -> int:
    found = _MONTH.match(m)
    if not found:
        raise ValueError(f"{m!r} is not a month like 2025-07")
    return int(found.group(1)) * 12 + int(found.group(2)) - 1


def month_label(index: int) -> str:
    return f"{index // 12}-{index % 12 + 1:02d}"


def quarter_label(index: int) -> str:
    return f"{index // 4}Q{index % 4 + 1}"


def quarter_start(q: str) -> dt.date:
    i = quarter_index(q)
    return dt.date(i // 4, (i % 4) * 3 + 1, 1)


class MeasureSpec(Strict):
    """One noisy aggregate. ``count`` counts units; ``sum`` sums a bounded per-unit value;
    ``quantile`` picks, among ``candidates``, the DP ``quantile`` (0.5: the median) of a
    per-unit value with OpenDP's quantile mechanism (report-noisy-max over the candidates)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    aggregate: Literal["count", "sum", "quantile"]
    field: str | None = Field(default=None, description="the bounded per-unit column")
    bounds: tuple[float, float] | None = None
    quantile: float | None = Field(default=None, gt=0, lt=1)
    candidates: list[float] | None = Field(
        default=None, description="public candidate values, ascending (quantile)"
    )
    unit: str = ""

    @field_validator("aggregate", mode="before")
    @classmethod
    def _known_aggregate(cls, v: object) -> object:
        if v == "mean":
            raise ValueError(
                "a mean is released as a derived ratio of a sum and a count: declare both "
                "measures and a derived {op: ratio} (no extra budget)"
            )
        return v

    @model_validator(mode="after")
    def _sum_has_bounds(self) -> MeasureSpec:
        quantile_only = self.quantile is not None or self.candidates is not None
        if self.aggregate == "sum":
            if self.field is None or self.bounds is None:
                raise ValueError(f"measure {self.name}: a sum needs field and bounds")
            if self.bounds[1] <= self.bounds[0]:
                raise ValueError(f"measure {self.name}: bounds must be (lower, upper)")
            if quantile_only:
                raise ValueError(f"measure {self.name}: quantile/candidates belong to quantiles")
        elif self.aggregate == "quantile":
            c = self.candidates or []
            if self.field is None or self.quantile is None or len(c) < 2:
                raise ValueError(
                    f"measure {self.name}: a quantile needs field, quantile and ≥ 2 candidates"
                )
            if any(b <= a for a, b in itertools.pairwise(c)) or len(c) > 10_000:
                raise ValueError(f"measure {self.name}: candidates must ascend (≤ 10 000)")
            if self.bounds is not None:
                raise ValueError(f"measure {self.name}: a quantile's range is its candidates")
        elif self.field is not None or self.bounds is not None or quantile_only:
            raise ValueError(f"measure {self.name}: a count takes no field or bounds")
        return self


class DerivedSpec(Strict):
    """A value computed from released measures only (post-processing: no extra budget).

    ``ratio`` numerator / denominator (a mean is sum / count); ``difference`` numerator −
    denominator; ``share`` the cell's numerator over the table's total of it (no
    denominator). Intervals are simulated from the public noise scales.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    op: Literal["ratio", "difference", "share"]
    numerator: str
    denominator: str | None = None
    unit: str = ""

    @model_validator(mode="after")
    def _operands(self) -> DerivedSpec:
        if (self.op == "share") != (self.denominator is None):
            raise ValueError(
                f"derived {self.name}: share takes no denominator; ratio and difference need one"
            )
        return self

    @property
    def operands(self) -> tuple[str, ...]:
        return (self.numerator,) if self.denominator is None else (self.numerator, self.denominator)


class TableSpec(Strict):
    """One released table: measures over the cross product of public dimension keys."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    title_en: str
    by: list[str] = Field(min_length=1)
    measures: list[MeasureSpec] = Field(min_length=1)
    derived: list[DerivedSpec] = Field(default_factory=list)
    filter: str | None = Field(
        default=None, description="index: the row set (index.rows) whose units this table measures"
    )
    weight: float = Field(default=1.0, gt=0, description="share of the release budget")

    @model_validator(mode="after")
    def _names(self) -> TableSpec:
        _unique(self.by, f"table {self.name} dimension(s)")
        names = [m.name for m in self.measures]
        _unique([*names, *(d.name for d in self.derived)], f"table {self.name} measure(s)")
        quantiles = {m.name for m in self.measures if m.aggregate == "quantile"}
        for d in self.derived:
            for ref in d.operands:
                if ref not in names:
                    raise ValueError(f"table {self.name}: derived {d.name} uses unknown {ref}")
                if ref in quantiles:  # no Gaussian scale to simulate its interval from
                    raise ValueError(f"table {self.name}: derived {d.name} uses quantile {ref}")
        return self


class SuppressionSpec(Strict):
    """Post-processing suppression: a cell is withheld (and flagged) when its noisy count is
    below ``min_count`` or its relative CI half-width exceeds the accuracy target."""

    min_count: float = Field(default=10, ge=0)
    max_relative_error: float | None = Field(
        default=0.5, gt=0, description="accuracy target: CI half-width / |estimate|"
    )


class VerificationCheck(Strict):
    kind: Literal["person", "enterprise"]
    resource: str
    key_field: str = Field(description="the identifier looked up (ID number, USCC)")
    name_field: str = Field(description="the attribute verified against it (name)")
    consent_required: bool = Field(
        default=True,
        description="the subject's authorization (信息主体授权) is checked per query; "
        "personal information always needs it",
    )


class VerificationSpec(Strict):
    checks: list[VerificationCheck] = Field(min_length=1)
    quota_per_day: int = Field(default=1000, gt=0, description="queries per requester per day")
    consent_purpose: str = Field(description="purpose a subject's consent must name")
    max_batch: int = Field(default=100_000, gt=0)

    @model_validator(mode="after")
    def _one_check_per_kind(self) -> VerificationSpec:
        # A query is routed to its kind's check and exempt from consent by its kind: two
        # checks of one kind would let an exempt check lift consent from the other.
        _unique([c.kind for c in self.checks], "verification check kind(s)")
        return self


class DesensitizeRule(Strict):
    """One desensitization operator (transforms.policy.Rule: op and params)."""

    op: str
    params: dict[str, Any] = Field(default_factory=dict)


class DesensitizeSpec(Strict):
    """A record-level extract: each input desensitized by policy (transforms), joined on the
    pseudonymized unit, then k-anonymity enforced on the quasi-identifiers."""

    base_resource: str = Field(description="one output row per row of this resource")
    join_on: str | None = Field(
        default=None, description="unit field joining the other inputs (one row per unit)"
    )
    policy: str | None = Field(
        default=None, description="policy YAML path; default: transforms' default policy"
    )
    overrides: dict[str, DesensitizeRule] = Field(
        default_factory=dict, description="CODE.field -> operator, on top of the policy"
    )
    rename: dict[str, str] = Field(default_factory=dict, description="input field -> output")
    keep_unit: bool = Field(
        default=False, description="keep the pseudonymized unit column in the output"
    )
    quasi_identifiers: list[str] = Field(min_length=1, description="output column names")
    k: int = Field(default=5, ge=2)
    sensitive_attribute: str | None = None


class OutputsSpec(Strict):
    formats: list[OutputFormat] = Field(
        default_factory=lambda: list[OutputFormat](["parquet", "csv"])
    )

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[OutputFormat]) -> list[OutputFormat]:
        if not v:
            raise ValueError("give at least one output format")
        return v


def _query_fits(spec: ProductSpec, q: QuerySpec) -> None:
    """The query derives every dimension the tables use, and sums read its values with
    the values' own bounds (one declared bound, no second place to disagree)."""
    if spec.kind != "statistical_report":
        raise ValueError("the query section belongs to kind statistical_report")
    if spec.reference_period is None:
        raise ValueError("a query needs a reference_period (the period the statistics cover)")
    derived = {d.dimension for d in q.derive}
    declared = {d.name for d in spec.dimensions}
    if derived != declared:
        raise ValueError(
            "query.derive must cover exactly the declared dimensions "
            f"(missing {sorted(declared - derived)}, undeclared {sorted(derived - declared)})"
        )
    values = {v.name: v for v in q.values}
    for t in spec.tables:
        if t.filter is not None:
            raise ValueError(f"table {t.name}: use query.filters, not a builder filter")
        for m in t.measures:
            if m.aggregate == "quantile" and m.field not in values:
                raise ValueError(f"table {t.name}: quantile {m.name} of unknown value {m.field}")
            if m.aggregate != "sum":
                continue
            v = values.get(m.field or "")
            if v is None:
                raise ValueError(f"table {t.name}: measure {m.name} sums unknown value {m.field}")
            if tuple(m.bounds or ()) != tuple(v.bounds):
                raise ValueError(
                    f"table {t.name}: measure {m.name} bounds {m.bounds} differ from value "
                    f"{v.name} bounds {v.bounds}"
                )
    problems = quantile_problems(spec.tables, values)
    if problems:
        raise ValueError("; ".join(problems))


class ProductSpec(Strict):
    id: str = Field(pattern=_ID)
    name: str
    name_en: str
    version: str = Field(pattern=_VERSION, description="semantic version; a new one = new release")
    kind: ProductKind
    description: str = ""
    scenario: str
    agreement_id: str
    developer: str
    purpose_category: PurposeCategory
    pricing_note: str
    destination: str = "domestic"
    inputs: list[InputSpec] = Field(min_length=1)
    privacy_unit: PrivacyUnitSpec | None = None
    budget: BudgetSpec | None = None
    reference_period: tuple[dt.date, dt.date] | None = Field(
        default=None, description="first and last day the statistics cover"
    )
    dimensions: list[DimensionSpec] = Field(default_factory=list)
    tables: list[TableSpec] = Field(default_factory=list)
    suppression: SuppressionSpec = SuppressionSpec()
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    index: IndexSpec | None = None
    verification: VerificationSpec | None = None
    desensitize: DesensitizeSpec | None = None
    outputs: OutputsSpec = OutputsSpec()
    query: QuerySpec | None = None  # the product language (catalogs/product_language.py)
    params: dict[str, str] = Field(
        default_factory=dict, description="builder parameters (documented per kind)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProductSpec:
        codes = [i.resource for i in self.inputs]
        _unique(codes, "input resource(s)")
        dp_kind = self.kind in ("statistical_report", "index")
        if dp_kind:
            if self.budget is None or self.privacy_unit is None:
                raise ValueError(f"a {self.kind} draws noise: give budget and privacy_unit")
            if not self.tables:
                raise ValueError(f"a {self.kind} releases at least one table")
        elif self.budget is not None:
            raise ValueError(f"a {self.kind} draws no noise: remove budget")
        if self.privacy_unit is not None:
            declared = {i.resource: i.fields for i in self.inputs}
            pu = self.privacy_unit
            if pu.field not in declared.get(pu.resource, []):
                raise ValueError(
                    f"privacy_unit {pu.resource}.{pu.field} is not among the declared inputs"
                )
        dims = {d.name for d in self.dimensions}
        _unique([d.name for d in self.dimensions], "dimension(s)")
        _unique([t.name for t in self.tables], "table(s)")
        for t in self.tables:
            missing = [b for b in t.by if b not in dims]
            if missing:
                raise ValueError(f"table {t.name} groups by undeclared {', '.join(missing)}")
        if (
            self.reference_period is not None
            and self.reference_period[1] < self.reference_period[0]
        ):
            raise ValueError("reference_period ends before it starts")
        wanted = {"index": self.index, "verification": self.verification}
        for kind, section in wanted.items():
            if (self.kind == kind) != (section is not None):
                raise ValueError(f"the {kind} section belongs to (and is required by) kind {kind}")
        if (self.kind == "desensitized_dataset") != (self.desensitize is not None):
            raise ValueError("the desensitize section belongs to kind desensitized_dataset")
        if self.index is not None:
            check_index(self)
        if self.query is not None:
            _query_fits(self, self.query)
        elif self.kind == "statistical_report":
            raise ValueError(
                "a statistical_report is written in the product language: add a query section"
            )
        return self

    def input(self, code: str) -> InputSpec:
        for i in self.inputs:
            if i.resource == code:
                return i
        raise KeyError(code)

    def dimension(self, name: str) -> DimensionSpec:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def declared_fields(self) -> dict[str, list[str]]:
        return {i.resource: list(i.fields) for i in self.inputs}
