"""Desensitization operators: conventions, quasi-identifiers in IDs, keyed tokens, SM4."""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Sequence

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.pii import validators as V
from shuyu_core.errors import ShuyuError
from transforms import operators as ops

KEY = bytes(range(32))
SM4_KEY = bytes(range(16))


def _apply(
    expr_fn: Callable[[pl.Expr], pl.Expr],
    values: Sequence[object],
    dtype: pl.DataType | None = None,
) -> list[object]:
    s = pl.Series("v", values, dtype=dtype)
    return s.to_frame().select(expr_fn(pl.col("v"))).to_series().to_list()


def _rid(body: str) -> str:
    return body + V.resident_id_check_char_scalar(body)


def test_id_mask_hides_region_birth_and_sex_by_default() -> None:
    rid = _rid("21080219900307123")
    masked = _apply(lambda e: ops.mask(e, "CN_RESIDENT_ID"), [rid, None, "123"])
    assert masked[0] == "*" * 14 + rid[14:16] + "*" + rid[17]
    assert "210802" not in masked[0] and "19900307" not in masked[0]
    assert masked[1] is None and masked[2] == "***"
    # The policy may keep the region and sex explicitly ("region + last 4" convention).
    kept = _apply(lambda e: ops.mask(e, "CN_RESIDENT_ID", keep_region=True, keep_sex=True), [rid])
    assert kept[0] == rid[:6] + "*" * 8 + rid[14:]


def test_mask_conventions_per_type() -> None:
    assert _apply(lambda e: ops.mask(e, "CN_MOBILE"), ["13812345678", "+86 139 1234 5678"]) == [
        "138****5678",
        "139****5678",
    ]
    assert _apply(lambda e: ops.mask(e, "PERSON_NAME"), ["王小明", "欧阳娜娜", "李四"]) == [
        "王**",
        "欧阳**",
        "李*",
    ]
    assert _apply(lambda e: ops.mask(e, "CN_BANK_CARD"), ["6222 0202 0000 1234 567"]) == [
        "***************4567"
    ]
    assert _apply(
        lambda e: ops.mask(e, "ADDRESS"),
        [
            "辽宁省营口市站前区渤海大街12号3单元501室",
            "辽宁省营口市大石桥市哈大路132号",
            "营口市金牛山大街幸福小区3号",
            "不详",
        ],
    ) == ["辽宁省营口市站前区", "辽宁省营口市大石桥市", "营口市", "***"]
    assert _apply(lambda e: ops.mask(e, "EMAIL"), ["zhang.san@example.com"]) == ["z***@example.com"]
    assert _apply(lambda e: ops.mask(e, "CN_PHONE"), ["0417-2812345"]) == ["0417-*****45"]
    assert _apply(lambda e: ops.mask(e, "IP_ADDRESS"), ["192.168.1.20"]) == ["192.168.*.*"]
    assert _apply(lambda e: ops.mask(e, "CN_LICENSE_PLATE"), ["辽HD12345"]) == ["辽H******"]
    assert _apply(lambda e: ops.mask(e, "CN_PASSPORT"), ["E12345678"]) == ["E******78"]
    born = _apply(lambda e: ops.mask(e, "DATE_OF_BIRTH", temporal=True), [dt.date(1990, 3, 7)])
    assert born == ["1990-**-**"]


def test_pseudonymize_is_keyed_hmac_sm3_and_deterministic() -> None:
    values = ["a", "b", "a", None, "张三"]
    out = _apply(lambda e: ops.pseudonymize(e, KEY), values)
    want = [hmac.new(KEY, v.encode(), "sm3").hexdigest() if v else None for v in values]
    assert out == want
    assert out[0] == out[2] and out[0] != out[1]
    other = _apply(lambda e: ops.pseudonymize(e, bytes(32)), values)
    assert other[0] != out[0]
    series = ops.pseudonymize(pl.Series(values), KEY)
    assert isinstance(series, pl.Series) and series.to_list() == want


def test_pseudonymize_streams_batch_by_batch() -> None:
    lf = pl.LazyFrame({"id": [f"v{i % 5000}" for i in range(200_000)]})
    out = lf.select(ops.pseudonymize(pl.col("id"), KEY)).collect(engine="streaming")
    assert out["id"].n_unique() == 5000
    assert out["id"][7] == hmac.new(KEY, b"v7", "sm3").hexdigest()


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(ShuyuError, match="no key"):
        ops.pseudonymize(pl.col("x"), b"")
    with pytest.raises(ShuyuError, match="no key"):
        ops.encrypt_sm4(pl.col("x"), b"")


def test_sm4_round_trip_and_wrong_key() -> None:
    values = ["210802199003071234", "王小明", None, "210802199003071234"]
    enc = ops.encrypt_sm4(pl.Series(values), SM4_KEY)
    assert isinstance(enc, pl.Series)
    assert enc[0] == enc[3] and enc[0] != values[0] and enc[2] is None
    dec = ops.decrypt_sm4(enc, SM4_KEY)
    assert isinstance(dec, pl.Series) and dec.to_list() == values
    with pytest.raises(ShuyuError, match="does not verify"):
        ops.decrypt_sm4(enc.drop_nulls(), bytes(16))


def test_generalizers() -> None:
    assert _apply(lambda e: ops.generalize_age(e, 10, top=80), [0, 34, 79, 85, None]) == [
        "0-9",
        "30-39",
        "70-79",
        "80+",
        None,
    ]
    days = [dt.date(1990, 3, 7), None]
    assert _apply(lambda e: ops.generalize_date(e, "month"), days) == ["1990-03", None]
    assert _apply(lambda e: ops.generalize_date(e, "year"), days) == ["1990", None]
    assert _apply(lambda e: ops.generalize_region(e, "prefecture"), ["210802", "x"]) == [
        "210800",
        None,
    ]
    assert _apply(lambda e: ops.generalize_region(e, "province"), ["210802"]) == ["210000"]
    assert _apply(lambda e: ops.generalize_amount(e, 1000, top=5000), [1500.5, 999.0, 7000.0]) == [
        "[1000, 2000)",
        "[0, 1000)",
        "[5000, +)",
    ]
    ages = _apply(
        lambda e: ops.age_from_birth(e, dt.date(2025, 3, 7)),
        [dt.date(1990, 3, 7), dt.date(1990, 3, 8)],
    )
    assert ages == [35, 34]
    with pytest.raises(ShuyuError):
        ops.generalize_date(pl.col("x"), "week")


def test_top_bottom_coding_and_suppress() -> None:
    assert _apply(lambda e: ops.top_code(e, 100.0), [5.0, 150.0, None]) == [5.0, 100.0, None]
    assert _apply(lambda e: ops.bottom_code(e, 10.0), [5.0, 150.0]) == [10.0, 150.0]
    out = pl.DataFrame({"x": [1, 2]}).select(ops.suppress(pl.col("x"), pl.Int64()))
    assert out.columns == ["x"] and out["x"].null_count() == 2


def test_pseudonym_memo_is_safe_across_parallel_batches() -> None:
    """Streaming runs batches on several threads; overlapping batches must neither
    duplicate memo entries nor change a token, and a full memo starts over."""
    import threading

    memo = ops._TokenMemo(lambda vs: ops.hmac_sm3_tokens(vs, KEY), capacity=300)
    batches = [pl.Series("v", [f"p{(i * 37 + j) % 400}" for j in range(250)]) for i in range(24)]
    results: dict[int, list[object]] = {}
    start = threading.Barrier(4)

    def run(worker: int) -> None:
        start.wait()
        for i in range(worker, len(batches), 4):
            results[i] = memo(batches[i]).to_list()

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, batch in enumerate(batches):
        want = [hmac.new(KEY, v.encode(), "sm3").hexdigest() for v in batch.to_list()]
        assert results[i] == want
    assert memo.known["v"].n_unique() == memo.known.height <= 300


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="区县旗市路街号楼省营口站前大石桥 a1-", max_size=16), max_size=30))
def test_address_mask_equals_the_two_extract_rule(values: list[str]) -> None:
    # The mask takes the whole match of one alternation; the rule it implements is: the
    # shortest street-free prefix ending in 区/县/旗, else the longest ending in 市, else ***.
    street = "[^路街巷号村弄道组栋幢楼室单元]"
    s = pl.col("v").str.strip_chars()
    rule = pl.coalesce(
        s.str.extract(rf"^({street}*?(?:区|县|旗))", 1),
        s.str.extract(rf"^({street}*市)", 1),
        pl.lit("***"),
    )
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    got = frame.select(ops.mask(pl.col("v"), "ADDRESS").alias("m"))["m"].to_list()
    assert got == frame.select(rule.alias("m"))["m"].to_list()
