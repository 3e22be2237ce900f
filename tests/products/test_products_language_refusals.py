"""Wrong held-out specs and attempted leaks, through ``shuyu build ID --yes``.

Every wrong spec must be refused before any charge: exit non-zero, one line naming the thing
and the fix, an audit entry with that line, and no ledger row. One case per class of mistake
(field names, declarations, key sets, code lists and mappings, measures and derived values,
bounds and weights, joins, field types, calendars, identifiers).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from heldout_testkit import agreements, run_cli, write
from products_testkit import frames, ingest_frames
from test_products_language_heldout import (
    ho_contributors_by_month,
    ho_entities_by_section_year,
    ho_settlements_by_chapter_county,
    ho_visits_by_age_quarter,
    ho_women_contributors,
)

from governance import audit
from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from shuyu_core.home import Home

Doc = dict[str, Any]


@pytest.fixture()
def ho(home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Home, Path]:
    ingest_frames(home, frames(), ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"])
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements(tmp_path / "agreements")))
    spec_dir = tmp_path / "heldout_specs"
    spec_dir.mkdir()
    monkeypatch.setenv("SHUYU_PRODUCTS", str(spec_dir))
    return home, spec_dir


def _edit(make: Callable[[], Doc], change: Callable[[Doc], object]) -> Callable[[], Doc]:
    def made() -> Doc:
        doc = copy.deepcopy(make())
        change(doc)
        return doc

    return made


def _q(doc: Doc) -> Doc:
    q: Doc = doc["query"]
    return q


def _table(doc: Doc, i: int = 0) -> Doc:
    t: Doc = doc["tables"][i]
    return t


def _set(path: list[Any], value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        node: Any = doc
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return change


MED, SI, VISITS, WOMEN, FIRMS = (
    ho_settlements_by_chapter_county,
    ho_contributors_by_month,
    ho_visits_by_age_quarter,
    ho_women_contributors,
    ho_entities_by_section_year,
)

# (case, spec, what the one-line error must say)
WRONG: list[tuple[str, Callable[[], Doc], str]] = [
    # field names: a typo, a field not in the catalog, a catalogued field not declared
    (
        "typo_in_derive_field",
        _edit(MED, _set(["query", "derive", 1, "field"], "RKJBXX.户籍区化代码")),
        r"unknown field RKJBXX\.户籍区化代码",
    ),
    (
        "typo_in_inputs",
        _edit(MED, _set(["inputs", 1, "fields"], ["公民身份号码", "户藉区划代码"])),
        r"RKJBXX has no field\(s\) 户藉区划代码",
    ),
    (
        "undeclared_field",
        _edit(MED, _set(["query", "derive", 1, "field"], "RKJBXX.性别")),
        r"RKJBXX\.性别 is read but not declared under inputs",
    ),
    (
        "filter_on_resource_not_joined",
        _edit(SI, _set(["query", "filters", 0, "field"], "RKJBXX.性别")),
        r"RKJBXX is neither the base nor joined",
    ),
    # key sets: never from the data
    (
        "dimension_without_key_set",
        _edit(MED, _set(["dimensions", 1], {"name": "district", "title": "区县"})),
        r"dimension district: give exactly one of codelist",
    ),
    (
        "keys_from_the_data",
        _edit(MED, _set(["dimensions", 1], {"name": "district", "title": "区县", "keys": "data"})),
        r"dimensions\[1\]\.keys: Extra inputs are not permitted",
    ),
    (
        "unknown_code_list",
        _edit(MED, _set(["dimensions", 1, "codelist"], "yingkou_district")),
        r"dimension district: unknown code list yingkou_district",
    ),
    (
        "unknown_mapping",
        _edit(MED, _set(["query", "derive", 0, "mapping"], "icd10_chapters")),
        r"unknown code-list mapping 'icd10_chapters'",
    ),
    (
        "mapping_onto_another_key_set",
        _edit(MED, _set(["dimensions", 0, "codelist"], "gbt4754_sections")),
        r"dimension chapter: .*never produce",
    ),
    (
        "calendar_outside_the_period",
        _edit(VISITS, _set(["dimensions", 1, "quarters"], ["2024Q1", "2024Q4"])),
        r"dimension quarter: .*outside the reference_period",
    ),
    (
        "bands_word_without_bands",
        _edit(MED, _set(["query", "derive", 1, "as"], "age_band")),
        r"dimension district: as age_band needs bands",
    ),
    (
        "missing_derivation",
        _edit(MED, lambda d: _q(d)["derive"].pop(1)),
        r"query\.derive must cover exactly the declared dimensions",
    ),
    # measures, values and derived values
    (
        "derived_of_missing_measure",
        _edit(MED, _set(["tables", 0, "derived", 0, "denominator"], "owns")),
        r"derived fund_minus_own uses unknown owns",
    ),
    (
        "sum_of_undeclared_value",
        _edit(MED, _set(["tables", 0, "measures", 1, "field"], "funds")),
        r"measure fund sums unknown value funds",
    ),
    (
        "mean_as_aggregate",
        _edit(MED, _set(["tables", 0, "measures", 1, "aggregate"], "mean")),
        r"a mean is released as a derived ratio",
    ),
    (
        "share_with_denominator",
        _edit(VISITS, _set(["tables", 1, "derived", 0, "denominator"], "patients")),
        r"share takes no denominator",
    ),
    (
        "unknown_filter_op",
        _edit(SI, _set(["query", "filters", 2, "op"], "gte")),
        r"query\.filters\[2\]\.op: Input should be 'eq'",
    ),
    # bounds, weights, budget
    (
        "negative_row_count_bound",
        _edit(
            VISITS,
            lambda d: (
                _set(["query", "values", 0, "bounds"], [-1, 12])(d),
                _set(["tables", 0, "measures", 1, "bounds"], [-1, 12])(d),
            ),
        ),
        r"value visits: a row count cannot be negative",
    ),
    (
        "reversed_bounds",
        _edit(MED, _set(["query", "values", 0, "bounds"], [5000, 0])),
        r"value fund: bounds must be \(lower, upper\)",
    ),
    (
        "fractional_sum_bounds",
        _edit(
            MED,
            lambda d: (
                _set(["query", "values", 0, "bounds"], [0, 0.5])(d),
                _set(["tables", 0, "measures", 1, "bounds"], [0, 0.5])(d),
            ),
        ),
        r"value fund: bounds \[0\.0, 0\.5\] are not whole numbers",
    ),
    (
        "sum_bounds_differ_from_value",
        _edit(MED, _set(["tables", 0, "measures", 1, "bounds"], [0, 50000])),
        r"measure fund bounds .* differ from value fund",
    ),
    (
        "zero_weight",
        _edit(VISITS, _set(["tables", 1, "weight"], 0)),
        r"tables\[1\]\.weight: Input should be greater than 0",
    ),
    (
        "rho_and_epsilon",
        _edit(MED, _set(["budget"], {"rho": 0.1, "epsilon": 1.0})),
        r"give exactly one of rho \(zCDP\) or epsilon",
    ),
    (
        "match_rate_above_one",
        _edit(MED, _set(["query", "joins", 0, "min_match_rate"], 1.5)),
        r"min_match_rate: Input should be less than or equal to 1",
    ),
    # joins
    (
        "join_on_a_non_reference_field",
        _edit(
            MED,
            _set(
                ["query", "joins", 0],
                {"resource": "RKJBXX", "key": "诊断编码", "field": "户籍区划代码"},
            ),
        ),
        r"join YBJS\.诊断编码 = RKJBXX\.户籍区划代码 is neither on the privacy unit",
    ),
    (
        "join_across_privacy_units",
        _edit(
            SI,
            lambda d: (
                d["inputs"].__setitem__(
                    0,
                    {
                        "resource": "SBCBJF",
                        "fields": [
                            "公民身份号码",
                            "单位统一社会信用代码",
                            "缴费月份",
                            "险种",
                            "缴费基数",
                            "参保状态",
                        ],
                    },
                ),
                d["inputs"].append(
                    {"resource": "SCZTDJ", "fields": ["统一社会信用代码", "行业代码"]}
                ),
                _q(d)
                .setdefault("joins", [])
                .append(
                    {
                        "resource": "SCZTDJ",
                        "key": "单位统一社会信用代码",
                        "field": "统一社会信用代码",
                        "min_match_rate": 0.9,
                    }
                ),
                _set(
                    ["dimensions", 1],
                    {"name": "insurance", "title": "门类", "codelist": "gbt4754_sections"},
                )(d),
                _set(
                    ["query", "derive", 1],
                    {
                        "dimension": "insurance",
                        "field": "SCZTDJ.行业代码",
                        "as": "map",
                        "mapping": "gbt4754_section",
                    },
                )(d),
            ),
        ),
        r"SCZTDJ is protected per 统一社会信用代码, not per 公民身份号码",
    ),
    (
        "join_from_another_persons_field",
        _edit(
            FIRMS,
            lambda d: (
                d["inputs"][0]["fields"].append("法定代表人证件号码"),
                d["inputs"].append({"resource": "RKJBXX", "fields": ["公民身份号码", "性别"]}),
                _q(d)
                .setdefault("joins", [])
                .append(
                    {"resource": "RKJBXX", "key": "法定代表人证件号码", "field": "公民身份号码"}
                ),
            ),
        ),
        r"RKJBXX is protected per 公民身份号码, not per 统一社会信用代码",
    ),
    # field types: what each word, value, filter and period needs
    (
        "age_band_of_a_text_field",
        _edit(VISITS, _set(["query", "derive", 0, "field"], "YBJS.医疗总费用")),
        r"dimension age_band: as age_band needs date, datetime, YBJS\.医疗总费用 is float",
    ),
    (
        "sum_of_a_text_field",
        _edit(MED, lambda d: (_set(["query", "values", 0, "field"], "诊断编码")(d),)),
        r"value fund: sum needs a number, YBJS\.诊断编码 is string",
    ),
    (
        "filter_value_of_the_wrong_type",
        _edit(SI, _set(["query", "filters", 2, "value"], "一千")),
        r"filter on 缴费基数: ge compares a float field with '一千'",
    ),
    (
        "filter_date_not_a_date",
        _edit(
            VISITS,
            _set(["query", "filters", 0], {"field": "就诊日期", "op": "ge", "value": "2025-13-01"}),
        ),
        r"filter on 就诊日期: '2025-13-01' is not a date",
    ),
    (
        "period_field_not_a_date",
        _edit(MED, _set(["query", "period_field"], "统筹支付金额")),
        r"period_field YBJS\.统筹支付金额 is float",
    ),
    (
        "period_field_of_a_joined_resource",
        _edit(
            WOMEN,
            lambda d: (
                d["inputs"][1]["fields"].append("出生日期"),
                _set(["query", "period_field"], "RKJBXX.出生日期")(d),
            ),
        ),
        r"period_field RKJBXX\.出生日期 is not a field of the base SBCBJF",
    ),
    (
        "value_of_an_amount",
        _edit(
            SI,
            lambda d: (
                _set(["dimensions", 1, "values"], ["3000", "4000"])(d),
                _set(["query", "derive", 1, "field"], "缴费基数")(d),
            ),
        ),
        r"dimension insurance: as value needs string, int, bool, date, datetime, "
        r"SBCBJF\.缴费基数 is float",
    ),
    (
        "empty_key_set",
        _edit(VISITS, _set(["dimensions", 1], {"name": "quarter", "title": "季度", "values": []})),
        r"dimension quarter: an empty key set has no cell to release",
    ),
    (
        "band_of_a_text_field",
        _edit(
            MED,
            lambda d: (
                _set(
                    ["dimensions", 1],
                    {
                        "name": "district",
                        "title": "区县",
                        "bands": [
                            {"label": "low", "lower": 0, "upper": 210803},
                            {"label": "high", "lower": 210804, "upper": 219999},
                        ],
                    },
                )(d),
                _set(["query", "derive", 1, "as"], "band")(d),
            ),
        ),
        r"dimension district: as band needs a number, RKJBXX\.户籍区划代码 is string",
    ),
    # identifiers never become keys, nor select rows
    (
        "filter_on_the_privacy_unit",
        _edit(
            MED,
            lambda d: _q(d)["filters"].append(
                {"field": "公民身份号码", "op": "eq", "value": "132126198505144904"}
            ),
        ),
        r"filter on YBJS\.公民身份号码: a personal identifier \(CN_RESIDENT_ID\) may not "
        r"select rows \(eq\)",
    ),
    (
        "filter_on_one_birth_date",
        _edit(
            VISITS,
            lambda d: _q(d)["filters"].append(
                {"field": "RKJBXX.出生日期", "op": "eq", "value": "1985-05-14"}
            ),
        ),
        r"filter on RKJBXX\.出生日期: a personal identifier \(DATE_OF_BIRTH\) may not "
        r"select rows \(eq\)",
    ),
    # identifiers never become keys
    (
        "name_as_a_key",
        _edit(
            WOMEN,
            lambda d: (
                d["inputs"][1]["fields"].append("姓名"),
                _set(
                    ["dimensions", 0], {"name": "district", "title": "姓名", "values": ["王花梓"]}
                )(d),
                _set(
                    ["query", "derive", 0],
                    {"dimension": "district", "field": "RKJBXX.姓名", "as": "value"},
                )(d),
            ),
        ),
        r"dimension district: derived from RKJBXX\.姓名, a personal identifier",
    ),
    (
        "birth_date_as_a_key",
        _edit(
            WOMEN,
            lambda d: (
                d["inputs"][1]["fields"].append("出生日期"),
                _set(
                    ["dimensions", 0],
                    {"name": "district", "title": "生日", "values": ["1985-05-14"]},
                )(d),
                _set(
                    ["query", "derive", 0],
                    {"dimension": "district", "field": "RKJBXX.出生日期", "as": "value"},
                )(d),
            ),
        ),
        r"dimension district: derived from RKJBXX\.出生日期, a personal identifier",
    ),
    (
        "resident_id_as_a_key",
        _edit(
            WOMEN,
            lambda d: (
                _set(
                    ["dimensions", 0],
                    {"name": "district", "title": "身份证", "values": ["132126198505144904"]},
                )(d),
                _set(
                    ["query", "derive", 0],
                    {"dimension": "district", "field": "公民身份号码", "as": "value"},
                )(d),
            ),
        ),
        r"dimension district: 1 literal value\(s\) are identifiers",
    ),
]


@pytest.mark.parametrize(("case", "make", "says"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_spec_is_refused_before_any_charge(
    ho: tuple[Home, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    make: Callable[[], Doc],
    says: str,
) -> None:
    home, spec_dir = ho
    product = write(spec_dir, make())
    capsys.readouterr()
    code = run_cli(monkeypatch, "build", product, "--yes")
    err = capsys.readouterr().err.strip()
    assert code != 0, case
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(says, err), err
    assert " — fix: " in err  # and the fix
    assert ledger.all_entries(home) == []  # nothing charged (nor voided)
    last = audit.tail(home, 1)[0]
    assert last["action"] in ("product.build", "cli.error")
    assert last["outcome"] in ("error", "refused")
    assert re.search(says, str(last["details"]))
    assert not list(home.releases.glob(f"{product}-*"))  # nothing released


# --- leaks ---------------------------------------------------------------------------------


def test_a_cell_that_isolates_one_person_is_noise_and_withheld(
    ho: tuple[Home, Path],
) -> None:
    """A band holding exactly one person's contribution base: the cell is measured like any
    other (σ from the spec), so its count (true 1) is withheld below min_count 10, and its sum
    with it; no released value is that person's."""
    home, spec_dir = ho
    sb = frames()["SBCBJF"].filter(
        pl.col("缴费月份").str.starts_with("2025"), pl.col("险种") == "企业职工基本养老保险"
    )
    per_person = sb.group_by("公民身份号码").agg(pl.col("缴费基数").max())
    lone = per_person.sort("缴费基数", descending=True)["缴费基数"][0]
    second = per_person.sort("缴费基数", descending=True)["缴费基数"][1]
    assert lone >= second + 1  # the richest contributor is alone above the second
    doc = ho_contributors_by_month()
    doc["id"] = "ho_isolating_band"
    doc["budget"] = {"rho": 0.5}
    low = int(second) + 1
    doc["dimensions"] = [
        {
            "name": "band",
            "title": "基数段",
            "bands": [
                {"label": "rest", "lower": 0, "upper": low - 1},
                {"label": "top", "lower": low, "upper": 10_000_000},
            ],
        }
    ]
    doc["query"]["filters"] = [{"field": "险种", "op": "eq", "value": "企业职工基本养老保险"}]
    doc["query"]["derive"] = [{"dimension": "band", "field": "缴费基数", "as": "band"}]
    doc["query"]["values"] = [
        {"name": "base", "per_unit": "max", "field": "缴费基数", "bounds": [0, 60000]}
    ]
    doc["privacy_unit"]["contributions"] = 1
    doc["tables"][0]["by"] = ["band"]
    doc["tables"][0]["measures"][1]["bounds"] = [0, 60000]
    product = write(spec_dir, doc)
    m = engine.build(home, product).manifest
    df = pl.read_parquet(
        rel.release_dir(home, m.release_id) / "data" / "by_month_insurance.parquet"
    )
    top = df.filter(pl.col("band") == "top").row(0, named=True)
    # σ of the count is 1/sqrt(2·ρ_count) ≈ 1.4 here: a noisy count ≥ 10 from a true 1 is a
    # 6σ event; the cell is withheld and the person's base is nowhere in the release.
    assert top["suppressed"] is True
    assert top["contributors"] is None and top["base_sum"] is None and top["avg_base"] is None
    for col in df.columns:
        if df[col].dtype.is_numeric():
            assert lone not in df[col].drop_nulls().to_list()


def test_no_derived_value_gives_back_a_withheld_cell(ho: tuple[Home, Path]) -> None:
    """A release with many small cells (chapter × district): wherever a measure is withheld,
    every derived value using it is withheld too, and a share is withheld everywhere once any
    cell of its table is."""
    home, spec_dir = ho
    doc = ho_settlements_by_chapter_county()
    doc["tables"][0]["derived"].append(
        {"name": "patient_share", "title": "人数占比", "op": "share", "numerator": "patients"}
    )
    doc["tables"][0]["derived"].append(
        {
            "name": "own_per_patient",
            "title": "人均自付",
            "op": "ratio",
            "numerator": "own",
            "denominator": "patients",
        }
    )
    product = write(spec_dir, doc)
    m = engine.build(home, product).manifest
    df = pl.read_parquet(
        rel.release_dir(home, m.release_id) / "data" / "by_chapter_district.parquet"
    )
    assert df["patients"].null_count() > 0  # empty chapters exist: cells are withheld
    assert df["patient_share"].null_count() == df.height
    for derived, operands in (
        ("fund_minus_own", ["fund", "own"]),
        ("own_per_patient", ["own", "patients"]),
    ):
        withheld_input = pl.any_horizontal([pl.col(c).is_null() for c in operands])
        assert df.filter(withheld_input)[derived].null_count() == df.filter(withheld_input).height
        assert df.filter(withheld_input)[f"{derived}_ci95"].null_count() == (
            df.filter(withheld_input).height
        )
    # Every withheld value is listed in the manifest with its reason.
    listed = {(c["chapter"], c["district"]) for c in (s.key for s in m.suppressed)}
    hidden = df.filter(pl.col("patients").is_null()).select("chapter", "district").rows()
    assert set(hidden) <= listed


def test_spec_validation_is_audited_when_the_engine_loads_it(ho: tuple[Home, Path]) -> None:
    """engine.build(home, ID) with a broken spec file: audited like any refusal."""
    home, spec_dir = ho
    doc = _edit(MED, _set(["tables", 0, "weight"], -1))()
    product = write(spec_dir, doc)
    from shuyu_core.errors import ValidationError

    with pytest.raises(ValidationError, match="weight"):
        engine.build(home, product)
    last = audit.tail(home, 1)[0]
    assert (last["action"], last["object"], last["outcome"]) == ("product.build", product, "error")
    assert ledger.all_entries(home) == []
    assert specs.products_dir() == spec_dir


@pytest.mark.parametrize(
    "case", ["typo_in_derive_field", "mapping_onto_another_key_set", "join_across_privacy_units"]
)
def test_plan_refuses_what_the_build_would_refuse(
    ho: tuple[Home, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    """``shuyu products plan`` never shows half-widths for a spec that cannot be built."""
    home, spec_dir = ho
    _case, make, says = next(w for w in WRONG if w[0] == case)
    product = write(spec_dir, make())
    capsys.readouterr()
    assert run_cli(monkeypatch, "products", "plan", product, "--format", "json") != 0
    out = capsys.readouterr()
    assert out.out == "" and re.search(says, out.err)
    last = audit.tail(home, 1)[0]
    assert last["action"] == "cli.error" and re.search(says, str(last["details"]))


def test_rows_that_do_not_fit_the_plan_void_the_charge(
    ho: tuple[Home, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the static checks cannot foresee (here: a bounded plan that fails when the rows
    are read) stops the build before any noise: one line, and the charge is void, not kept
    charged for a draw that will never come."""
    from products.language import compile as qc
    from shuyu_core.errors import ValidationError

    home, spec_dir = ho
    product = write(spec_dir, ho_contributors_by_month())
    real = qc.bounded

    def failing(spec: Any, rows: pl.LazyFrame, table: Any) -> pl.LazyFrame:
        # Resolves its schema (the plan passes) but fails on the first row read.
        return real(spec, rows, table).with_columns(
            pl.col("month").cast(pl.Int64, strict=True).cast(pl.String).alias("month")
        )

    monkeypatch.setattr(qc, "bounded", failing)
    with pytest.raises(ValidationError, match="the rows do not fit the query"):
        engine.build(home, product)
    # The exact-cells pass reads the rows in the plan, before the charge: nothing charged.
    assert ledger.all_entries(home) == []
    assert "product.build" in {e["action"] for e in audit.tail(home, 3)}
    # Failing only once the plan has passed (the draw reads the rows again): the charge is
    # void, not kept charged for a draw that will never come.
    from products.language import builder as lang
    from products.language import cells

    monkeypatch.setattr(qc, "bounded", real)
    real_compute, real_draw = cells.compute, lang.LanguageReportBuilder.draw
    calls = {"n": 0}

    def fails_after_the_plan(ctx: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise pl.exceptions.InvalidOperationError("conversion failed")
        return real_compute(ctx)

    def draw_reading_again(self: Any, ctx: Any) -> Any:
        self._cells.pop(ctx.release_id, None)
        return real_draw(self, ctx)

    monkeypatch.setattr(cells, "compute", fails_after_the_plan)
    monkeypatch.setattr(lang.LanguageReportBuilder, "draw", draw_reading_again)
    with pytest.raises(ValidationError, match="the rows do not fit the query"):
        engine.build(home, product)
    entries = ledger.all_entries(home)
    assert entries and {e.state for e in entries} == {"void"}
    assert {e["action"] for e in audit.tail(home, 6)} >= {"budget.void", "product.build"}
