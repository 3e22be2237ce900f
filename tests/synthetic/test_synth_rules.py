"""Generated data against the catalog: schemas, every declared rule, the defect ground truth,
and python-stdnum as an independent oracle for ID numbers and credit codes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from stdnum.cn import ric, uscc

from catalogs import codelists
from catalogs.catalog import PACKAGED_RESOURCES, Catalog
from catalogs.models import Resource
from synthetic_data.generate import CODES, SyntheticFrames, generate_frames_detailed

AS_OF = dt.date(2025, 6, 30)
PERSONS = 6_000
RATE = 0.1


@pytest.fixture(scope="module")
def synth() -> SyntheticFrames:
    return generate_frames_detailed(PERSONS, seed=7, defect_rate=RATE, as_of=AS_OF)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(PACKAGED_RESOURCES)


def _check_digit_ok(values: pl.Series, kind: str) -> pl.Series:
    oracle = ric.is_valid if kind == "GB11643" else uscc.is_valid
    return pl.Series([v is None or oracle(v) for v in values.to_list()], dtype=pl.Boolean)


def rule_failures(frame: pl.DataFrame, res: Resource, frames: dict[str, pl.DataFrame]) -> dict:
    """{rule: boolean Series of failing rows}, computed from the catalog rules only.
    Nulls fail ``required`` and nothing else; ``primary_key`` flags every row past the first
    occurrence of its key."""
    as_of = pl.lit(AS_OF)
    fails: dict[str, pl.Series] = {}

    def add(rule: str, mask: pl.Series) -> None:
        mask = mask.fill_null(False)
        fails[rule] = fails[rule] | mask if rule in fails else mask

    for f in res.fields:
        col = frame[f.name]
        r = f.rules
        if f.required:
            add("required", col.is_null())
        if r.pattern:
            add("pattern", ~col.str.contains(r.pattern))
        if r.check_digit:
            add("check_digit", ~_check_digit_ok(col, r.check_digit))
        if r.codelist:
            add("codelist", ~col.is_in(list(codelists.load(r.codelist))))
        if r.allowed:
            add("allowed", ~col.is_in(r.allowed))
        if r.min is not None:
            add("range", col < r.min)
        if r.max is not None:
            add("range", col > r.max)
        if r.not_future:
            add("not_future", frame.select(pl.col(f.name) > as_of).to_series())
        if r.max_age_days is not None:
            limit = AS_OF - dt.timedelta(days=r.max_age_days)
            add("max_age_days", col < limit)
        if r.references:
            target = frames[r.references.resource][r.references.field]
            add("references", ~col.is_in(target.implode()))
        if r.consistent_with_id:
            idc = frame[r.consistent_with_id]
            if f.type == "date":
                born = idc.str.slice(6, 8).str.strptime(pl.Date, "%Y%m%d", strict=False)
                add("consistent_with_id", born != col)
            else:
                odd = idc.str.slice(16, 1).cast(pl.Int64) % 2 == 1
                add("consistent_with_id", pl.Series(np.where(odd, "男", "女")) != col)
    if res.primary_key:
        first = frame.select(pl.struct(res.primary_key).is_first_distinct()).to_series()
        add("primary_key", ~first)
    return fails


KIND_RULE = {
    "null_required": "required",
    "bad_check_digit": "check_digit",
    "birth_inconsistent": "consistent_with_id",
    "duplicate_key": "primary_key",
    "out_of_range": "range",
    "future_date": "not_future",
    "stale_record": "max_age_days",
}


def test_schema_matches_catalog(synth: SyntheticFrames, catalog: Catalog) -> None:
    for code in CODES:
        res = catalog.get(code)
        expected = {f.name: f.polars_type for f in res.fields}
        assert dict(synth.frames[code].schema) == expected, code
    assert set(synth.defects["datasets"]) == set(CODES)


@pytest.mark.parametrize("code", CODES)
def test_defect_counts_match_catalog_rules(
    synth: SyntheticFrames, catalog: Catalog, code: str
) -> None:
    frame = synth.frames[code]
    res = catalog.get(code)
    fails = rule_failures(frame, res, synth.frames)
    truth = synth.defects["datasets"][code]
    assert truth["rows"] == frame.height
    any_fail = pl.Series(np.zeros(frame.height, dtype=bool))
    n_fail_rules = np.zeros(frame.height, dtype=np.int64)
    for mask in fails.values():
        any_fail = any_fail | mask
        n_fail_rules += mask.cast(pl.Int64).to_numpy()
    # One defect per row: no row breaks two rules, and no rule breaks on a clean row.
    assert n_fail_rules.max() <= 1
    assert fails.get("references", pl.Series([False])).sum() == 0
    assert fails.get("pattern", pl.Series([False])).sum() == 0
    total_defects = 0
    for kind, entry in truth["defects"].items():
        rule = KIND_RULE.get(kind) or ("codelist" if "codelist" in fails else "allowed")
        assert entry["rule"] == rule
        assert entry["rows"] > 0, (code, kind)
        assert int(fails[rule].sum()) == entry["rows"], (code, kind)
        rows = synth.defects_detail[code][kind]
        assert len(rows) == entry["rows"]
        assert fails[rule].gather(rows).all(), (code, kind)
        total_defects += entry["rows"]
    # future_date and stale_record share 更新日期 in SBCBJF: every failing row is accounted.
    assert int(any_fail.sum()) == total_defects
    base_rows = frame.height - truth["defects"]["duplicate_key"]["rows"]
    assert abs(total_defects - RATE * base_rows) <= 1


def test_identifiers_pass_stdnum(synth: SyntheticFrames) -> None:
    rk = synth.frames["RKJBXX"]["公民身份号码"]
    bad = synth.defects_detail["RKJBXX"]["bad_check_digit"]
    ok = _check_digit_ok(rk, "GB11643").to_numpy()
    assert not ok[bad].any()
    assert ok.sum() == rk.len() - len(bad)
    sc = synth.frames["SCZTDJ"]["统一社会信用代码"]
    bad_sc = synth.defects_detail["SCZTDJ"]["bad_check_digit"]
    ok_sc = _check_digit_ok(sc, "GB32100").to_numpy()
    assert not ok_sc[bad_sc].any()
    assert ok_sc.sum() == sc.len() - len(bad_sc)
    # Organization code inside the USCC, authority 9, Yingkou region.
    assert sc.str.contains(r"^9[123]2108\d{2}").all()
    # Settlement numbers are 18 digits but never a valid ID number.
    settle = synth.frames["YBJS"]["结算单号"]
    assert settle.str.contains(r"^\d{18}$").all()
    assert not any(ric.is_valid(v) for v in settle.to_list())


def test_references_resolve_with_matching_names(synth: SyntheticFrames) -> None:
    f = synth.frames
    people = f["RKJBXX"].select("公民身份号码", "姓名").unique("公民身份号码", keep="first")
    reps = f["SCZTDJ"].join(people, left_on="法定代表人证件号码", right_on="公民身份号码")
    assert reps.height == f["SCZTDJ"].height
    assert (reps["法定代表人"] == reps["姓名"]).all()
    visits = f["YBJS"].join(people, on="公民身份号码", suffix="_p")
    assert visits.height == f["YBJS"].height
    assert (visits["姓名"] == visits["姓名_p"]).all()
    employers = f["SCZTDJ"].filter(pl.col("登记状态").is_in(["存续", "在业"]))
    ok = f["SBCBJF"]["单位统一社会信用代码"].is_in(employers["统一社会信用代码"].implode())
    assert ok.all()
    # Persons and enterprises whose keys are corrupted or duplicated are never referenced.
    dup_ids = f["RKJBXX"].filter(pl.col("公民身份号码").is_duplicated())["公民身份号码"]
    for code in ("SBCBJF", "YBJS"):
        assert not f[code]["公民身份号码"].is_in(dup_ids.implode()).any()


def test_realistic_shape(synth: SyntheticFrames) -> None:
    f = synth.frames
    rk = f["RKJBXX"]
    age = rk.select(
        lo=(pl.lit(AS_OF) - pl.col("出生日期")).dt.total_days().min() / 365.25,
        hi=(pl.lit(AS_OF) - pl.col("出生日期")).dt.total_days().max() / 365.25,
        mean=(pl.lit(AS_OF) - pl.col("出生日期")).dt.total_days().mean() / 365.25,
    ).row(0, named=True)
    assert age["lo"] >= 0 and age["hi"] < 102
    assert 35 < age["mean"] < 50  # Liaoning is an ageing province
    ethnic = rk["民族"].value_counts(normalize=True)
    share = dict(zip(ethnic["民族"], ethnic["proportion"], strict=True))
    assert share["汉族"] > 0.7 and share["满族"] > 0.08
    assert rk["户籍区划代码"].is_in(list(codelists.load("yingkou_districts"))).all()
    phones = rk["联系电话"].drop_nulls()
    assert phones.str.contains(r"^1[3-9]\d{9}$").all()
    assert 0.08 < f["SCZTDJ"].height / PERSONS < 0.12
    assert 7 < f["SBCBJF"].height / PERSONS < 13
    latest = f["SBCBJF"].select(pl.col("缴费月份").max()).item()
    assert latest <= f"{AS_OF.year}{AS_OF.month:02d}"
    pension = f["SBCBJF"].select((pl.col("险种") == "企业职工基本养老保险").mean()).item()
    assert pension > 0.5
    yb = f["YBJS"]
    clean = np.ones(yb.height, dtype=bool)
    clean[synth.defects_detail["YBJS"]["out_of_range"]] = False
    worst = (
        yb.filter(pl.Series(clean))
        .select(
            (pl.col("统筹支付金额") + pl.col("个人自付金额") - pl.col("医疗总费用")).abs().max()
        )
        .item()
    )
    assert worst < 0.005
    sc = f["SCZTDJ"]
    closed = sc.filter(pl.col("注销日期").is_not_null())
    assert (closed["登记状态"] == "注销").all()
    assert (closed["注销日期"] >= closed["成立日期"]).all()
    assert sc.filter(pl.col("登记状态") == "注销")["注销日期"].null_count() == 0
