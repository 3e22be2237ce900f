"""HMAC-SM3 from precomputed pad states equals the standard HMAC for every key length."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.operators import hmac_sm3_tokens


def _reference(values: list[str], key: bytes) -> list[str]:
    return [hmac.new(key, v.encode("utf-8"), "sm3").hexdigest() for v in values]


@pytest.mark.parametrize("key_len", [1, 16, 32, 63, 64, 65, 200])
def test_pads_equal_hmac_new(key_len: int) -> None:
    key = bytes(range(256))[:key_len] if key_len <= 256 else b"k" * key_len
    values = ["", "110105194912310021", "张三", "x" * 1000, "13800001111", "a\\0b"]
    values += [f"2108{i:014d}" for i in range(2000)]
    assert hmac_sm3_tokens(values, key) == _reference(values, key)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=20), st.binary(min_size=1, max_size=130))
def test_pads_equal_hmac_new_on_any_text(values: list[str], key: bytes) -> None:
    assert hmac_sm3_tokens(values, key) == _reference(values, key)
