"""Statistical report 社会保险参保情况统计报告 (social insurance enrolment statistics).

Inputs: SBCBJF (one row per person, month and insurance type) and RKJBXX (one row per person).
The privacy unit is the person (公民身份号码).

Contribution bounding (streaming pre-aggregation, ``privacy.dp.bounding``): a person's
SBCBJF rows in the reference period for the spec's insurance type (``params.insurance_type``)
with status ``params.status`` are reduced to ONE row: the person is insured, and their
contribution base is the mean of their monthly bases, clipped to the sum measure's bounds.
The row is joined with the person's registry row (district, sex, age band at the end of the
period). Each person therefore adds at most 1 to one count cell and at most the upper bound to
one sum cell of every table.

Dimensions the builder knows: ``district`` (户籍区划代码), ``age_band`` (from 出生日期, bands
from the spec), ``sex`` (性别). Sum measures read the bounded column ``base``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from catalogs.product_models import Band, ProductSpec
from privacy.dp import bounding
from privacy.dp.mechanisms import Measure, TableQuery, release_tables
from products import outputs, report, specs
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.release import ContributionBound, InputRef
from products.tables import finish_tables, write_tables
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

UNIT = "公民身份号码"
KNOWN_DIMENSIONS = {"district", "age_band", "sex"}
BOUNDED_VALUE = "base"


def age_expr(birth: str, as_of: dt.date) -> pl.Expr:
    """Completed years at ``as_of``."""
    b = pl.col(birth)
    before_birthday = (b.dt.month().cast(pl.Int32) * 100 + b.dt.day().cast(pl.Int32)) > (
        as_of.month * 100 + as_of.day
    )
    return (
        pl.lit(as_of.year, pl.Int32) - b.dt.year().cast(pl.Int32) - before_birthday.cast(pl.Int32)
    )


def band_expr(age: pl.Expr, bands: list[Band]) -> pl.Expr:
    """The band label of an age, null outside every band (dropped by the public key join)."""
    out: pl.Expr = pl.lit(None, dtype=pl.String)
    for band in sorted(bands, key=lambda b: b.lower, reverse=True):
        out = (
            pl.when(age.is_between(band.lower, band.upper)).then(pl.lit(band.label)).otherwise(out)
        )
    return out


def _sum_bounds(spec: ProductSpec) -> tuple[float, float]:
    bounds = {
        m.bounds for t in spec.tables for m in t.measures if m.aggregate == "sum" and m.bounds
    }
    if len(bounds) > 1:
        raise ValidationError(
            f"product {spec.id}: sums of {BOUNDED_VALUE} declare different bounds {sorted(bounds)}",
            hint="use one bound for the per-person contribution base",
        )
    return next(iter(bounds)) if bounds else (0.0, 0.0)


def _check(spec: ProductSpec) -> None:
    unknown = {d.name for d in spec.dimensions} - KNOWN_DIMENSIONS
    fields = {m.field for t in spec.tables for m in t.measures if m.field} - {BOUNDED_VALUE}
    if unknown or fields or spec.reference_period is None:
        raise ValidationError(
            f"product {spec.id}: the statistical report builder knows dimensions "
            f"{sorted(KNOWN_DIMENSIONS)} and the bounded value {BOUNDED_VALUE!r}, and needs a "
            f"reference_period (got dimensions {sorted(unknown)}, fields {sorted(fields)})",
            hint="correct the spec",
        )


def bounded_frame(ctx: BuildContext) -> pl.LazyFrame:
    """One row per insured person: district, age_band, sex, base (clipped)."""
    return bounding.sink_bounded(bounded_plan(ctx), UNIT, ctx.workdir / "bounded.parquet")


def bounded_plan(ctx: BuildContext) -> pl.LazyFrame:
    """The lazy query behind ``bounded_frame`` (nothing is read until it is sunk)."""
    spec = ctx.spec
    _check(spec)
    assert spec.reference_period is not None
    start, end = spec.reference_period
    p = spec.params
    lo, hi = _sum_bounds(spec)
    contributions = ctx.scan("SBCBJF").filter(
        pl.col("险种") == p.get("insurance_type", "企业职工基本养老保险"),
        pl.col("参保状态") == p.get("status", "正常参保"),
        pl.col("缴费月份").is_between(pl.lit(start.strftime("%Y%m")), pl.lit(end.strftime("%Y%m"))),
    )
    per_person = bounding.one_row_per_unit(
        contributions, UNIT, [pl.col("缴费基数").mean().alias(BOUNDED_VALUE)]
    )
    registry = bounding.first_per_unit(ctx.scan("RKJBXX"), UNIT)
    as_of = dt.date.fromisoformat(p["as_of"]) if "as_of" in p else end
    age_dim = next((d for d in spec.dimensions if d.name == "age_band"), None)
    joined = per_person.join(registry, on=UNIT, how="inner")
    cols: list[pl.Expr] = [pl.col(UNIT)]
    names = {d.name for d in spec.dimensions}
    if "district" in names:
        cols.append(pl.col("户籍区划代码").alias("district"))
    if "sex" in names:
        cols.append(pl.col("性别").alias("sex"))
    if age_dim is not None and age_dim.bands is not None:
        cols.append(band_expr(age_expr("出生日期", as_of), age_dim.bands).alias("age_band"))
    cols.append(pl.col(BOUNDED_VALUE))
    return bounding.clip(joined.select(cols), [bounding.Clip(BOUNDED_VALUE, lo, hi)])


def plan_tables(spec: ProductSpec, frame: pl.LazyFrame) -> None:
    """Every table's group-by dimensions and measure fields are columns of ``frame``
    (resolving its schema reads no data; a field the spec does not declare fails here)."""
    names = set(frame.collect_schema().names())
    for t in spec.tables:
        wanted = [*t.by, *(m.field for m in t.measures if m.field)]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ValidationError(
                f"product {spec.id}: table {t.name} needs {', '.join(missing)}, which the "
                f"builder does not produce (it produces {', '.join(sorted(names))})",
                hint="use the builder's dimensions and bounded value (docs/products.md)",
            )


def dp_tables(ctx: BuildContext, frame: pl.LazyFrame) -> Draw:
    """Measure every spec table over the bounded frame (shared by report builders)."""
    spec = ctx.spec
    assert spec.budget is not None and spec.privacy_unit is not None
    queries = [
        TableQuery(
            name=t.name,
            frame=frame,
            by=list(t.by),
            keys=specs.key_frame(spec, list(t.by)),
            measures=[Measure(m.name, m.aggregate, m.field, m.bounds) for m in t.measures],
            weight=t.weight,
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
        },
    )


class StatReportBuilder:
    def extra_inputs(self, home: Home, spec: ProductSpec, options: BuildOptions) -> list[InputRef]:
        return []

    def reversible_outputs(self, spec: ProductSpec) -> bool:
        return False

    def plan(self, ctx: BuildContext) -> None:
        _check(ctx.spec)
        plan_tables(ctx.spec, bounded_plan(ctx).drop(UNIT))

    def draw(self, ctx: BuildContext) -> Draw:
        return dp_tables(ctx, bounded_frame(ctx))

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
        spec = ctx.spec
        results = finish_tables(ctx, draw)
        files = write_tables(ctx, results, stage)
        lo, hi = _sum_bounds(spec)
        assert spec.reference_period is not None
        start, end = spec.reference_period
        itype = spec.params.get("insurance_type", "企业职工基本养老保险")
        bounds = [
            ContributionBound(
                resource="SBCBJF",
                measure="count",
                source_field="缴费月份",
                reduction=f"one row per person insured in {itype} between {start} and {end}",
                max_rows_per_unit=1,
            ),
            ContributionBound(
                resource="SBCBJF",
                measure=BOUNDED_VALUE,
                source_field="缴费基数",
                reduction="mean monthly contribution base of the person over the period, clipped",
                lower=lo,
                upper=hi,
                max_rows_per_unit=1,
            ),
            ContributionBound(
                resource="RKJBXX",
                measure="dimensions",
                source_field="户籍区划代码, 性别, 出生日期",
                reduction="one registry row per person (duplicates reduced to one)",
                max_rows_per_unit=1,
            ),
        ]
        accuracy = [c for r in results for c in r.accuracy]
        suppressed = [c for r in results for c in r.suppressed]
        if "html" in spec.outputs.formats:
            html = report.render_stat_report(ctx, results, accuracy, draw.meta)
            files.append(outputs.html_output(stage, "report", html, "dp_aggregate"))
        derived = {"report": [r.name for r in results]} if "html" in spec.outputs.formats else {}
        return Finished(
            outputs=files,
            accuracy=accuracy,
            suppressed=suppressed,
            contribution_bounds=bounds,
            derived_from=derived,
            notes=[
                "Persons in SBCBJF without a registry row in RKJBXX are not counted.",
                "Counts are integers with discrete Gaussian noise; sums are in whole yuan.",
                "Averages are ratios of two noisy values; their intervals come from simulation.",
            ],
        )
