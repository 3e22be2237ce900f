"""Differential tests: our vectorized and scalar validators against python-stdnum."""

from __future__ import annotations

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.cn import ric, uscc

from privacy.pii import validators as V

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODES = ["210802", "110103", "120110", "210311", "219999", "990802", "210800", "110105"]


def _stdnum_ric(value: str) -> bool:
    """stdnum's is_valid raises KeyError for an unknown county under a known province;
    such a number has no valid birth place, so it counts as invalid."""
    try:
        return ric.is_valid(value)
    except KeyError:
        return False


def _stdnum_ric_no_region(value: str) -> bool:
    """stdnum's checks without the birth-place lookup: length, digits, check, date."""
    v = ric.compact(value)
    if len(v) != 18 or not v[:17].isascii() or not v[:17].isdigit():
        return False
    if v[-1] != ric.calc_check_digit(v):
        return False
    try:
        ric.get_birth_date(v)
    except Exception:
        return False
    return True


@st.composite
def ric_like(draw: st.DrawFn) -> str:
    """ID-shaped strings: real and unknown regions, real and impossible dates, right and
    wrong check characters, lower-case x, stray characters and wrong lengths."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(alphabet="0123456789Xx -", min_size=0, max_size=20))
    region = draw(st.sampled_from(CODES) | st.from_regex(r"[0-9]{6}", fullmatch=True))
    year = draw(st.integers(0, 9999))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    body = f"{region}{year:04d}{month:02d}{day:02d}{draw(st.integers(0, 999)):03d}"
    if draw(st.booleans()):
        check = V.resident_id_check_char_scalar(body)
        if check == "X" and draw(st.booleans()):
            check = "x"
    else:
        check = draw(st.sampled_from("0123456789X"))
    return body + check


@SETTINGS
@given(st.lists(ric_like(), min_size=1, max_size=40))
def test_resident_id_matches_stdnum(values: list[str]) -> None:
    got = pl.select(V.resident_id_valid(pl.lit(pl.Series(values, dtype=pl.String)))).to_series()
    want = [_stdnum_ric_no_region(v) for v in values]
    assert got.to_list() == want
    assert [V.resident_id_valid_scalar(v) for v in values] == want


@SETTINGS
@given(st.lists(ric_like(), min_size=1, max_size=40))
def test_resident_id_with_region_matches_stdnum_is_valid(values: list[str]) -> None:
    expr = V.resident_id_valid(pl.lit(pl.Series(values, dtype=pl.String)), check_region=True)
    want = [_stdnum_ric(v) for v in values]
    assert pl.select(expr).to_series().to_list() == want
    assert [V.resident_id_valid_scalar(v, check_region=True) for v in values] == want


def test_resident_id_known_cases_and_nulls() -> None:
    body = "21080219900229123"  # 1990 is not a leap year
    leap = "21080220000229123"
    s = pl.Series(
        [
            body + V.resident_id_check_char_scalar(body),
            leap + V.resident_id_check_char_scalar(leap),
            None,
        ]
    )
    assert pl.select(V.resident_id_valid(pl.lit(s))).to_series().to_list() == [False, True, None]


@st.composite
def uscc_like(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ -", max_size=22))
    head = draw(st.from_regex(r"[0-9]{8}", fullmatch=True))
    tail = draw(st.text(alphabet=V.USCC_ALPHABET + "IOSVZ", min_size=9, max_size=9))
    body = head + tail
    if kind >= 2 and all(c in V.USCC_ALPHABET for c in tail):
        check = V.uscc_check_char_scalar(body)
    else:
        check = draw(st.sampled_from(V.USCC_ALPHABET))
    value = body + check
    if kind == 4:
        value = value.lower()
    return value


@SETTINGS
@given(st.lists(uscc_like(), min_size=1, max_size=40))
def test_uscc_matches_stdnum(values: list[str]) -> None:
    got = pl.select(V.uscc_valid(pl.lit(pl.Series(values, dtype=pl.String)))).to_series()
    want = [uscc.is_valid(v) for v in values]
    assert got.to_list() == want
    assert [V.uscc_valid_scalar(v) for v in values] == want


@st.composite
def digit_strings(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(alphabet="0123456789a -", max_size=32))
    body = draw(st.from_regex(r"[0-9]{1,31}", fullmatch=True))
    if draw(st.booleans()):
        return body + luhn.calc_check_digit(body)
    return body


@SETTINGS
@given(st.lists(digit_strings(), min_size=1, max_size=40))
def test_luhn_matches_stdnum(values: list[str]) -> None:
    got = pl.select(V.luhn_valid(pl.lit(pl.Series(values, dtype=pl.String)))).to_series()
    want = [luhn.is_valid(v) for v in values]
    assert got.to_list() == want
    assert [V.luhn_valid_scalar(v) for v in values] == want


def test_luhn_longer_than_max_length_is_invalid() -> None:
    body = "4" * 40
    value = body + luhn.calc_check_digit(body)
    assert luhn.is_valid(value)
    s = pl.Series([value])
    assert pl.select(V.luhn_valid(pl.lit(s), max_length=32)).item() is False
    assert pl.select(V.luhn_valid(pl.lit(s), max_length=48)).item() is True


def test_org_code_check_inside_uscc() -> None:
    # Built from a GB 11714 organization code with its own check character.
    org8 = "07719012"
    total = sum(int(c) * w for c, w in zip(org8, V.ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    org_check = "0" if c == 11 else "X" if c == 10 else str(c)
    body = "91210802" + org8 + org_check
    good = body + V.uscc_check_char_scalar(body)
    bad_org = "91210802" + org8 + ("1" if org_check != "1" else "2")
    bad = bad_org + V.uscc_check_char_scalar(bad_org)
    assert V.uscc_valid_scalar(good) and V.uscc_valid_scalar(bad)
    assert V.uscc_org_code_valid_scalar(good) and not V.uscc_org_code_valid_scalar(bad)
    got = pl.select(V.uscc_org_code_valid(pl.lit(pl.Series([good, bad, None])))).to_series()
    assert got.to_list() == [True, False, None]


def test_validators_stream_in_lazy_queries() -> None:
    body = "21080219900101123"
    check = V.resident_id_check_char_scalar(body)
    wrong = "1" if check != "1" else "2"
    lf = pl.LazyFrame({"id": [body + check, body + wrong, None] * 1000})
    out = lf.select(V.resident_id_valid(pl.col("id")).alias("ok")).collect(engine="streaming")
    assert out["ok"].sum() == 1000
    assert out["ok"].null_count() == 1000


@st.composite
def ric_bytes_like(draw: st.DrawFn) -> str | None:
    """Values the 18-byte path sees and values it must leave to the general path: 18 bytes of
    digits, X/x, blanks, full-width digits and CJK, padded or short numbers, nulls."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.text(alphabet="0123456789Xx 　０一", min_size=0, max_size=20))
    value = draw(ric_like())
    if kind == 2:
        return draw(st.sampled_from([" ", "", "\t", "　"])) + value
    return value


@SETTINGS
@given(st.lists(ric_bytes_like(), min_size=1, max_size=60))
def test_resident_id_byte_path_equals_general_path(values: list[str | None]) -> None:
    # The byte path (values of exactly 18 bytes) against the general string path, value by
    # value, in one batch that mixes both (and nulls).
    s = pl.Series(values, dtype=pl.String)
    fast = V.resident_id_valid_series(s).to_list()
    general = V._resident_id_valid_general(s, False).to_list()
    assert fast == general
    assert [None if v is None else _stdnum_ric_no_region(v) for v in values] == general


def test_resident_id_byte_path_on_a_batch_of_real_numbers() -> None:
    # 18-byte values only (the byte path alone): right check characters, each one wrong,
    # lower-case x, leap days of leap and common years, year 0001 and 0000.
    dates = ["19900228", "20000229", "19000229", "20241231", "00010101", "00000101", "19901301"]
    values: list[str] = []
    for i, date in enumerate(dates):
        body = f"210802{date}12{i}"
        right = body + V.resident_id_check_char_scalar(body)
        wrong = body + ("0" if right[17] != "0" else "1")
        values += [right, wrong, right.lower()]
    s = pl.Series(values, dtype=pl.String)
    got = V.resident_id_valid_series(s).to_list()
    assert got == V._resident_id_valid_general(s, False).to_list()
    assert got == [_stdnum_ric_no_region(v) for v in values]
    assert sum(got) >= 4
