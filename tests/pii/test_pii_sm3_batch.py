"""The compiled batch HMAC-SM3 equals ``hmac.new(key, m, "sm3")`` value by value,
and the streaming pseudonymizer's paths (memo, per-batch dedup, every row) agree."""

from __future__ import annotations

import hmac

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import operators as ops
from transforms import sm3_batch

KEY = bytes(range(32))


def _reference(values: list[str], key: bytes) -> list[str]:
    return [hmac.new(key, v.encode("utf-8"), "sm3").hexdigest() for v in values]


@pytest.mark.parametrize("key_len", [1, 16, 32, 64, 65, 200])
def test_every_length_class_and_key_length(key_len: int) -> None:
    # 0..130 bytes crosses the one-, two- and three-block paddings of the inner hash (55/56
    # and 119/120 bytes are the edges); multi-byte characters; keys longer than a block.
    key = (bytes(range(256)) * 2)[:key_len]
    values = ["x" * n for n in range(131)] + ["张三", "辽宁省营口市站前区", "é\u0301", "\x00a"]
    values += [f"2108{i:014d}" for i in range(3000)]
    assert sm3_batch.hmac_sm3_hex(pl.Series(values), key).to_list() == _reference(values, key)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=70), min_size=1, max_size=40), st.binary(min_size=1, max_size=90))
def test_equal_to_hmac_new_on_any_text(values: list[str], key: bytes) -> None:
    assert sm3_batch.hmac_sm3_hex(pl.Series(values, dtype=pl.String), key).to_list() == (
        _reference(values, key)
    )


def test_chunks_hash_on_threads_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # More values than one chunk, two threads: each token lands on its own row.
    monkeypatch.setattr(sm3_batch, "CHUNK", 512)
    monkeypatch.setenv("SHUYU_HMAC_THREADS", "2")
    monkeypatch.setattr(sm3_batch, "_POOL", None)
    values = [f"{i:018d}" for i in range(5000)] + [f"v{i}" for i in range(700)]
    got = sm3_batch.hmac_sm3_hex(pl.Series(values), KEY).to_list()
    assert got == _reference(values, KEY)


def test_pseudonymize_paths_agree_on_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A distinct-heavy column switches the memo off and then hashes every row; a column
    with repeats keeps the memo. Tokens equal hmac.new in both, nulls stay null."""
    monkeypatch.setattr(ops._TokenMemo, "_PROBE", 2_000)
    monkeypatch.setattr(ops, "_VECTOR_MIN", 64)
    distinct = [None if i % 97 == 0 else f"2108{i:014d}" for i in range(20_000)]
    repeated = [f"p{i % 300}" for i in range(20_000)]
    frame = pl.DataFrame({"d": distinct, "r": repeated})
    memo_d = ops._TokenMemo(batch_fn=lambda b: ops.hmac_sm3_series(b, KEY))
    memo_r = ops._TokenMemo(batch_fn=lambda b: ops.hmac_sm3_series(b, KEY))
    out = [
        frame.slice(i, 1_000).select(
            pl.col("d").map_batches(memo_d, return_dtype=pl.String),
            pl.col("r").map_batches(memo_r, return_dtype=pl.String),
        )
        for i in range(0, frame.height, 1_000)
    ]
    got = pl.concat(out)
    want_d = [None if v is None else hmac.new(KEY, v.encode(), "sm3").hexdigest() for v in distinct]
    assert got["d"].to_list() == want_d
    assert got["r"].to_list() == _reference(repeated, KEY)
    assert memo_d.direct and not memo_d.enabled
    assert memo_r.enabled and not memo_r.direct
    # the full operator on a streaming query gives the same tokens
    lazy = frame.lazy().select(ops.pseudonymize(pl.col("d"), KEY)).collect(engine="streaming")
    assert lazy["d"].to_list() == want_d


def test_sliced_and_chunked_series() -> None:
    # A slice starts at an Arrow offset; a concatenation keeps several chunks.
    values = [f"2108{i:014d}" for i in range(5000)] + ["张三", ""]
    whole = pl.Series(values)
    part = whole.slice(1234, 3000)
    assert sm3_batch.hmac_sm3_hex(part, KEY).to_list() == _reference(values[1234:4234], KEY)
    chunked = pl.concat([whole.slice(0, 10), whole.slice(4000, 1002)], rechunk=False)
    assert chunked.n_chunks() == 2
    want = _reference(values[:10] + values[4000:5002], KEY)
    assert sm3_batch.hmac_sm3_hex(chunked, KEY).to_list() == want


def test_nulls_refused() -> None:
    with pytest.raises(ValueError, match="without nulls"):
        sm3_batch.hmac_sm3_hex(pl.Series(["a", None]), KEY)


def test_works_where_no_cache_location_is_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    # numba refuses cache=True when it finds no writable cache location (a read-only install
    # without a user cache directory); the module then compiles per process instead.
    import importlib

    from numba.core import caching

    with monkeypatch.context() as m:
        m.setattr(caching.CacheImpl, "_locator_classes", [])
        with pytest.raises(RuntimeError, match="no locator"):
            from numba import njit

            njit(cache=True)(lambda x: x)
        fresh = importlib.reload(sm3_batch)
        values = [f"2108{i:014d}" for i in range(300)]
        assert fresh.hmac_sm3_hex(pl.Series(values), KEY).to_list() == _reference(values, KEY)
    importlib.reload(sm3_batch)
