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
import re
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
def ho(home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Home, Path]:
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
                    {
                        "name": "visits",
                        "title": "就诊人次",
                        "aggregate": "sum",
                        "field": "visits",
                        "bounds": [0, 12],
                    },
                    {
                        "name": "cost",
                        "title": "医疗总费用",
                        "aggregate": "sum",
                        "field": "cost",
                        "bounds": [0, 8000],
                    },
                ],
                "derived": [
                    {
                        "name": "cost_per_patient",
                        "title": "人均费用",
                        "op": "ratio",
                        "numerator": "cost",
                        "denominator": "patients",
                    },
                    {
                        "name": "visits_per_patient",
                        "title": "人均就诊次数",
                        "op": "ratio",
                        "numerator": "visits",
                        "denominator": "patients",
                    },
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
                    {
                        "name": "patient_share",
                        "title": "占比",
                        "op": "share",
                        "numerator": "patients",
                    }
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
        inputs=[
            {
                "resource": "SBCBJF",
                "fields": ["公民身份号码", "缴费月份", "险种", "缴费基数", "参保状态"],
            }
        ],
        privacy_unit={"resource": "SBCBJF", "field": "公民身份号码", "contributions": 24},
        dimensions=[
            {"name": "month", "title": "月份", "months": ["2025-01", "2025-12"]},
            {
                "name": "insurance",
                "title": "险种",
                "values": ["企业职工基本养老保险", "职工基本医疗保险"],
            },
        ],
        query={
            "base": "SBCBJF",
            "filters": [
                {
                    "field": "险种",
                    "op": "in",
                    "value": ["企业职工基本养老保险", "职工基本医疗保险"],
                },
                {"field": "参保状态", "op": "ne", "value": "终止参保"},
                {"field": "缴费基数", "op": "ge", "value": 1000},
            ],
            "period_field": "缴费月份",
            "derive": [
                {"dimension": "month", "field": "缴费月份", "as": "month"},
                {"dimension": "insurance", "field": "险种", "as": "value"},
            ],
            "values": [
                {"name": "base", "per_unit": "mean", "field": "缴费基数", "bounds": [0, 30000]}
            ],
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
                    {
                        "name": "base_sum",
                        "title": "缴费基数合计",
                        "aggregate": "sum",
                        "field": "base",
                        "bounds": [0, 30000],
                    },
                ],
                "derived": [
                    {
                        "name": "avg_base",
                        "title": "平均缴费基数",
                        "op": "ratio",
                        "numerator": "base_sum",
                        "denominator": "contributors",
                    }
                ],
            }
        ],
    )


def ho_residents_by_region() -> dict[str, Any]:
    """RKJBXX as the base (no join, no period field); GB/T 2260 → province and prefecture;
    le / not_null / eq filters; literal key lists."""
    return spec(
        "ho_residents_by_region",
        inputs=[
            {"resource": "RKJBXX", "fields": ["公民身份号码", "性别", "出生日期", "户籍区划代码"]}
        ],
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
            {
                "name": "by_province_sex",
                "title": "成年人口",
                "title_en": "adults by province, sex",
                "by": ["province", "sex"],
                "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}],
                "derived": [
                    {"name": "sex_share", "title": "占比", "op": "share", "numerator": "persons"}
                ],
            },
            {
                "name": "by_prefecture",
                "title": "成年人口",
                "title_en": "adults by prefecture",
                "by": ["prefecture"],
                "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}],
            },
        ],
    )


def ho_births_by_year() -> dict[str, Any]:
    """Year of a date field (not the period field); ge and lt on a date."""
    return spec(
        "ho_births_by_year",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "出生日期"]}],
        privacy_unit=PERSON,
        dimensions=[
            {"name": "year", "title": "出生年份", "values": [str(y) for y in range(1960, 2000)]}
        ],
        query={
            "base": "RKJBXX",
            "filters": [
                {"field": "出生日期", "op": "ge", "value": "1960-01-01"},
                {"field": "出生日期", "op": "lt", "value": "2000-01-01"},
            ],
            "derive": [{"dimension": "year", "field": "出生日期", "as": "year"}],
        },
        tables=[
            {
                "name": "by_year",
                "title": "出生人数",
                "title_en": "persons by birth year",
                "by": ["year"],
                "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}],
            }
        ],
    )


def ho_entities_by_section_year() -> dict[str, Any]:
    """SCZTDJ (unit: enterprise); GB/T 4754 → section; year of founding as the period field;
    not_in; bounded capital; share and difference."""
    return spec(
        "ho_entities_by_section_year",
        inputs=[
            {
                "resource": "SCZTDJ",
                "fields": ["统一社会信用代码", "注册资本", "成立日期", "行业代码", "登记状态"],
            }
        ],
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
                {
                    "dimension": "section",
                    "field": "行业代码",
                    "as": "map",
                    "mapping": "gbt4754_section",
                },
                {"dimension": "year", "field": "成立日期", "as": "year"},
            ],
            "values": [
                {"name": "capital", "per_unit": "sum", "field": "注册资本", "bounds": [0, 1000]}
            ],
        },
        tables=[
            {
                "name": "by_section",
                "title": "市场主体",
                "title_en": "entities by section",
                "by": ["section"],
                "measures": [
                    {"name": "entities", "title": "户数", "aggregate": "count"},
                    {
                        "name": "capital",
                        "title": "注册资本",
                        "aggregate": "sum",
                        "field": "capital",
                        "bounds": [0, 1000],
                    },
                ],
                "derived": [
                    {
                        "name": "entity_share",
                        "title": "占比",
                        "op": "share",
                        "numerator": "entities",
                    },
                    {
                        "name": "capital_per_entity",
                        "title": "户均资本",
                        "op": "ratio",
                        "numerator": "capital",
                        "denominator": "entities",
                    },
                ],
                "weight": 2,
            },
            {
                "name": "by_year",
                "title": "新设主体",
                "title_en": "entities by founding year",
                "by": ["year"],
                "measures": [{"name": "entities", "title": "户数", "aggregate": "count"}],
                "weight": 1,
            },
        ],
    )


def ho_settlements_by_chapter_county() -> dict[str, Any]:
    """ICD-10 → chapter × county of the joined registry; max and sums of two amounts and
    their difference; a join with an explicit ``field`` and a 0.99 floor."""
    return spec(
        "ho_settlements_by_chapter_county",
        inputs=[
            {
                "resource": "YBJS",
                "fields": ["公民身份号码", "就诊日期", "诊断编码", "统筹支付金额", "个人自付金额"],
            },
            {"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]},
        ],
        privacy_unit={"resource": "YBJS", "field": "公民身份号码", "contributions": 3},
        dimensions=[
            {"name": "chapter", "title": "ICD-10 章", "codelist": "icd10_chapters"},
            DISTRICTS,
        ],
        query={
            "base": "YBJS",
            "joins": [
                {
                    "resource": "RKJBXX",
                    "key": "公民身份号码",
                    "field": "公民身份号码",
                    "min_match_rate": 0.99,
                }
            ],
            "filters": [{"field": "诊断编码", "op": "not_null"}],
            "period_field": "就诊日期",
            "derive": [
                {
                    "dimension": "chapter",
                    "field": "诊断编码",
                    "as": "map",
                    "mapping": "icd10_chapter",
                },
                {"dimension": "district", "field": "RKJBXX.户籍区划代码", "as": "county"},
            ],
            "values": [
                {"name": "fund", "per_unit": "sum", "field": "统筹支付金额", "bounds": [0, 5000]},
                {"name": "own", "per_unit": "sum", "field": "个人自付金额", "bounds": [0, 5000]},
                {
                    "name": "largest_own",
                    "per_unit": "max",
                    "field": "个人自付金额",
                    "bounds": [0, 2000],
                },
            ],
        },
        tables=[
            {
                "name": "by_chapter_district",
                "title": "医保结算",
                "title_en": "settlements",
                "by": ["chapter", "district"],
                "measures": [
                    {"name": "patients", "title": "人数", "aggregate": "count"},
                    {
                        "name": "fund",
                        "title": "统筹支付",
                        "aggregate": "sum",
                        "field": "fund",
                        "bounds": [0, 5000],
                    },
                    {
                        "name": "own",
                        "title": "个人自付",
                        "aggregate": "sum",
                        "field": "own",
                        "bounds": [0, 5000],
                    },
                    {
                        "name": "largest_own",
                        "title": "最大单笔自付合计",
                        "aggregate": "sum",
                        "field": "largest_own",
                        "bounds": [0, 2000],
                    },
                ],
                "derived": [
                    {
                        "name": "fund_minus_own",
                        "title": "统筹减自付",
                        "op": "difference",
                        "numerator": "fund",
                        "denominator": "own",
                    }
                ],
            },
        ],
    )


def ho_costs_in_bands() -> dict[str, Any]:
    """Numeric bands on a float amount (each settlement's cost), counted in rows per unit."""
    return spec(
        "ho_costs_in_bands",
        inputs=[{"resource": "YBJS", "fields": ["公民身份号码", "就诊日期", "医疗总费用"]}],
        privacy_unit={"resource": "YBJS", "field": "公民身份号码", "contributions": 4},
        dimensions=[
            {
                "name": "cost_band",
                "title": "费用段",
                "bands": [
                    {"label": "0-99", "lower": 0, "upper": 99},
                    {"label": "100-499", "lower": 100, "upper": 499},
                    {"label": "500-1999", "lower": 500, "upper": 1999},
                    {"label": "2000+", "lower": 2000, "upper": 1000000},
                ],
            }
        ],
        query={
            "base": "YBJS",
            "period_field": "就诊日期",
            "derive": [{"dimension": "cost_band", "field": "医疗总费用", "as": "band"}],
            "values": [{"name": "settlements", "per_unit": "rows", "bounds": [0, 20]}],
        },
        tables=[
            {
                "name": "by_band",
                "title": "结算笔数",
                "title_en": "settlements by cost band",
                "by": ["cost_band"],
                "measures": [
                    {"name": "patients", "title": "人数", "aggregate": "count"},
                    {
                        "name": "settlements",
                        "title": "笔数",
                        "aggregate": "sum",
                        "field": "settlements",
                        "bounds": [0, 20],
                    },
                ],
            }
        ],
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
        tables=[
            {
                "name": "by_district_quarter",
                "title": "女性缴费人数",
                "title_en": "women contributing",
                "by": ["district", "quarter"],
                "measures": [{"name": "women", "title": "人数", "aggregate": "count"}],
            }
        ],
    )


def ho_ages_at_mid_year() -> dict[str, Any]:
    """Age at the end of a period that ends mid-year: persons born after it are excluded."""
    return spec(
        "ho_ages_at_mid_year",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "出生日期"]}],
        privacy_unit=PERSON,
        reference_period=["2025-01-01", "2025-06-30"],
        dimensions=[
            {
                "name": "age_band",
                "title": "年龄段",
                "bands": [
                    {"label": "0", "lower": 0, "upper": 0},
                    {"label": "1-17", "lower": 1, "upper": 17},
                    {"label": "18+", "lower": 18, "upper": 130},
                ],
            }
        ],
        query={
            "base": "RKJBXX",
            "derive": [{"dimension": "age_band", "field": "出生日期", "as": "age_band"}],
        },
        tables=[
            {
                "name": "by_age",
                "title": "人数",
                "title_en": "persons by age",
                "by": ["age_band"],
                "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}],
            }
        ],
    )


def ho_three_weights() -> dict[str, Any]:
    """Three tables over one query, ρ split 1 : 2 : 5 by weight."""
    tables = [
        {
            "name": f"t{w}",
            "title": f"表{w}",
            "title_en": f"table {w}",
            "by": ["district"],
            "measures": [{"name": "persons", "title": "人数", "aggregate": "count"}],
            "weight": w,
        }
        for w in (1, 2, 5)
    ]
    return spec(
        "ho_three_weights",
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]}],
        privacy_unit=PERSON,
        budget={"rho": 0.08},
        dimensions=[DISTRICTS],
        query={
            "base": "RKJBXX",
            "derive": [{"dimension": "district", "field": "户籍区划代码", "as": "county"}],
        },
        tables=tables,
    )


def ho_fund_share_by_quarter_district() -> dict[str, Any]:
    """YBJS × RKJBXX, district × quarter with per-cell contributions capped at 2 of 4 × 6
    cells, and a per-unit cap on raw rows; ratio of two sums."""
    return spec(
        "ho_fund_share_by_quarter_district",
        inputs=[
            {
                "resource": "YBJS",
                "fields": ["公民身份号码", "就诊日期", "医疗总费用", "统筹支付金额"],
            },
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
        tables=[
            {
                "name": "by_district_quarter",
                "title": "统筹支付占比",
                "title_en": "fund share of cost",
                "by": ["district", "quarter"],
                "measures": [
                    {"name": "patients", "title": "人数", "aggregate": "count"},
                    {
                        "name": "cost",
                        "title": "总费用",
                        "aggregate": "sum",
                        "field": "cost",
                        "bounds": [0, 6000],
                    },
                    {
                        "name": "fund",
                        "title": "统筹支付",
                        "aggregate": "sum",
                        "field": "fund",
                        "bounds": [0, 6000],
                    },
                ],
                "derived": [
                    {
                        "name": "fund_ratio",
                        "title": "统筹占比",
                        "op": "ratio",
                        "numerator": "fund",
                        "denominator": "cost",
                    }
                ],
            }
        ],
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
            "values": [
                {"name": "base", "per_unit": "mean", "field": "缴费基数", "bounds": [0, 30000]}
            ],
        },
        tables=[
            {
                "name": "by_age_district",
                "title": "青年参保人数",
                "title_en": "young contributors",
                "by": ["age_band", "district"],
                "measures": [
                    {"name": "persons", "title": "人数", "aggregate": "count"},
                    {
                        "name": "base_sum",
                        "title": "基数合计",
                        "aggregate": "sum",
                        "field": "base",
                        "bounds": [0, 30000],
                    },
                ],
                "derived": [
                    {
                        "name": "avg_base",
                        "title": "平均基数",
                        "op": "ratio",
                        "numerator": "base_sum",
                        "denominator": "persons",
                    }
                ],
            }
        ],
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


# --- what the compiled plans compute, against plain polars on the same frames -----------------


def _ctx(home: Home, product: str) -> engine.BuildContext:
    from catalogs.catalog import Catalog
    from shuyu_core import snapshots

    sp = specs.get(product)
    inputs = {i.resource: snapshots.get(home, i.resource, None) for i in sp.inputs}
    return engine.BuildContext(home, sp, Catalog.load(), inputs, "t", engine.BuildOptions(), [])


def _cells(home: Home, product: str, table: str) -> pl.DataFrame:
    """Per cell of ``table``: distinct units of the compiled, bounded plan (with the unit)."""
    from products.language import compile as qc

    ctx = _ctx(home, product)
    t = next(t for t in ctx.spec.tables if t.name == table)
    fast = qc.unit_first(ctx, t)
    lf = fast if fast is not None else qc.bounded(ctx.spec, qc.rows(ctx), t)
    return lf.collect()


def _counts(cells: pl.DataFrame, by: list[str]) -> dict[tuple[str, ...], int]:
    got = cells.group_by(by).agg(pl.col("__unit").n_unique().alias("n"))
    return {tuple(r[:-1]): r[-1] for r in got.iter_rows()}


def test_persons_born_after_the_period_end_are_excluded(ho: tuple[Home, Path]) -> None:
    home, spec_dir = ho
    product = write(spec_dir, ho_ages_at_mid_year())
    end = pl.date(2025, 6, 30)
    people = frames()["RKJBXX"]
    assert people.filter(pl.col("出生日期") > end).height > 0  # the case exists
    born = pl.col("出生日期")
    age = (
        2025
        - born.dt.year().cast(pl.Int32)
        - ((born.dt.month().cast(pl.Int32) * 100 + born.dt.day().cast(pl.Int32)) > 630).cast(
            pl.Int32
        )
    )
    truth = (
        people.filter(born <= end)
        .with_columns(
            band=pl.when(age == 0)
            .then(pl.lit("0"))
            .when(age <= 17)
            .then(pl.lit("1-17"))
            .otherwise(pl.lit("18+"))
        )
        .group_by("band")
        .len()
    )
    want = {(b,): n for b, n in truth.iter_rows()}
    assert _counts(_cells(home, product, "by_age"), ["age_band"]) == want


def test_numeric_bands_hold_every_amount_between_whole_numbers(ho: tuple[Home, Path]) -> None:
    """99.5 belongs to 0-99: a band covers [lower, upper + 1). Counted in settlement rows."""
    home, spec_dir = ho
    product = write(spec_dir, ho_costs_in_bands())
    visits = frames()["YBJS"].filter(pl.col("就诊日期").dt.year() == 2025)
    gaps = pl.lit(False)
    for upper in (99, 499, 1999):
        gaps = gaps | pl.col("医疗总费用").is_between(upper, upper + 1, closed="none")
    assert visits.filter(gaps).height > 0  # amounts between two whole-number bands exist
    cells = _cells(home, product, "by_band")
    # Per (unit, band): rows, bounded to 20; summed per band it is the settlements in it.
    got = cells.group_by("cost_band").agg(pl.col("settlements").sum())
    cost = pl.col("医疗总费用")
    truth = (
        visits.with_columns(
            band=pl.when(cost < 100)
            .then(pl.lit("0-99"))
            .when(cost < 500)
            .then(pl.lit("100-499"))
            .when(cost < 2000)
            .then(pl.lit("500-1999"))
            .otherwise(pl.lit("2000+"))
        )
        .group_by("公民身份号码", "band")
        .len()
        .with_columns(pl.col("len").clip(0, 20))
    )
    want = dict(truth.group_by("band").agg(pl.col("len").sum()).iter_rows())
    assert dict(got.iter_rows()) == pytest.approx(want)
    assert sum(want.values()) == pytest.approx(
        visits.group_by("公民身份号码").len()["len"].clip(0, 80).sum(), rel=0.05
    )


def test_a_filter_on_the_joined_resource_selects_rows(ho: tuple[Home, Path]) -> None:
    """Women only; the join's match rate is about the keys, not the filter (100 %)."""
    from products.language import compile as qc

    home, spec_dir = ho
    product = write(spec_dir, ho_women_contributors())
    assert qc.match_rates(_ctx(home, product)) == {"RKJBXX": 1.0}
    f = frames()
    women = f["RKJBXX"].filter(pl.col("性别") == "女").select("公民身份号码", "户籍区划代码")
    rows = (
        f["SBCBJF"]
        .filter(pl.col("参保状态") == "正常参保", pl.col("缴费月份").str.slice(0, 4) == "2025")
        .join(women, on="公民身份号码")
        .with_columns(
            quarter=pl.col("缴费月份").str.slice(0, 4)
            + "Q"
            + ((pl.col("缴费月份").str.slice(4, 2).cast(pl.Int32) - 1) // 3 + 1).cast(pl.String)
        )
        .unique(["公民身份号码", "户籍区划代码", "quarter"])
    )
    want = {(d, q): n for d, q, n in rows.group_by("户籍区划代码", "quarter").len().iter_rows()}
    cells = _cells(home, product, "by_district_quarter")
    assert int(cells.group_by("__unit").len()["len"].max()) <= 4  # type: ignore[arg-type]
    assert _counts(cells, ["district", "quarter"]) == want  # ≤ 4 quarters: nothing capped


def test_cells_per_unit_are_capped_and_values_clipped(ho: tuple[Home, Path]) -> None:
    home, spec_dir = ho
    product = write(spec_dir, ho_fund_share_by_quarter_district())
    visits = frames()["YBJS"].filter(pl.col("就诊日期").dt.year() == 2025)
    quarters = visits.group_by("公民身份号码").agg(pl.col("就诊日期").dt.quarter().n_unique())
    assert quarters.filter(pl.col("就诊日期") >= 3).height > 0  # persons in 3+ cells exist
    cells = _cells(home, product, "by_district_quarter")
    per_unit = cells.group_by("__unit").len()["len"].to_list()
    assert max(per_unit) == 2  # contributions: 2
    cost = cells["cost"].to_list()
    assert min(cost) >= 0 and max(cost) <= 6000


def test_weights_split_the_release_rho_and_epsilon_converts(ho: tuple[Home, Path]) -> None:
    from catalogs.product_models import rho_from_epsilon

    home, spec_dir = ho
    m, _ = _built(home, write(spec_dir, ho_three_weights()))
    assert m.budget is not None
    shares = {mech.output: mech.rho for mech in m.mechanisms}
    assert shares == pytest.approx({"t1": 0.01, "t2": 0.02, "t5": 0.05})
    sigma = {mech.output: mech.measures[0].scale for mech in m.mechanisms}
    # ρ ∝ 1/σ² for one count per table (sensitivity 1): σ(t1)/σ(t5) = sqrt(5).
    assert sigma["t1"] / sigma["t5"] == pytest.approx(5**0.5, rel=0.02)
    m2, _ = _built(home, write(spec_dir, ho_women_contributors()))
    assert m2.budget is not None
    assert m2.budget.rho == pytest.approx(rho_from_epsilon(1.0, 1e-7))


def test_released_counts_sit_within_their_noise_of_the_truth(ho: tuple[Home, Path]) -> None:
    """Province/prefecture of the registry: 210000/210800 hold every adult, the other keys
    none; |noise| ≤ 6σ + 1 (P(failure) < 1e-8 per cell)."""
    home, spec_dir = ho
    m, tables = _built(home, write(spec_dir, ho_residents_by_region()))
    adults = frames()["RKJBXX"].filter(pl.col("出生日期") <= pl.date(2007, 12, 31))
    sigma = {(mech.output, x.column): x.scale for mech in m.mechanisms for x in mech.measures}
    df = tables["by_province_sex"]
    for prov, sex, n in df.select("province", "sex", "persons").iter_rows():
        if n is None:
            continue
        want = adults.filter(pl.col("性别") == sex).height if prov == "210000" else 0
        assert abs(n - want) <= 6 * sigma[("by_province_sex", "persons")] + 1
    pref = tables["by_prefecture"]
    got = dict(pref.select("prefecture", "persons").iter_rows())
    assert got["210800"] is not None
    assert abs(got["210800"] - adults.height) <= 6 * sigma[("by_prefecture", "persons")] + 1


# --- shuyu products plan and shuyu build --yes ---------------------------------------------------


def test_plan_then_build_from_the_command_line(
    ho: tuple[Home, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from products import planning

    home, spec_dir = ho
    product = write(spec_dir, ho_visits_by_age_quarter())
    capsys.readouterr()
    assert (
        run_cli(
            monkeypatch, "products", "plan", product, "--target", "patients=6", "--format", "json"
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["table"], r["measure"]): r for r in doc["measures"]}
    assert set(rows) == {
        ("by_age_quarter", "patients"),
        ("by_age_quarter", "visits"),
        ("by_age_quarter", "cost"),
        ("by_age", "patients"),
    }
    assert rows[("by_age_quarter", "patients")]["cells"] == 16
    before = {b["resource"]: b["remaining_rho"] for b in doc["budget"]}
    assert before == {"YBJS": 1.0, "RKJBXX": 2.0}
    # The ρ the plan names for ±6 reaches ±6, and 2 % less does not.
    need = rows[("by_age_quarter", "patients")]["rho_needed"]
    sp = specs.get(product)
    for rho, ok in ((need, True), (need * 0.98, False)):
        assert sp.budget is not None
        again = sp.model_copy(update={"budget": sp.budget.model_copy(update={"rho": rho})})
        hw = next(
            r.half_width
            for r in planning.plan(again)
            if (r.table, r.measure) == ("by_age_quarter", "patients")
        )
        assert (hw <= 6) is ok, (rho, hw)

    assert run_cli(monkeypatch, "build", product, "--yes") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any("将扣减 will charge ρ=0.05" in line for line in out)
    release_id = out[-1]
    m = rel.load(home, release_id)
    # What the plan promised is what the release states, per measure.
    for mech in m.mechanisms:
        for x in mech.measures:
            assert x.ci_half_width == pytest.approx(rows[(mech.output, x.column)]["half_width"])
    assert run_cli(monkeypatch, "products", "plan", product, "--format", "json") == 0
    after = {
        b["resource"]: b["remaining_rho"] for b in json.loads(capsys.readouterr().out)["budget"]
    }
    assert after == pytest.approx({"YBJS": 0.95, "RKJBXX": 1.95})
    # Built again: the stored release, no second charge.
    assert run_cli(monkeypatch, "build", product, "--yes", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reused"] is True
    assert len(ledger.all_entries(home)) == 2


def test_match_rate_floor_below_and_above(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry holding about 70 % of the patients: the spec with a 0.99 floor is refused
    before any charge (audited, one line), the one with a 0.5 floor builds and notes its rate."""
    from governance import audit
    from shuyu_core.errors import ValidationError

    f = frames()
    part = f["RKJBXX"].filter(pl.col("公民身份号码").hash(3) % 10 < 7)
    ingest_frames(home, {"RKJBXX": part, "YBJS": f["YBJS"]}, ["RKJBXX", "YBJS"])
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements(tmp_path / "agreements")))
    spec_dir = tmp_path / "heldout_specs"
    spec_dir.mkdir()
    monkeypatch.setenv("SHUYU_PRODUCTS", str(spec_dir))
    strict = write(spec_dir, ho_settlements_by_chapter_county())
    with pytest.raises(ValidationError, match=r"RKJBXX matches [67]\d\.\d% .* below the floor 99%"):
        engine.build(home, strict)
    last = audit.tail(home, 1)[0]
    assert (last["action"], last["object"], last["outcome"]) == ("product.build", strict, "error")
    assert ledger.all_entries(home) == []
    m, _ = _built(home, write(spec_dir, ho_fund_share_by_quarter_district()))
    assert any(re.match(r"RKJBXX 匹配率 match rate [67]\d\.\d\d%", n) for n in m.notes)


def test_the_match_rate_is_the_snapshots_not_the_selection(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate is computed (and can refuse) before any charge, for free, so it must not
    answer questions about the rows a spec selects: one settlement picked by amount and day,
    whose patient is missing from the registry, gives the same rate as all of them."""
    from products.language import compile as qc

    f = frames()
    part = f["RKJBXX"].filter(pl.col("公民身份号码").hash(3) % 10 < 7)
    ingest_frames(home, {"RKJBXX": part, "YBJS": f["YBJS"]}, ["RKJBXX", "YBJS"])
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements(tmp_path / "agreements")))
    spec_dir = tmp_path / "heldout_specs"
    spec_dir.mkdir()
    monkeypatch.setenv("SHUYU_PRODUCTS", str(spec_dir))
    missing = f["YBJS"].filter(
        ~pl.col("公民身份号码").is_in(part["公民身份号码"].implode()),
        pl.col("就诊日期").dt.year() == 2025,
    )
    target = missing.row(0, named=True)
    assert (
        f["YBJS"]
        .filter(
            pl.col("医疗总费用") == target["医疗总费用"], pl.col("就诊日期") == target["就诊日期"]
        )
        .height
        == 1
    )  # this selection is one settlement of one person
    everyone = write(spec_dir, ho_fund_share_by_quarter_district())
    doc = ho_fund_share_by_quarter_district()
    doc["id"] = "ho_one_settlement"
    doc["query"]["filters"] = [
        {"field": "医疗总费用", "op": "eq", "value": target["医疗总费用"]},
        {"field": "就诊日期", "op": "eq", "value": target["就诊日期"].isoformat()},
    ]
    one = write(spec_dir, doc)
    rates = {p: qc.match_rates(_ctx(home, p)) for p in (everyone, one)}
    assert rates[one] == rates[everyone]
    assert 0.6 < rates[one]["RKJBXX"] < 0.8
