"""Vectorized check-digit validators (polars expressions, no per-row Python).

``privacy.pii.validators`` (PII detection) provides ``resident_id_valid`` and ``uscc_valid``
too; :func:`check_digit_valid` prefers those when they are importable so both areas judge a
value the same way, and falls back to the versions here. Each returns a Boolean expression:
true for a valid value, false for an invalid one, null for a null input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import import_module

import polars as pl

# GB 11643-1999: weights 2^(17-i) mod 11 for the first 17 digits; check = table[sum mod 11].
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

# GB 32100-2015: 31-character alphabet without I, O, Z, S, V.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

_LUHN_MAX = 32


# Lookups go through ``str.find`` / ``str.slice`` on a literal alphabet rather than
# ``replace_strict``: the streaming engine runs replace* outside the stream (it gathers the
# whole column first), which on 10M rows costs gigabytes.


def _digit(s: pl.Expr, i: int) -> pl.Expr:
    # Non-digits (and full-width digits, which \d would accept) become null, failing the check.
    return pl.lit("0123456789").str.find(s.str.slice(i, 1), literal=True)


def _char_at(alphabet: str, index: pl.Expr) -> pl.Expr:
    return pl.lit(alphabet).str.slice(index, 1)


def id_number(expr: pl.Expr) -> pl.Expr:
    """The first 17 characters as an integer (null unless they parse): the digits every
    GB 11643 computation needs, parsed once so a check can reuse the column."""
    return expr.str.slice(0, 17).str.to_integer(strict=False)


def resident_id_valid(expr: pl.Expr, number: pl.Expr | None = None) -> pl.Expr:
    """GB 11643 citizen identity number: 17 ASCII digits then the MOD 11-2 check character.

    ``number`` may pass a precomputed :func:`id_number` column; digits are then taken
    arithmetically from it instead of slicing the string 17 times.
    """
    n = id_number(expr) if number is None else number
    total = pl.sum_horizontal([((n // 10 ** (16 - i)) % 10) * w for i, w in enumerate(_ID_WEIGHTS)])
    # The regex also rejects signs and non-ASCII digits that integer parsing might accept.
    shape = expr.str.contains(r"^[0-9]{17}[0-9X]$")
    expected = _char_at(_ID_CHECK, total % 11)
    valid = shape & (expr.str.slice(17, 1) == expected)
    return pl.when(expr.is_null()).then(None).otherwise(valid.fill_null(False))


def uscc_valid(expr: pl.Expr) -> pl.Expr:
    """GB 32100 unified social credit code: 17 characters then the MOD 31 check character."""
    parts = [
        pl.lit(_USCC_ALPHABET).str.find(expr.str.slice(i, 1), literal=True) * w
        for i, w in enumerate(_USCC_WEIGHTS)
    ]
    shape = expr.str.contains(f"^[{_USCC_ALPHABET}]{{18}}$")
    check = (31 - pl.sum_horizontal(parts) % 31) % 31
    expected = _char_at(_USCC_ALPHABET, check)
    valid = shape & (expr.str.slice(17, 1) == expected)
    return pl.when(expr.is_null()).then(None).otherwise(valid.fill_null(False))


def luhn_valid(expr: pl.Expr) -> pl.Expr:
    """Luhn (bank card numbers): 2 to 32 ASCII digits whose Luhn sum is 0 mod 10."""
    rev = expr.str.reverse()
    terms = []
    for i in range(_LUHN_MAX):
        d = _digit(rev, i).fill_null(0)
        if i % 2 == 1:
            d = pl.when(d * 2 > 9).then(d * 2 - 9).otherwise(d * 2)
        terms.append(d)
    shape = expr.str.contains(f"^[0-9]{{2,{_LUHN_MAX}}}$")
    valid = shape & (pl.sum_horizontal(terms) % 10 == 0)
    return pl.when(expr.is_null()).then(None).otherwise(valid.fill_null(False))


def _shared(name: str) -> Callable[[pl.Expr], pl.Expr] | None:
    # SHUYU_QUALITY_VALIDATORS=local forces the versions here (benchmarks compare both).
    if os.environ.get("SHUYU_QUALITY_VALIDATORS") == "local":
        return None
    try:
        module = import_module("privacy.pii.validators")
    except ImportError:
        return None
    fn = getattr(module, name, None)
    return fn if callable(fn) else None


def check_digit_valid(kind: str, expr: pl.Expr, number: pl.Expr | None = None) -> pl.Expr:
    """Dispatch on the catalog's ``check_digit`` value (GB11643, GB32100, LUHN).

    ``number``: a precomputed :func:`id_number` column for GB11643 (used by the local
    validator only)."""
    if kind == "GB11643":
        shared = _shared("resident_id_valid")
        return shared(expr) if shared is not None else resident_id_valid(expr, number)
    if kind == "GB32100":
        return (_shared("uscc_valid") or uscc_valid)(expr)
    if kind == "LUHN":
        return (_shared("luhn_valid") or luhn_valid)(expr)
    raise ValueError(f"unknown check digit scheme {kind!r}")
