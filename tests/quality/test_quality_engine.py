"""The check engine: rule counts against injected defects, null handling, layering, contract."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import polars as pl
import pytest
from stdnum import luhn
from stdnum.cn import ric, uscc

from catalogs.catalog import Catalog
from catalogs.models import Resource
from quality import api
from quality.engine import check_snapshot
from quality.testing import clean_population, write_snapshot
from quality.validators import luhn_valid, resident_id_valid, uscc_valid
from shuyu_core.home import Home
from synthetic_data.generate import SyntheticFrames


def _rule_for(res: Resource, rule: str, columns: list[str]) -> str:
    """The check's rule id that corresponds one-to-one to a defects.json entry."""
    if rule == "primary_key":
        if len(columns) == 1 and res.field(columns[0]).rules.unique:
            return f"unique:{columns[0]}"
        return "primary_key"
    kind = {"max_age_days": "max_age"}.get(rule, rule)
    return f"{kind}:{columns[0]}"


def test_every_injected_defect_is_counted_exactly(
    home: Home, synth: SyntheticFrames, ingest: Any, as_of: dt.date
) -> None:
    catalog = Catalog.load()
    for code in ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS"):
        ingest(code, synth.frames[code])
    for code, doc in synth.defects["datasets"].items():
        res = catalog.get(code)
        result = check_snapshot(home, res, as_of=as_of)
        assert result.rows == doc["rows"]
        expected: dict[str, int] = {}
        for kind, d in doc["defects"].items():
            assert d["rows"] > 0, f"{code}/{kind}: the fixture must inject every kind"
            expected[_rule_for(res, d["rule"], d["columns"])] = d["rows"]
        got = {r.rule: r.failed for r in result.rules}
        for rule_id, count in expected.items():
            assert got[rule_id] == count, f"{code} {rule_id}"
        # No false positives: every other rule (references included) passes on clean rows.
        others = {k: v for k, v in got.items() if k not in expected and v}
        assert others == {}, f"{code}: unexpected failures {others}"
        # Sample row numbers point at rows that really carry the defect.
        positions = synth.defects_detail[code]
        for kind, d in doc["defects"].items():
            rr = result.rule(_rule_for(res, d["rule"], d["columns"]))
            assert rr.samples
            rows = set(positions[kind].tolist())
            assert all(s.row - 1 in rows for s in rr.samples), f"{code}/{kind}"
    # Cross-resource checks really ran (against RKJBXX and SCZTDJ snapshots).
    sb = check_snapshot(home, catalog.get("SBCBJF"), as_of=as_of)
    assert sb.rule("references:公民身份号码").total > 0
    assert sb.rule("references:单位统一社会信用代码").total > 0
    assert set(sb.references) == {"RKJBXX", "SCZTDJ"}


def test_reference_failures_match_an_independent_membership_count(
    home: Home, synth: SyntheticFrames, ingest: Any, as_of: dt.date
) -> None:
    catalog = Catalog.load()
    people = synth.frames["RKJBXX"]
    ent = synth.frames["SCZTDJ"]
    ingest("SCZTDJ", ent)
    # Before the population registry exists the reference cannot be judged at all.
    before = check_snapshot(home, catalog.get("SCZTDJ"), as_of=as_of)
    ref = before.rule("references:法定代表人证件号码")
    assert (ref.failed, ref.total) == (0, 0) and ref.note
    # Drop some legal representatives from the registry.
    reps = ent["法定代表人证件号码"].drop_nulls().unique(maintain_order=True).to_list()[:25]
    ingest("RKJBXX", people.filter(~pl.col("公民身份号码").is_in(reps)))
    after = check_snapshot(home, catalog.get("SCZTDJ"), as_of=as_of)
    registry = set(people.filter(~pl.col("公民身份号码").is_in(reps))["公民身份号码"].to_list())
    # The generator never corrupts legal representatives' ID numbers, so every one is
    # well formed and judged; plain set membership gives the expected count.
    expected = sum(
        1 for v in ent["法定代表人证件号码"].to_list() if v is not None and v not in registry
    )
    assert expected >= 25
    assert after.rule("references:法定代表人证件号码").failed == expected


def _people(n: int = 200) -> pl.DataFrame:
    return clean_population(n, seed=3)


def _set(frame: pl.DataFrame, col: str, row: int, value: object) -> pl.DataFrame:
    values = frame[col].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(col, values, dtype=frame.schema[col]))


def test_nulls_count_only_against_required_and_rules_are_layered(home: Home) -> None:
    res = Catalog.load().get("RKJBXX")
    f = _people()
    f = _set(f, "联系电话", 0, None)  # optional: no failure at all
    f = _set(f, "联系电话", 1, "   ")  # blank = missing: no format failure
    f = _set(f, "联系电话", 2, "12345")  # present and malformed
    f = _set(f, "姓名", 3, "")  # required and blank
    f = _set(f, "公民身份号码", 4, "21080219")  # malformed: pattern only
    ids = f["公民身份号码"].to_list()
    flipped = ids[5][:17] + ("0" if ids[5][17] != "0" else "1")
    f = _set(f, "公民身份号码", 5, flipped)  # well formed, wrong check digit
    sexes = f["性别"].to_list()
    f = _set(f, "性别", 6, "女" if sexes[6] == "男" else "男")
    write_snapshot(home, res, f)
    r = check_snapshot(home, res)
    assert (r.rule("pattern:联系电话").failed, r.rule("pattern:联系电话").total) == (1, 198)
    assert r.rule("required:姓名").failed == 1
    assert r.rule("pattern:公民身份号码").failed == 1
    # The malformed ID is not judged again by the check digit ...
    cd = r.rule("check_digit:公民身份号码")
    assert (cd.failed, cd.total) == (1, 199)
    # ... nor are its record's sex and birth date (two bad IDs excluded).
    sex = r.rule("consistent_with_id:性别")
    assert (sex.failed, sex.total) == (1, 198)
    assert r.rule("consistent_with_id:出生日期").failed == 0
    assert r.rule("consistent_with_id:出生日期").total == 198
    assert r.dimensions()["completeness"] == pytest.approx(1 - 1 / (200 * 8))


def test_contract_shape_and_masked_samples(home: Home) -> None:
    res = Catalog.load().get("RKJBXX")
    f = _people(50)
    ids = f["公民身份号码"].to_list()
    bad_id = ids[7][:17] + ("0" if ids[7][17] != "0" else "1")
    f = _set(f, "公民身份号码", 7, bad_id)
    f = _set(f, "联系电话", 8, "0411-123456")
    f = pl.concat([f, f.slice(9, 1)])  # an exact duplicate record
    write_snapshot(home, res, f)
    result, _ = api.run_check(home, "RKJBXX")
    doc = result.contract()
    assert list(doc) == ["resource", "snapshot", "dimensions", "rules"]
    assert doc["resource"] == "RKJBXX" and doc["snapshot"] == result.snapshot
    assert all(0.0 <= v <= 1.0 for v in doc["dimensions"].values())
    for rule in doc["rules"]:
        assert list(rule) == ["rule", "field", "dimension", "failed", "total"]
    assert result.rule("duplicate_record").failed == 1
    assert result.rule("unique:公民身份号码").failed == 1
    # Stored with masked samples only: no raw ID or phone anywhere in the state.
    stored = api.latest_check(home, "RKJBXX")
    assert stored is not None
    text = stored.model_dump_json()
    assert bad_id not in text and "0411-123456" not in text and ids[9] not in text
    sample = stored.rule("check_digit:公民身份号码").samples[0]
    assert sample.row == 8 and sample.value == bad_id[:6] + "*" * 10 + bad_id[-2:]
    assert stored.rule("pattern:联系电话").samples[0].value == "041****3456"
    summary = api.latest_result(home, "RKJBXX")
    assert summary is not None and summary.dimensions == result.dimensions()
    assert summary.ratios["accuracy"][1] > 0


def test_snapshot_age_against_update_frequency(home: Home) -> None:
    res = Catalog.load().get("RKJBXX")  # monthly: 35 days allowed
    now = dt.datetime.now(dt.UTC)
    old = write_snapshot(home, res, _people(20), ingested_at=now - dt.timedelta(days=40))
    assert check_snapshot(home, res, old.snapshot_id).rule("snapshot_age").failed == 1
    fresh = write_snapshot(home, res, _people(20), ingested_at=now - dt.timedelta(days=30))
    r = check_snapshot(home, res, fresh.snapshot_id)
    assert r.rule("snapshot_age").failed == 0
    assert r.dimensions()["timeliness"] == 1.0


def test_not_future_and_max_age_follow_the_check_date(home: Home) -> None:
    res = Catalog.load().get("RKJBXX")
    day = dt.date(2025, 6, 30)
    f = clean_population(30, seed=5, as_of=day)
    f = _set(f, "登记日期", 0, dt.date(2025, 7, 1))  # one day after the check date
    f = _set(f, "更新日期", 1, day - dt.timedelta(days=1826))  # one day too old
    f = _set(f, "更新日期", 2, day - dt.timedelta(days=1825))  # exactly at the limit
    write_snapshot(home, res, f)
    r = check_snapshot(home, res, as_of=day)
    assert r.rule("not_future:登记日期").failed == 1
    assert r.rule("max_age:更新日期").failed == 1
    # A day later the future date is today and passes.
    assert (
        check_snapshot(home, res, as_of=dt.date(2025, 7, 1)).rule("not_future:登记日期").failed == 0
    )


def test_check_digit_validators_agree_with_python_stdnum() -> None:
    rnd = random.Random(5)
    digits = "0123456789"
    alpha = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    ids = [
        "".join(rnd.choice(digits) for _ in range(17)) + rnd.choice(digits + "X")
        for _ in range(3000)
    ]
    ids += ["11010519491231002X", "11010519491231002x", "1101051949123100", "１１０105194912310021"]
    codes = ["".join(rnd.choice(alpha) for _ in range(18)) for _ in range(3000)] + [
        "91110000600037341L",
        "abc",
    ]
    cards = ["".join(rnd.choice(digits) for _ in range(rnd.randint(12, 19))) for _ in range(2000)]

    def ric_ok(s: str) -> bool:
        ok = len(s) == 18 and s[:17].isascii() and s[:17].isdigit()
        return ok and ric.calc_check_digit(s) == s[17]

    def uscc_ok(s: str) -> bool:
        ok = len(s) == 18 and all(c in alpha for c in s)
        return ok and uscc.calc_check_digit(s[:17]) == s[17]

    got = pl.DataFrame({"s": ids}).select(resident_id_valid(pl.col("s")).alias("v"))["v"].to_list()
    assert got == [ric_ok(s) for s in ids]
    got = pl.DataFrame({"s": codes}).select(uscc_valid(pl.col("s")).alias("v"))["v"].to_list()
    assert got == [uscc_ok(s) for s in codes]
    got = pl.DataFrame({"s": cards}).select(luhn_valid(pl.col("s")).alias("v"))["v"].to_list()
    assert got == [luhn.is_valid(s) for s in cards]
    assert sum(got) > 100  # the comparison saw both outcomes
    nulls = pl.DataFrame({"s": [None]}, schema={"s": pl.String})
    assert nulls.select(resident_id_valid(pl.col("s"))).item() is None


def test_missing_field_counts_as_accessibility_and_completeness(home: Home) -> None:
    res = Catalog.load().get("RKJBXX")
    absent = ["联系电话", "现住址"]
    f = _people(10).with_columns([pl.lit(None, pl.String).alias(c) for c in absent])
    # Ingestion fills undelivered optional fields with nulls and lists them in the manifest.
    m = write_snapshot(home, res, f, absent_fields=absent)
    r = check_snapshot(home, res, m.snapshot_id)
    fp = r.rule("fields_present")
    assert (fp.failed, fp.total) == (2, 11)
    assert sorted(s.value or "" for s in fp.samples) == sorted(absent)
    assert r.dimensions()["accessibility"] == pytest.approx(1 - 2 / 12)


@pytest.mark.parametrize("missing_key_max", [1_000_000, 0])
def test_duplicate_records_found_through_the_key_or_by_hashing_every_row(
    home: Home, monkeypatch: pytest.MonkeyPatch, missing_key_max: int
) -> None:
    from quality import engine

    # 0 forces the fallback that hashes every whole record instead of riding on the key.
    monkeypatch.setattr(engine, "_MISSING_KEY_MAX", missing_key_max)
    res = Catalog.load().get("RKJBXX")
    f = _people(120)
    f = _set(f, "公民身份号码", 20, None)
    f = _set(f, "公民身份号码", 21, None)
    f = pl.concat(
        [
            f,
            f.slice(9, 1),  # exact copy: repeated key and repeated record
            f.slice(20, 1),  # exact copy of a record without an ID: repeated record only
            f.slice(21, 1).with_columns(pl.lit("赵六").alias("姓名")),  # no ID, new name
            f.slice(30, 1).with_columns(pl.lit("孙七").alias("姓名")),  # repeated key only
            f.slice(9, 1),  # a third copy of row 10
        ]
    )
    write_snapshot(home, res, f)
    r = check_snapshot(home, res)
    ids = pl.col("公民身份号码")
    # Independent counts: rows that are not the first occurrence of their record / key.
    expected_records = f.height - f.unique().height
    keyed = f.filter(ids.is_not_null())
    expected_keys = keyed.height - keyed["公民身份号码"].n_unique()
    assert (expected_records, expected_keys) == (3, 3)
    dup = r.rule("duplicate_record")
    assert (dup.failed, dup.total) == (3, f.height)
    key = r.rule("unique:公民身份号码")
    assert (key.failed, key.total) == (3, f.height - 4)  # four rows have no ID
    assert [s.row for s in dup.samples] == [121, 122, 125]
    assert [s.row for s in key.samples] == [121, 124, 125]
    assert r.rule("required:公民身份号码").failed == 4


def test_check_digits_of_repeated_foreign_keys_are_judged_per_row(
    home: Home, synth: SyntheticFrames, ingest: Any, as_of: dt.date
) -> None:
    # SBCBJF's person and employer codes repeat on many rows, so their check digits are
    # validated once per distinct value and joined back: each row must still count.
    ingest("RKJBXX", synth.frames["RKJBXX"])
    ingest("SCZTDJ", synth.frames["SCZTDJ"])
    f = synth.frames["SBCBJF"].filter(pl.col("公民身份号码").is_not_null())
    ids, codes = f["公民身份号码"].to_list(), f["单位统一社会信用代码"].to_list()
    employer = codes[0]
    for i in range(0, 40, 4):  # ten rows of several people, all with one wrong ID
        ids[i] = ids[i][:17] + ("0" if ids[i][17] != "0" else "1")
    codes = [
        c[:17] + ("1" if c[17] != "1" else "2") if c == employer and i % 2 else c
        for i, c in enumerate(codes)
    ]
    f = f.with_columns(pl.Series("公民身份号码", ids), pl.Series("单位统一社会信用代码", codes))
    ingest("SBCBJF", f)
    r = check_snapshot(home, Catalog.load().get("SBCBJF"), as_of=as_of)

    def bad(values: list[str | None], ok: Any) -> int:
        return sum(1 for v in values if v is not None and not ok(v))

    expected_ids = bad(ids, lambda v: ric.calc_check_digit(v) == v[17])
    expected_codes = bad(codes, lambda v: uscc.calc_check_digit(v[:17]) == v[17])
    assert expected_ids == 10 and expected_codes > 1
    cd = r.rule("check_digit:公民身份号码")
    assert (cd.failed, cd.total) == (expected_ids, f.height)
    assert r.rule("check_digit:单位统一社会信用代码").failed == expected_codes
    assert {s.row - 1 for s in cd.samples} <= set(range(0, 40, 4))
    # A value with a wrong check digit is not judged again as a dangling reference.
    ref = r.rule("references:公民身份号码")
    assert (ref.failed, ref.total) == (0, f.height - expected_ids)
    ref = r.rule("references:单位统一社会信用代码")
    assert (ref.failed, ref.total) == (0, f.height - expected_codes)


def test_blank_is_whitespace_only_as_strip_chars_says() -> None:
    # ``missing`` tests blankness with one regex (\s, the White_Space property); it must agree
    # with stripping (what it replaced) on Unicode spaces, zero-width and control characters.
    from quality.rules import missing

    values = ["", " ", "\t\n", "\u3000", "\u00a0", "\u200b", "\u2028", "\x1c", "\x85"]
    values += ["a", " a ", None, "\ufeff", "\u180e", "　x"]
    spec = Catalog.load().get("RKJBXX").field("姓名")
    frame = pl.DataFrame({"姓名": values}, schema={"姓名": pl.String})
    got = frame.select(missing(pl.col("姓名"), spec))["姓名"].to_list()
    want = [v is None or v.strip(" \t\n\r\x0b\x0c\u3000\u00a0\u2028\x85") == "" for v in values]
    stripped = frame.select(pl.col("姓名").is_null() | (pl.col("姓名").str.strip_chars() == ""))
    assert got == stripped["姓名"].to_list() == want


def test_id_shape_after_a_valid_check_digit_is_length_and_case() -> None:
    # consistent_with_id judges rows whose ID is well formed and has the raw ID shape; with a
    # valid GB 11643 check the shape test is "18 bytes, no final lower-case x" (rules.py).
    # Same answer as the regex on padded, lower-case, full-width and short values.
    from privacy.pii.validators import resident_id_check_char_scalar, resident_id_valid

    body = "21080219900307123"
    good = body + resident_id_check_char_scalar(body)
    x_body = next(
        b
        for b in (f"21080219900307{i:03d}" for i in range(1000))
        if resident_id_check_char_scalar(b) == "X"
    )
    values = [good, " " + good, good + " ", x_body + "X", x_body + "x", "２" + good[1:], good[:17]]
    values += [None, "", x_body + "x "]
    s = pl.col("v")
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    valid = resident_id_valid(s).fill_null(False)
    regex = valid & s.str.contains(r"^[0-9]{17}[0-9X]$").fill_null(False)
    cheap = valid & ((s.str.len_bytes() == 18) & ~s.str.ends_with("x")).fill_null(False)
    got = frame.select(regex.alias("a"), cheap.alias("b"))
    assert got["a"].to_list() == got["b"].to_list()
    assert got["a"].to_list()[:4] == [True, False, False, True]
