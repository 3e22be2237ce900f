"""Held-out specs written against docs/products.md ("The product language") only.

Each spec combines documented features in ways the shipped products do not: joins on the unit
and on a catalog ``references`` field, every filter comparison, the reference period, every
vocabulary word, per-unit bounding overall and per cell, counts of rows and of units, sums,
means, derived ratios / differences / shares, budgets split by weight, ``shuyu products plan``
and ``shuyu build --yes``. Wrong specs and attempted leaks are in
``test_products_language_refusals.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from heldout_testkit import agreements, run_cli, spec, write
from products_testkit import frames, ingest_frames

from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from shuyu_core.home import Home

DISTRICTS = {"name": "district", "title": "户籍区县", "codelist": "yingkou_districts"}
QUARTERS = {"name": "quarter", "title": "季度", "quarters": ["2025Q1", "2025Q4"]}
AGES = {
    "name": "age_band",
    "title": "年龄段",
    "bands": [
        {"label": "0-17", "lower": 0, "upper": 17},
        {"label": "18-39", "lower": 18, "upper": 39},
        {"label": "40-59", "lower": 40, "upper": 59},
        {"label": "60+", "lower": 60, "upper": 130},
    ],
}
PERSON = {"resource": "RKJBXX", "field": "公民身份号码", "contributions": 1}


@pytest.fixture()
def ho(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Home, Path]:
    """A home with the four resources, the test scenario and an empty spec directory."""
    ingest_frames(home, frames(), ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"])
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements(tmp_path / "agreements")))
    spec_dir = tmp_path / "heldout_specs"
    spec_dir.mkdir()
    monkeypatch.setenv("SHUYU_PRODUCTS", str(spec_dir))
    return home, spec_dir


def _built(home: Home, product: str) -> tuple[rel.ReleaseManifest, dict[str, pl.DataFrame]]:
    out = engine.build(home, product)
    m = out.manifest
    root = rel.release_dir(home, m.release_id) / "data"
    sp = specs.get(product)
    tables = {t.name: pl.read_parquet(root / f"{t.name}.parquet") for t in sp.tables}
    for t in sp.tables:
        # Public keys: every cell of the cross product, whatever the data holds.
        assert tables[t.name].height == specs.key_frame(sp, list(t.by)).height, t.name
    for o in m.outputs:
        for c in o.columns:
            assert c.operator is not None, (o.path, c.name)
    return m, tables


# --- the held-out specs ----------------------------------------------------------------------


def ho_visits_by_age_quarter() -> dict[str, Any]:
    """YBJS joined to RKJBXX on the unit; age at the period's end; quarter of a date; rows,
    sums, a mean (ratio) and a share; two tables with weights 1 and 3."""
    return spec(
        "ho_visits_by_age_quarter",
        inputs=[
            {"resource": "YBJS", "fields": ["公民身份号码", "就诊日期", "医疗总费用"]},
            {"resource": "RKJBXX", "fields": ["公民身份号码", "出生日期"]},
        ],
        privacy_unit={"resource": "YBJS", "field": "公民身份号码", "contributions": 4},
        dimensions=[AGES, QUARTERS],
        query={
            "base": "YBJS",
            "joins": [{"resource": "RKJBXX", "key": "公民身份号码", "min_match_rate": 0.9}],
            "filters": [{"field": "医疗总费用", "op": "gt", "value": 0}],
            "period_field": "就诊日期",
            "derive": [
                {"dimension": "age_band", "field": "RKJBXX.出生日期", "as": "age_band"},
                {"dimension": "quarter", "field": "就诊日期", "as": "quarter"},
            ],
            "values": [
                {"name": "visits", "per_unit": "rows", "bounds": [0, 12]},
                {"name": "cost", "per_unit": "sum", "field": "医疗总费用", "bounds": [0, 8000]},
            ],
        },
        tables=[
            {
                "name": "by_age_quarter",
                "title": "就诊人数",
                "title_en": "patients by age band and quarter",
                "by": ["age_band", "quarter"],
                "measures": [
                    {"name": "patients", "title": "就诊人数", "aggregate": "count"},
                    {"name": "visits", "title": "就诊人次", "aggregate": "sum",
                     "field": "visits", "bounds": [0, 12]},
                    {"name": "cost", "title": "医疗总费用", "aggregate": "sum",
                     "field": "cost", "bounds": [0, 8000]},
                ],
                "derived": [
                    {"name": "cost_per_patient", "title": "人均费用", "op": "ratio",
                     "numerator": "cost", "denominator": "patients"},
                    {"name": "visits_per_patient", "title": "人均就诊次数", "op": "ratio",
                     "numerator": "visits", "denominator": "patients"},
                ],
                "weight": 1,
            },
            {
                "name": "by_age",
                "title": "年龄段就诊人数",
                "title_en": "patients by age band",
                "by": ["age_band"],
                "measures": [{"name": "patients", "title": "就诊人数", "aggregate": "count"}],
                "derived": [
                    {"name": "patient_share", "title": "占比", "op": "share",
                     "numerator": "patients"}
                ],
                "weight": 3,
            },
        ],
    )


def ho_contributors_by_month() -> dict[str, Any]:
    """SBCBJF alone; YYYYMM text → month; in / ne / ge filters; a mean per unit and cell;
    a cap on raw rows per unit and 12 cells per unit."""
    return spec(
        "ho_contributors_by_month",
        inputs=[{"resource": "SBCBJF", "fields": ["公民身份号码", "缴费月份", "险种", "缴费基数", "参保状态"]}],
        privacy_unit={"resource": "SBCBJF", "field": "公民身份号码", "contributions": 24},
        dimensions=[
            {"name": "month", "title": "月份", "months": ["2025-01", "2025-12"]},
            {"name": "insurance", "title": "险种", "values": ["企业职工基本养老保险", "职工基本医疗保险"]},
        ],
        query={
            "base": "SBCBJF",
            "filters": [
                {"field": "险种", "op": "in", "value": ["企业职工基本养老保险", "职工基本医疗保险"]},
                {"field": "参保状态", "op": "ne", "value": "终止参保"},
                {"field": "缴费基数", "op": "ge", "value": 1000},
            ],
            "period_field": "缴费月份",
            "derive": [
                {"dimension": "month", "field": "缴费月份", "as": "month"},
                {"dimension": "insurance", "field": "险种", "as": "value"},
            ],
            "values": [{"name": "base", "per_unit": "mean", "field": "缴费基数", "bounds": [0, 30000]}],
            "bounding": {"max_rows_per_unit": 40},
        },
        tables=[
            {
                "name": "by_month_insurance",
                "title": "缴费人数",
                "title_en": "contributors by month and insurance",
                "by": ["month", "insurance"],
                "measures": [
                    {"name": "contributors", "title": "缴费人数", "aggregate": "count"},
                    {"name": "base_sum", "title": "缴费基数合计", "aggregate": "sum",
                     "field": "base", "bounds": [0, 30000]},
                ],
                "derived": [{"name": "avg_base", "title": "平均缴费基数", "op": "ratio",
                             "numerator": "base_sum", "denominator": "contributors"}],
            }
        ],
    )


def ho_residents_by_region() -> dict[str, Any]:
    """RKJBXX as the base (no join, no period field); GB/T 2260 → province and prefecture;
    le / not_null / eq filters; literal key lists."""
    return spec(
        "ho_residents_by_region",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "性别", "出生日期", "户籍区划代码"]}],
        privacy_unit=PERSON,
        dimensions=[
            {"name": "province", "title": "省", "values": ["210000", "130000"]},
            {"name": "prefecture", "title": "地市", "values": ["210800", "211100"]},
            {"name": "sex", "title": "性别", "values": ["男", "女"]},
        ],
        query={
            "base": "RKJBXX",
            "filters": [
                {"field": "出生日期", "op": "le", "value": "2007-12-31"},
                {"field": "户籍区划代码", "op": "not_null"},
            ],
            "derive": [
                {"dimension": "province", "field": "户籍区划代码", "as": "province"},
                {"dimension": "prefecture", "field": "户籍区划代码", "as": "prefecture"},
                {"dimension": "sex", "field": "性别", "as": "value"},
            ],
        },
        tables=[
            {"name": "by_province_sex", "title": "成年人口", "title_en": "adults by province, sex",
             "by": ["province", "sex"],
             "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}],
             "derived": [{"name": "sex_share", "title": "占比", "op": "share",
                          "numerator": "persons"}]},
            {"name": "by_prefecture", "title": "成年人口", "title_en": "adults by prefecture",
             "by": ["prefecture"],
             "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}]},
        ],
    )


def ho_births_by_year() -> dict[str, Any]:
    """Year of a date field (not the period field); ge and lt on a date."""
    return spec(
        "ho_births_by_year",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "出生日期"]}],
        privacy_unit=PERSON,
        dimensions=[{"name": "year", "title": "出生年份",
                     "values": [str(y) for y in range(1960, 2000)]}],
        query={
            "base": "RKJBXX",
            "filters": [
                {"field": "出生日期", "op": "ge", "value": "1960-01-01"},
                {"field": "出生日期", "op": "lt", "value": "2000-01-01"},
            ],
            "derive": [{"dimension": "year", "field": "出生日期", "as": "year"}],
        },
        tables=[{"name": "by_year", "title": "出生人数", "title_en": "persons by birth year",
                 "by": ["year"],
                 "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}]}],
    )


def ho_entities_by_section_year() -> dict[str, Any]:
    """SCZTDJ (unit: enterprise); GB/T 4754 → section; year of founding as the period field;
    not_in; bounded capital; share and difference."""
    return spec(
        "ho_entities_by_section_year",
        inputs=[{"resource": "SCZTDJ",
                 "fields": ["统一社会信用代码", "注册资本", "成立日期", "行业代码", "登记状态"]}],
        privacy_unit={"resource": "SCZTDJ", "field": "统一社会信用代码"},
        reference_period=["2016-01-01", "2025-12-31"],
        dimensions=[
            {"name": "section", "title": "门类", "codelist": "gbt4754_sections"},
            {"name": "year", "title": "成立年份", "values": [str(y) for y in range(2016, 2026)]},
        ],
        query={
            "base": "SCZTDJ",
            "filters": [{"field": "登记状态", "op": "not_in", "value": ["注销", "吊销"]}],
            "period_field": "成立日期",
            "derive": [
                {"dimension": "section", "field": "行业代码", "as": "map", "mapping": "gbt4754_section"},
                {"dimension": "year", "field": "成立日期", "as": "year"},
            ],
            "values": [{"name": "capital", "per_unit": "sum", "field": "注册资本", "bounds": [0, 1000]}],
        },
        tables=[
            {"name": "by_section", "title": "市场主体", "title_en": "entities by section",
             "by": ["section"],
             "measures": [
                 {"name": "entities", "title": "户数", "aggregate": "count"},
                 {"name": "capital", "title": "注册资本", "aggregate": "sum", "field": "capital",
                  "bounds": [0, 1000]},
             ],
             "derived": [
                 {"name": "entity_share", "title": "占比", "op": "share", "numerator": "entities"},
                 {"name": "capital_per_entity", "title": "户均资本", "op": "ratio",
                  "numerator": "capital", "denominator": "entities"},
             ],
             "weight": 2},
            {"name": "by_year", "title": "新设主体", "title_en": "entities by founding year",
             "by": ["year"],
             "measures": [{"name": "entities", "title": "户数", "aggregate": "count"}],
             "weight": 1},
        ],
    )


def ho_settlements_by_chapter_county() -> dict[str, Any]:
    """ICD-10 → chapter × county of the joined registry; max and sums of two amounts and
    their difference; a join with an explicit ``field`` and a 0.99 floor."""
    return spec(
        "ho_settlements_by_chapter_county",
        inputs=[
            {"resource": "YBJS", "fields": ["公民身份号码", "就诊日期", "诊断编码", "统筹支付金额", "个人自付金额"]},
            {"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]},
        ],
        privacy_unit={"resource": "YBJS", "field": "公民身份号码", "contributions": 3},
        dimensions=[
            {"name": "chapter", "title": "ICD-10 章", "codelist": "icd10_chapters"},
            DISTRICTS,
        ],
        query={
            "base": "YBJS",
            "joins": [{"resource": "RKJBXX", "key": "公民身份号码", "field": "公民身份号码",
                       "min_match_rate": 0.99}],
            "filters": [{"field": "诊断编码", "op": "not_null"}],
            "period_field": "就诊日期",
            "derive": [
                {"dimension": "chapter", "field": "诊断编码", "as": "map", "mapping": "icd10_chapter"},
                {"dimension": "district", "field": "RKJBXX.户籍区划代码", "as": "county"},
            ],
            "values": [
                {"name": "fund", "per_unit": "sum", "field": "统筹支付金额", "bounds": [0, 5000]},
                {"name": "own", "per_unit": "sum", "field": "个人自付金额", "bounds": [0, 5000]},
                {"name": "largest_own", "per_unit": "max", "field": "个人自付金额", "bounds": [0, 2000]},
            ],
        },
        tables=[
            {"name": "by_chapter_district", "title": "医保结算", "title_en": "settlements",
             "by": ["chapter", "district"],
             "measures": [
                 {"name": "patients", "title": "人数", "aggregate": "count"},
                 {"name": "fund", "title": "统筹支付", "aggregate": "sum", "field": "fund", "bounds": [0, 5000]},
                 {"name": "own", "title": "个人自付", "aggregate": "sum", "field": "own", "bounds": [0, 5000]},
                 {"name": "largest_own", "title": "最大单笔自付合计", "aggregate": "sum",
                  "field": "largest_own", "bounds": [0, 2000]},
             ],
             "derived": [{"name": "fund_minus_own", "title": "统筹减自付", "op": "difference",
                          "numerator": "fund", "denominator": "own"}]},
        ],
    )


def ho_costs_in_bands() -> dict[str, Any]:
    """Numeric bands on a float amount (each settlement's cost), counted in rows per unit."""
    return spec(
        "ho_costs_in_bands",
        inputs=[{"resource": "YBJS", "fields": ["公民身份号码", "就诊日期", "医疗总费用"]}],
        privacy_unit={"resource": "YBJS", "field": "公民身份号码", "contributions": 4},
        dimensions=[{"name": "cost_band", "title": "费用段", "bands": [
            {"label": "0-99", "lower": 0, "upper": 99},
            {"label": "100-499", "lower": 100, "upper": 499},
            {"label": "500-1999", "lower": 500, "upper": 1999},
            {"label": "2000+", "lower": 2000, "upper": 1000000},
        ]}],
        query={
            "base": "YBJS",
            "period_field": "就诊日期",
            "derive": [{"dimension": "cost_band", "field": "医疗总费用", "as": "band"}],
            "values": [{"name": "settlements", "per_unit": "rows", "bounds": [0, 20]}],
        },
        tables=[{"name": "by_band", "title": "结算笔数", "title_en": "settlements by cost band",
                 "by": ["cost_band"],
                 "measures": [
                     {"name": "patients", "title": "人数", "aggregate": "count"},
                     {"name": "settlements", "title": "笔数", "aggregate": "sum",
                      "field": "settlements", "bounds": [0, 20]},
                 ]}],
    )


def ho_women_contributors() -> dict[str, Any]:
    """SBCBJF joined to RKJBXX on the unit with a filter on the joined resource (eq) and
    quarters from YYYYMM text; epsilon + delta budget."""
    return spec(
        "ho_women_contributors",
        inputs=[
            {"resource": "SBCBJF", "fields": ["公民身份号码", "缴费月份", "参保状态"]},
            {"resource": "RKJBXX", "fields": ["公民身份号码", "性别", "户籍区划代码"]},
        ],
        privacy_unit={"resource": "SBCBJF", "field": "公民身份号码", "contributions": 4},
        budget={"epsilon": 1.0, "delta": 1.0e-7},
        dimensions=[DISTRICTS, QUARTERS],
        query={
            "base": "SBCBJF",
            "joins": [{"resource": "RKJBXX", "key": "公民身份号码"}],
            "filters": [
                {"field": "RKJBXX.性别", "op": "eq", "value": "女"},
                {"field": "参保状态", "op": "eq", "value": "正常参保"},
            ],
            "period_field": "缴费月份",
            "derive": [
                {"dimension": "district", "field": "RKJBXX.户籍区划代码", "as": "county"},
                {"dimension": "quarter", "field": "缴费月份", "as": "quarter"},
            ],
        },
        tables=[{"name": "by_district_quarter", "title": "女性缴费人数",
                 "title_en": "women contributing", "by": ["district", "quarter"],
                 "measures": [{"name": "women", "title": "人数", "aggregate": "count"}]}],
    )


def ho_ages_at_mid_year() -> dict[str, Any]:
    """Age at the end of a period that ends mid-year: persons born after it are excluded."""
    return spec(
        "ho_ages_at_mid_year",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "出生日期"]}],
        privacy_unit=PERSON,
        reference_period=["2025-01-01", "2025-06-30"],
        dimensions=[{"name": "age_band", "title": "年龄段", "bands": [
            {"label": "0", "lower": 0, "upper": 0},
            {"label": "1-17", "lower": 1, "upper": 17},
            {"label": "18+", "lower": 18, "upper": 130},
        ]}],
        query={
            "base": "RKJBXX",
            "derive": [{"dimension": "age_band", "field": "出生日期", "as": "age_band"}],
        },
        tables=[{"name": "by_age", "title": "人数", "title_en": "persons by age",
                 "by": ["age_band"],
                 "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}]}],
    )


def ho_three_weights() -> dict[str, Any]:
    """Three tables over one query, ρ split 1 : 2 : 5 by weight."""
    tables = [
        {"name": f"t{w}", "title": f"表{w}", "title_en": f"table {w}", "by": ["district"],
         "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}], "weight": w}
        for w in (1, 2, 5)
    ]
    return spec(
        "ho_three_weights",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]}],
        privacy_unit=PERSON,
        budget={"rho": 0.08},
        dimensions=[DISTRICTS],
        query={"base": "RKJBXX",
               "derive": [{"dimension": "district", "field": "户籍区划代码", "as": "county"}]},
        tables=tables,
    )


def ho_fund_share_by_quarter_district() -> dict[str, Any]:
    """YBJS × RKJBXX, district × quarter with per-cell contributions capped at 2 of 4 × 6
    cells, and a per-unit cap on raw rows; ratio of two sums."""
    return spec(
        "ho_fund_share_by_quarter_district",
        inputs=[
            {"resource": "YBJS", "fields": ["公民身份号码", "就诊日期", "医疗总费用", "统筹支付金额"]},
            {"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]},
        ],
        privacy_unit={"resource": "YBJS", "field": "公民身份号码", "contributions": 2},
        dimensions=[DISTRICTS, QUARTERS],
        query={
            "base": "YBJS",
            "joins": [{"resource": "RKJBXX", "key": "公民身份号码", "min_match_rate": 0.5}],
            "period_field": "就诊日期",
            "derive": [
                {"dimension": "district", "field": "RKJBXX.户籍区划代码", "as": "county"},
                {"dimension": "quarter", "field": "就诊日期", "as": "quarter"},
            ],
            "values": [
                {"name": "cost", "per_unit": "sum", "field": "医疗总费用", "bounds": [0, 6000]},
                {"name": "fund", "per_unit": "sum", "field": "统筹支付金额", "bounds": [0, 6000]},
            ],
            "bounding": {"max_rows_per_unit": 10},
        },
        tables=[{"name": "by_district_quarter", "title": "统筹支付占比",
                 "title_en": "fund share of cost", "by": ["district", "quarter"],
                 "measures": [
                     {"name": "patients", "title": "人数", "aggregate": "count"},
                     {"name": "cost", "title": "总费用", "aggregate": "sum", "field": "cost",
                      "bounds": [0, 6000]},
                     {"name": "fund", "title": "统筹支付", "aggregate": "sum", "field": "fund",
                      "bounds": [0, 6000]},
                 ],
                 "derived": [{"name": "fund_ratio", "title": "统筹占比", "op": "ratio",
                              "numerator": "fund", "denominator": "cost"}]}],
    )


def ho_young_workers_by_age_district() -> dict[str, Any]:
    """Person-level attributes only (one cell per unit by construction, the unit-first plan)
    with a filter lt on a joined date and gt on a base amount."""
    return spec(
        "ho_young_workers_by_age_district",
        inputs=[
            {"resource": "SBCBJF", "fields": ["公民身份号码", "缴费月份", "缴费基数"]},
            {"resource": "RKJBXX", "fields": ["公民身份号码", "出生日期", "户籍区划代码"]},
        ],
        privacy_unit={"resource": "SBCBJF", "field": "公民身份号码"},
        dimensions=[AGES, DISTRICTS],
        query={
            "base": "SBCBJF",
            "joins": [{"resource": "RKJBXX", "key": "公民身份号码"}],
            "filters": [
                {"field": "RKJBXX.出生日期", "op": "gt", "value": "1985-12-31"},
                {"field": "缴费基数", "op": "gt", "value": 0},
            ],
            "period_field": "缴费月份",
            "derive": [
                {"dimension": "age_band", "field": "RKJBXX.出生日期", "as": "age_band"},
                {"dimension": "district", "field": "RKJBXX.户籍区划代码", "as": "county"},
            ],
            "values": [{"name": "base", "per_unit": "mean", "field": "缴费基数", "bounds": [0, 30000]}],
        },
        tables=[{"name": "by_age_district", "title": "青年参保人数",
                 "title_en": "young contributors", "by": ["age_band", "district"],
                 "measures": [
                     {"name": "persons", "title": "人数", "aggregate": "count"},
                     {"name": "base_sum", "title": "基数合计", "aggregate": "sum", "field": "base",
                      "bounds": [0, 30000]},
                 ],
                 "derived": [{"name": "avg_base", "title": "平均基数", "op": "ratio",
                              "numerator": "base_sum", "denominator": "persons"}]}],
    )


HELD_OUT = [
    ho_visits_by_age_quarter,
    ho_contributors_by_month,
    ho_residents_by_region,
    ho_births_by_year,
    ho_entities_by_section_year,
    ho_settlements_by_chapter_county,
    ho_costs_in_bands,
    ho_women_contributors,
    ho_ages_at_mid_year,
    ho_three_weights,
    ho_fund_share_by_quarter_district,
    ho_young_workers_by_age_district,
]


@pytest.mark.parametrize("make", HELD_OUT, ids=lambda f: f.__name__)
def test_held_out_spec_builds(ho: tuple[Home, Path], make: Any) -> None:
    home, spec_dir = ho
    product = write(spec_dir, make())
    m, _tables = _built(home, product)
    assert m.budget is not None and m.mechanisms
    entries = ledger.entries_for_release(home, m.release_id)
    assert {e.resource for e in entries} == {i.resource for i in specs.get(product).inputs}
    period = str(specs.get(product).reference_period[1].year)  # type: ignore[index]
    assert {e.period for e in entries} == {period}
