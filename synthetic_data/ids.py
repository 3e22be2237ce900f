"""Vectorized check characters for GB 11643 ID numbers and GB 32100 credit codes.

Numbers are carried as int64 bodies (17 digits, or 16 digits + one alphabet character for
the USCC) so the weighted digit sums are plain numpy arithmetic; strings are assembled once
with polars.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# GB 11643-1999: weight of position i (1-based) is 2^(18-i) mod 11.
RIC_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
RIC_CHARS = pl.Series(list("0123456789X"), dtype=pl.String)

# GB 32100-2015: alphabet of 31 characters (no I, O, S, V, Z) and weights 3^(i-1) mod 31.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_CHARS = pl.Series(list(USCC_ALPHABET), dtype=pl.String)
USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)
# GB 11714 organization code check (the 9th character of the organization code).
ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_USCC_X = USCC_ALPHABET.index("X")


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) matrix of the decimal digits of non-negative int64 values, most significant
    first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers[None, :]) % 10


def ric_check_index(body17: np.ndarray) -> np.ndarray:
    """Index into ``0123456789X`` of the GB 11643 check character of 17-digit bodies."""
    s = digits(body17, 17) @ RIC_WEIGHTS
    return (12 - s % 11) % 11


def ric_strings(body17: np.ndarray, check_index: np.ndarray) -> pl.Series:
    body = pl.Series(body17, dtype=pl.Int64).cast(pl.String).str.zfill(17)
    check = RIC_CHARS.gather(check_index.astype(np.int64))
    return pl.select(pl.concat_str([pl.lit(body), pl.lit(check)])).to_series()


def org_check_value(body8: np.ndarray) -> np.ndarray:
    """GB 11714 check of an all-digit 8-character organization body, as a USCC alphabet
    value (``X`` for 10)."""
    c = 11 - (digits(body8, 8) @ ORG_WEIGHTS) % 11
    return np.where(c == 11, 0, np.where(c == 10, _USCC_X, c))


def uscc_parts(prefix16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For 16-digit prefixes (authority, type, region, 8-digit org body) return the org check
    value and the USCC check value (indices into the 31-character alphabet)."""
    org = org_check_value(prefix16 % 100_000_000)
    s = digits(prefix16, 16) @ USCC_WEIGHTS[:16] + org * USCC_WEIGHTS[16]
    return org, (31 - s % 31) % 31


def uscc_strings(prefix16: np.ndarray, org: np.ndarray, check: np.ndarray) -> pl.Series:
    body = pl.Series(prefix16, dtype=pl.Int64).cast(pl.String)
    o = USCC_CHARS.gather(org.astype(np.int64))
    c = USCC_CHARS.gather(check.astype(np.int64))
    return pl.select(pl.concat_str([pl.lit(body), pl.lit(o), pl.lit(c)])).to_series()
