"""Disclosure-risk measures for record-level outputs: k-anonymity and distinct l-diversity.

Equivalence classes are the groups of records sharing all quasi-identifier values (a null
is a value of its own). All measures are polars group-bys; ``enforce_k`` collects only the
quasi-identifier columns (a few narrow columns, even for millions of rows), searches the
generalization lattice there, and applies the chosen levels and the suppression to the lazy
input.

``enforce_k`` reaches a target k by generalization, then suppression: among the lowest
lattice nodes (fewest generalization steps in total) whose records in classes smaller than
k are at most ``max_suppression`` of all, it takes the one suppressing fewest records
(ties: the one with more classes, i.e. more detail), generalizes to it and drops the
remaining records in small classes. The cost report names the levels used and the records
suppressed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from catalogs.models import Resource
from catalogs.vocabulary import Sensitivity
from shuyu_core.errors import ValidationError
from transforms import operators as ops

Level = Callable[[pl.Expr], pl.Expr]
# quasi-identifier -> its generalization levels, level 1 first (level 0 is the value itself)
Hierarchy = Mapping[str, Sequence[Level]]
SUPPRESSED = "*"


@dataclass(frozen=True)
class KAnonymityReport:
    min_class_size: int
    records: int
    classes: pl.DataFrame  # the quasi-identifier values and ``size`` of every class

    @property
    def k(self) -> int:
        return self.min_class_size

    def share_below_k(self, k: int) -> float:
        """Share of records in equivalence classes smaller than ``k``."""
        if self.records == 0:
            return 0.0
        small = self.classes.filter(pl.col("size") < k)["size"].sum()
        return float(small) / self.records

    def records_below_k(self, k: int) -> int:
        return int(self.classes.filter(pl.col("size") < k)["size"].sum())

    def to_dict(self, k: int | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "min_class_size": self.min_class_size,
            "records": self.records,
            "classes": self.classes.height,
        }
        if k is not None:
            out["k"] = k
            out["share_below_k"] = self.share_below_k(k)
        return out


def _check_columns(lf: pl.LazyFrame, columns: Sequence[str]) -> None:
    names = set(lf.collect_schema().names())
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValidationError(
            f"no column(s) {', '.join(missing)} in the data",
            hint="name quasi-identifiers and the sensitive attribute among the output columns",
        )
    if not columns:
        raise ValidationError(
            "no quasi-identifiers given", hint="declare quasi_identifier fields in the catalog"
        )


def _class_sizes(lf: pl.LazyFrame, qis: Sequence[str]) -> pl.LazyFrame:
    return lf.group_by(list(qis)).agg(pl.len().alias("size"))


def k_anonymity(
    lf: pl.LazyFrame | pl.DataFrame, quasi_identifiers: Sequence[str]
) -> KAnonymityReport:
    """Smallest equivalence class over ``quasi_identifiers`` and the class table."""
    frame = lf.lazy()
    _check_columns(frame, quasi_identifiers)
    classes = _class_sizes(frame, quasi_identifiers).collect(engine="streaming")
    records = int(classes["size"].sum()) if classes.height else 0
    smallest = int(classes["size"].min()) if classes.height else 0  # type: ignore[arg-type]
    return KAnonymityReport(smallest, records, classes)


def l_diversity(lf: pl.LazyFrame | pl.DataFrame, qis: Sequence[str], sensitive: str) -> int:
    """Distinct l-diversity: the fewest distinct non-null sensitive values in any class."""
    frame = lf.lazy()
    _check_columns(frame, [*qis, sensitive])
    per_class = (
        frame.group_by(list(qis))
        .agg(pl.col(sensitive).drop_nulls().n_unique().alias("l"))
        .select(pl.col("l").min())
        .collect(engine="streaming")
    )
    value = per_class.item()
    return int(value) if value is not None else 0


# -- what the catalog declares ----------------------------------------------------------------


def declared_quasi_identifiers(resource: Resource, columns: Sequence[str]) -> list[str]:
    """The resource's ``quasi_identifier`` fields among ``columns``, in catalog order."""
    present = set(columns)
    return [f.name for f in resource.fields if f.quasi_identifier and f.name in present]


def declared_sensitive_attributes(resource: Resource, columns: Sequence[str]) -> list[str]:
    """Sensitive attributes for l-diversity: ``sensitive_personal`` fields among ``columns``
    that are neither quasi-identifiers nor identifiers (a pseudonymized ID number is
    sensitive but identifies; it is not an attribute whose diversity protects anyone)."""
    present = set(columns)
    return [
        f.name
        for f in resource.fields
        if f.sensitivity == Sensitivity.SENSITIVE_PERSONAL
        and not f.quasi_identifier
        and f.pii_type is None
        and f.name in present
    ]


@dataclass(frozen=True)
class RecordRisk:
    """k-anonymity and distinct l-diversity of a record-level table."""

    quasi_identifiers: list[str]
    k: int
    anonymity: KAnonymityReport
    l_diversity: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {
            "quasi_identifiers": self.quasi_identifiers,
            **self.anonymity.to_dict(self.k),
            "records_below_k": self.anonymity.records_below_k(self.k),
            "l_diversity": self.l_diversity,
        }


def record_risk(
    lf: pl.LazyFrame | pl.DataFrame,
    resource: Resource,
    k: int = 5,
    sensitive: Sequence[str] | None = None,
) -> RecordRisk:
    """Disclosure risk of a record-level table of ``resource`` over its declared
    quasi-identifiers; l-diversity for ``sensitive`` (default: the declared sensitive
    attributes present). Refuses a table with no declared quasi-identifier."""
    frame = lf.lazy()
    names = frame.collect_schema().names()
    qis = declared_quasi_identifiers(resource, names)
    if not qis:
        raise ValidationError(
            f"{resource.code} declares no quasi-identifier among the columns",
            hint="mark quasi_identifier: true on fields such as sex, birth date, region",
        )
    attrs = (
        list(sensitive) if sensitive is not None else declared_sensitive_attributes(resource, names)
    )
    return RecordRisk(
        quasi_identifiers=qis,
        k=k,
        anonymity=k_anonymity(frame, qis),
        l_diversity={a: l_diversity(frame, qis, a) for a in attrs},
    )


# -- hierarchies ----------------------------------------------------------------------------


def region_levels() -> list[Level]:
    """County code -> prefecture -> province -> suppressed."""
    return [
        lambda e: ops.generalize_region(e, "prefecture"),
        lambda e: ops.generalize_region(e, "province"),
        lambda e: pl.lit(SUPPRESSED),
    ]


def date_levels() -> list[Level]:
    """Date -> month -> year -> decade -> suppressed."""
    return [
        lambda e: e.dt.strftime("%Y-%m"),
        lambda e: e.dt.strftime("%Y"),
        lambda e: ((e.dt.year() // 10) * 10).cast(pl.String) + "s",
        lambda e: pl.lit(SUPPRESSED),
    ]


def year_text_levels() -> list[Level]:
    """A 'YYYY' (or 'YYYY-MM') text -> 5-year band -> decade -> suppressed."""

    def band(width: int) -> Level:
        def f(e: pl.Expr) -> pl.Expr:
            y = e.cast(pl.String).str.slice(0, 4).cast(pl.Int64, strict=False)
            lo = (y // width) * width
            return lo.cast(pl.String) + "-" + (lo + width - 1).cast(pl.String)

        return f

    return [band(5), band(10), lambda e: pl.lit(SUPPRESSED)]


def age_levels() -> list[Level]:
    """Integer age -> 5-year band -> 10-year band -> 20-year band -> suppressed."""
    return [
        lambda e: ops.generalize_age(e, 5),
        lambda e: ops.generalize_age(e, 10),
        lambda e: ops.generalize_age(e, 20),
        lambda e: pl.lit(SUPPRESSED),
    ]


def suppress_levels() -> list[Level]:
    """A categorical value -> suppressed (one step)."""
    return [lambda e: pl.lit(SUPPRESSED)]


def hierarchy_for(
    resource: Resource, qis: Sequence[str], schema: Mapping[str, pl.DataType] | None = None
) -> dict[str, list[Level]]:
    """Default hierarchies for a resource's quasi-identifiers, chosen from the catalog:
    GB/T 2260 code lists -> region levels, dates -> date levels, a 'YYYY' text (a birth date
    generalized to year) -> year bands, integers -> age bands, anything else -> suppression."""
    out: dict[str, list[Level]] = {}
    for name in qis:
        dtype = schema.get(name) if schema is not None else None
        try:
            spec = resource.field(name)
        except KeyError:
            spec = None
        codelist = spec.rules.codelist if spec is not None else None
        declared_date = spec is not None and spec.type in ("date", "datetime")
        is_date = dtype.is_temporal() if dtype is not None else declared_date
        if codelist is not None and codelist.startswith("gbt2260"):
            out[name] = region_levels()
        elif is_date:
            out[name] = date_levels()
        elif dtype is not None and dtype.is_integer():
            out[name] = age_levels()
        elif dtype == pl.String and declared_date:
            out[name] = year_text_levels()  # a birth date the policy generalized to 'YYYY'
        else:
            out[name] = suppress_levels()
    return out


# -- enforce k --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnforceKReport:
    k: int
    records_in: int
    records_suppressed: int
    levels_used: dict[str, int]
    level_names: dict[str, str]
    min_class_size: int
    classes: int
    nodes_evaluated: int
    max_suppression: float
    notes: list[str] = field(default_factory=list)

    @property
    def share_suppressed(self) -> float:
        return self.records_suppressed / self.records_in if self.records_in else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "k": self.k,
            "records_in": self.records_in,
            "records_suppressed": self.records_suppressed,
            "share_suppressed": round(self.share_suppressed, 6),
            "levels_used": self.levels_used,
            "level_names": self.level_names,
            "min_class_size": self.min_class_size,
            "classes": self.classes,
            "nodes_evaluated": self.nodes_evaluated,
            "max_suppression": self.max_suppression,
            "notes": self.notes,
        }


def _generalized(qis: Sequence[str], hierarchy: Hierarchy, node: Sequence[int]) -> list[pl.Expr]:
    exprs = []
    for name, level in zip(qis, node, strict=True):
        col = pl.col(name)
        expr = col if level == 0 else hierarchy[name][level - 1](col)
        exprs.append(expr.cast(pl.String).alias(name) if level else col)
    return exprs


def enforce_k(
    lf: pl.LazyFrame | pl.DataFrame,
    qis: Sequence[str],
    k: int,
    hierarchy: Hierarchy,
    max_suppression: float = 0.05,
    max_nodes: int = 4096,
) -> tuple[pl.LazyFrame, EnforceKReport]:
    """Generalize then suppress until every equivalence class has at least ``k`` records.

    Returns the transformed lazy frame (quasi-identifiers generalized, records of small
    classes removed) and the cost. If no lattice node keeps suppression within
    ``max_suppression``, the top node (everything generalized) is used and whatever is
    still below k is suppressed; the report says so.
    """
    if k < 1:
        raise ValidationError(f"k must be at least 1, not {k}", hint="use k >= 2 for privacy")
    frame = lf.lazy()
    _check_columns(frame, qis)
    missing = [q for q in qis if q not in hierarchy]
    if missing:
        raise ValidationError(
            f"no generalization hierarchy for {', '.join(missing)}",
            hint="give every quasi-identifier a hierarchy (see privacy.risk.hierarchy_for)",
        )
    base = frame.select(list(qis)).collect(engine="streaming")
    records = base.height
    ranges = [range(len(hierarchy[q]) + 1) for q in qis]
    nodes = sorted(itertools.product(*ranges), key=lambda n: (sum(n), n))
    if len(nodes) > max_nodes:
        raise ValidationError(
            f"generalization lattice has {len(nodes)} nodes (limit {max_nodes})",
            hint="use fewer quasi-identifiers or shorter hierarchies",
        )
    budget = int(max_suppression * records)
    evaluated = 0
    chosen: tuple[int, ...] | None = None
    best: tuple[int, int] | None = None  # (suppressed, -classes)
    height = -1
    for node in nodes:
        if chosen is not None and sum(node) > height:
            break
        evaluated += 1
        sizes = base.select(_generalized(qis, hierarchy, node)).group_by(list(qis)).len()
        suppressed = int(sizes.filter(pl.col("len") < k)["len"].sum())
        if suppressed <= budget:
            score = (suppressed, -sizes.height)
            if best is None or score < best:
                best, chosen, height = score, tuple(node), sum(node)
    notes: list[str] = []
    if chosen is None:
        chosen = tuple(len(hierarchy[q]) for q in qis)
        notes.append(
            f"no generalization keeps suppression within {max_suppression:.1%}; "
            "used the most general level of every quasi-identifier"
        )
    gen = frame.with_columns(_generalized(qis, hierarchy, chosen))
    class_sizes = gen.group_by(list(qis)).agg(pl.len().alias("_size"))
    out = gen.join(class_sizes, on=list(qis), how="left", nulls_equal=True)
    out = out.filter(pl.col("_size") >= k).drop("_size")
    final = base.select(_generalized(qis, hierarchy, chosen)).group_by(list(qis)).len()
    kept = final.filter(pl.col("len") >= k)
    report = EnforceKReport(
        k=k,
        records_in=records,
        records_suppressed=records - int(kept["len"].sum()),
        levels_used={q: int(level) for q, level in zip(qis, chosen, strict=True)},
        level_names={
            q: ("original" if level == 0 else f"level {level} of {len(hierarchy[q])}")
            for q, level in zip(qis, chosen, strict=True)
        },
        min_class_size=int(kept["len"].min()) if kept.height else 0,  # type: ignore[arg-type]
        classes=kept.height,
        nodes_evaluated=evaluated,
        max_suppression=max_suppression,
        notes=notes,
    )
    return out, report
