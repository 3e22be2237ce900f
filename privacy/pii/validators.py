"""Check-digit and format validators for Chinese identifiers, vectorized and scalar.

The vectorized forms take a ``pl.Expr`` of strings and return a boolean ``pl.Expr`` (null in,
null out), so quality checks and the column scanner can run them over millions of values
without a Python loop. The scalar forms serve the Presidio recognizers, which validate one
regex match at a time. Both follow python-stdnum's semantics exactly (the tests compare them
on random strings):

- ``resident_id_valid``: GB 11643 resident identity number — 17 digits plus a check
  character (digit or X), ISO 7064 MOD 11-2, and digits 7-14 a real calendar date. With
  ``check_region=True`` also the birth-place code must have been in force in the birth year
  (python-stdnum's ``cn.ric.is_valid``, from its GB/T 2260 history table).
- ``uscc_valid``: GB 32100 unified social credit code — 18 characters, the first eight digits,
  the rest from the 31-character alphabet (no I, O, S, V, Z), MOD 31 check character.
- ``luhn_valid``: the Luhn (MOD 10) checksum used by bank cards (ISO/IEC 7812).

How: each expression hands the column, evaluated once, to a batch function
(``map_batches(..., is_elementwise=True)``, so it streams) that works on the whole batch with
polars Series operations and numpy: digit strings are parsed in chunks of at most 18 digits
(an Int64) and split into a digit matrix by integer arithmetic, then multiplied by the weight
vector. Expressing the same per digit position as polars expressions is several times slower,
because the shared sub-expression would be evaluated once per position.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import polars as pl

RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
RIC_CHECK = "10X98765432"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# GB 11714 organization code (characters 9-17 of a USCC): 8 characters and a MOD 11 check.
ORG_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_RIC_RE = re.compile(r"^[0-9]{17}[0-9X]$")
_USCC_RE = re.compile(r"^[0-9]{8}[0-9ABCDEFGHJKLMNPQRTUWXY]{10}$")
# stdnum's history intervals: "[1983-]站前区", "[-1991]东郊区", "[1983-1995]旧堡区".
_INTERVAL = re.compile(r"^\[(\d{4})?-(\d{4})?\]")
_CHUNK = 18


# -- batch helpers (materialized Series -> numpy) -------------------------------------------


def _digit_matrix(s: pl.Series, width: int) -> np.ndarray:
    """(n, width) int64 digits of strings of exactly ``width`` ASCII digits (0 elsewhere)."""
    n = s.len()
    out = np.zeros((n, width), dtype=np.int64)
    for start in range(0, width, _CHUNK):
        size = min(_CHUNK, width - start)
        chunk = s.str.slice(start, size).str.to_integer(strict=False).fill_null(0).to_numpy()
        powers = 10 ** np.arange(size - 1, -1, -1, dtype=np.int64)
        out[:, start : start + size] = (chunk.astype(np.int64)[:, None] // powers[None, :]) % 10
    return out


def _code_matrix(s: pl.Series, alphabet: str, width: int) -> tuple[np.ndarray, pl.Series]:
    """Values (index in ``alphabet``) of the first ``width`` characters, and a mask of rows
    whose characters are all in the alphabet. Each character becomes a two-digit code in one
    pass, then the codes are read back as digits."""
    coded = s.str.slice(0, width).str.replace_many(
        list(alphabet), [f"{i:02d}" for i in range(len(alphabet))]
    )
    # Rows with a character outside the alphabet (or too short) are masked out by ``ok``.
    ok = coded.str.contains(rf"^[0-9]{{{2 * width}}}$").fill_null(False)
    digits = _digit_matrix(coded, 2 * width)
    return digits[:, 0::2] * 10 + digits[:, 1::2], ok


def _keep_nulls(original: pl.Series, valid: pl.Series) -> pl.Series:
    """Null where the input was null, else the (non-null) validity."""
    return pl.select(
        pl.when(pl.lit(original).is_null()).then(None).otherwise(pl.lit(valid.fill_null(False)))
    ).to_series()


def _bool(values: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.Boolean)


def _as_expr(fn: object, expr: pl.Expr) -> pl.Expr:
    return expr.map_batches(fn, return_dtype=pl.Boolean, is_elementwise=True)  # type: ignore[arg-type]


# -- calendar --------------------------------------------------------------------------------


def _is_leap(year: pl.Expr) -> pl.Expr:
    return ((year % 4) == 0) & (((year % 100) != 0) | ((year % 400) == 0))


def calendar_date_valid(year: pl.Expr, month: pl.Expr, day: pl.Expr) -> pl.Expr:
    """True when (year, month, day) is a real proleptic-Gregorian date, year 1..9999."""
    days_in_month = (
        pl.when(month == 2)
        .then(pl.when(_is_leap(year)).then(29).otherwise(28))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )
    return (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= days_in_month)


def _yyyymmdd_valid(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(valid, year) for 8-digit date strings; chrono accepts year 0, Python does not."""
    parsed = s.str.strptime(pl.Date, "%Y%m%d", strict=False)
    year = parsed.dt.year()
    valid = (parsed.is_not_null() & (year >= 1) & s.str.contains(r"^[0-9]{8}$")).fill_null(False)
    return valid, year


# -- GB 11643 resident identity number -----------------------------------------------------


@dataclass(frozen=True)
class _RegionHistory:
    """GB/T 2260 codes as python-stdnum knows them: always valid, or valid in year intervals."""

    always: frozenset[str]
    # One mapping per interval slot: code -> (start or None, end or None).
    intervals: tuple[dict[str, tuple[int | None, int | None]], ...]


@cache
def _region_history() -> _RegionHistory:
    text = resources.files("stdnum").joinpath("cn/loc.dat").read_text(encoding="utf-8")
    always: set[str] = set()
    per_code: dict[str, list[tuple[int | None, int | None]]] = {}
    province = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith(" "):
            province = line.split()[0]
            continue
        suffix, _, rest = line.strip().partition(" ")
        if "county=" not in rest:
            continue
        county = rest.split("county=", 1)[1].strip().strip('"')
        code = province + suffix
        spans: list[tuple[int | None, int | None]] = []
        for part in county.split(","):
            m = _INTERVAL.match(part)
            if m is None:
                always.add(code)
                break
            spans.append(
                (int(m.group(1)) if m.group(1) else None, int(m.group(2)) if m.group(2) else None)
            )
        else:
            per_code[code] = spans
    width = max((len(s) for s in per_code.values()), default=0)
    slots: list[dict[str, tuple[int | None, int | None]]] = [{} for _ in range(width)]
    for code, spans in per_code.items():
        for i, span in enumerate(spans):
            slots[i][code] = span
    return _RegionHistory(frozenset(always), tuple(slots))


def _region_in_force(code: pl.Series, year: pl.Series) -> pl.Series:
    hist = _region_history()
    ok = code.is_in(sorted(hist.always))
    for slot in hist.intervals:
        codes = list(slot)
        start = code.replace_strict(
            codes, [s if s is not None else 0 for s, _ in slot.values()], default=None
        )
        end = code.replace_strict(
            codes, [e if e is not None else 99999 for _, e in slot.values()], default=None
        )
        ok = ok | ((year >= start) & (year <= end)).fill_null(False)
    return ok.fill_null(False)


_RIC_LEN = 18
_RIC_WEIGHTS_U16 = np.array(RIC_WEIGHTS, dtype=np.uint16)
# Byte -> the remainder (weighted sum mod 11) its check character stands for, -1 for a byte
# that is no check character; a lowercase x counts as X (the general path upper-cases).
_RIC_REMAINDER = np.full(256, -1, dtype=np.int16)
for _r, _ch in enumerate(RIC_CHECK):
    _RIC_REMAINDER[ord(_ch)] = _r
_RIC_REMAINDER[ord("x")] = RIC_CHECK.index("X")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int16)


def _ric_valid_18(text: pl.Series) -> np.ndarray:
    """Validity of strings of exactly 18 bytes (no nulls), on their bytes with numpy.

    The batch's values are joined into one buffer and viewed as an (18, n) byte matrix
    (row i = i-th character of every value), so every step is a contiguous vector operation.
    Equal to the general path on such strings: stripping cannot leave 18 characters if
    whitespace is present (and whitespace is no digit), and upper-casing can only change a
    final x, read as X here. About 15 times cheaper than the general path."""
    raw = text.str.join("").item().encode("utf-8") if text.len() else b""
    rows = np.ascontiguousarray(np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RIC_LEN).T)
    digits = rows[:17] - np.uint8(ord("0"))  # bytes below "0" wrap to >= 10
    ok = digits.max(axis=0) < 10
    total = np.zeros(rows.shape[1], dtype=np.uint16)
    for i in range(17):
        total += digits[i].astype(np.uint16) * _RIC_WEIGHTS_U16[i]
    ok &= _RIC_REMAINDER[rows[17]] == total % 11
    # Digits 7-14: a real proleptic-Gregorian date, year 1..9999 (what strptime accepts).
    d = digits[6:14].astype(np.int16)
    year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]
    month = d[4] * 10 + d[5]
    day = d[6] * 10 + d[7]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    last = _DAYS_IN_MONTH[np.where(month <= 12, month, 0)] + ((month == 2) & leap)
    ok &= (year >= 1) & (month >= 1) & (day >= 1) & (day <= last)
    return ok


def resident_id_valid_series(s: pl.Series, check_region: bool = False) -> pl.Series:
    """Batch form of :func:`resident_id_valid` over a String Series.

    Values of exactly 18 bytes (nearly all in real columns) take the byte path
    (:func:`_ric_valid_18`); the rest, and every value when ``check_region``, the general
    path below."""
    text = s.cast(pl.String)
    if check_region:
        return _resident_id_valid_general(text, check_region)
    fixed = (text.str.len_bytes() == _RIC_LEN).fill_null(False)
    n_fixed = int(fixed.sum())
    if n_fixed == text.len():
        return pl.Series(s.name, _ric_valid_18(text), dtype=pl.Boolean)
    valid = np.zeros(text.len(), dtype=bool)
    mask = fixed.to_numpy()
    if n_fixed:
        valid[mask] = _ric_valid_18(text.filter(fixed))
    other = ~mask
    if other.any():
        valid[other] = (
            _resident_id_valid_general(text.filter(~fixed), False).fill_null(False).to_numpy()
        )
    return _keep_nulls(s, pl.Series(s.name, valid, dtype=pl.Boolean))


def _resident_id_valid_general(s: pl.Series, check_region: bool) -> pl.Series:
    norm = s.cast(pl.String).str.strip_chars().str.to_uppercase()
    shape = norm.str.contains(_RIC_RE.pattern).fill_null(False)
    digits = _digit_matrix(norm.str.slice(0, 17), 17)
    expected = (digits @ np.array(RIC_WEIGHTS, dtype=np.int64)) % 11
    got = (
        norm.str.slice(17, 1)
        .replace_strict(list(RIC_CHECK), list(range(11)), default=-1, return_dtype=pl.Int64)
        .fill_null(-1)
        .to_numpy()
    )
    date_ok, year = _yyyymmdd_valid(norm.str.slice(6, 8))
    valid = shape & _bool(expected == got) & date_ok
    if check_region:
        valid = valid & _region_in_force(norm.str.slice(0, 6), year)
    return _keep_nulls(s, valid)


def resident_id_valid(expr: pl.Expr, check_region: bool = False) -> pl.Expr:
    """GB 11643 check character and real calendar birth date (digits 7-14), vectorized."""
    return _as_expr(lambda s: resident_id_valid_series(s, check_region), expr)


def resident_id_check_char_scalar(body17: str) -> str:
    total = sum(int(c) * w for c, w in zip(body17, RIC_WEIGHTS, strict=True))
    return RIC_CHECK[total % 11]


def resident_id_birth_date(value: str) -> dt.date | None:
    try:
        return dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def resident_id_valid_scalar(value: str, check_region: bool = False) -> bool:
    s = value.strip().upper()
    if not _RIC_RE.match(s) or resident_id_check_char_scalar(s[:17]) != s[17]:
        return False
    born = resident_id_birth_date(s)
    if born is None:
        return False
    if check_region:
        hist = _region_history()
        code = s[:6]
        if code in hist.always:
            return True
        for slot in hist.intervals:
            span = slot.get(code)
            if span is None:
                continue
            start, end = span
            if (start is None or born.year >= start) and (end is None or born.year <= end):
                return True
        return False
    return True


# -- GB 32100 unified social credit code ---------------------------------------------------


def _uscc_normalize(s: pl.Series) -> pl.Series:
    return s.cast(pl.String).str.replace_all(r"[ \-]", "").str.to_uppercase().str.strip_chars()


def uscc_valid_series(s: pl.Series) -> pl.Series:
    norm = _uscc_normalize(s)
    shape = norm.str.contains(_USCC_RE.pattern).fill_null(False)
    values, ok = _code_matrix(norm, USCC_ALPHABET, 18)
    total = values[:, :17] @ np.array(USCC_WEIGHTS, dtype=np.int64)
    expected = (31 - total % 31) % 31
    valid = shape & ok & _bool(expected == values[:, 17])
    return _keep_nulls(s, valid)


def uscc_valid(expr: pl.Expr) -> pl.Expr:
    """GB 32100 unified social credit code: shape and MOD 31 check character, vectorized."""
    return _as_expr(uscc_valid_series, expr)


def uscc_check_char_scalar(body17: str) -> str:
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(body17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_valid_scalar(value: str) -> bool:
    s = value.replace(" ", "").replace("-", "").upper().strip()
    return bool(_USCC_RE.match(s)) and uscc_check_char_scalar(s[:17]) == s[17]


def uscc_org_code_valid_series(s: pl.Series) -> pl.Series:
    norm = _uscc_normalize(s)
    values, ok = _code_matrix(norm.str.slice(8, 9), ORG_ALPHABET, 9)
    c = 11 - (values[:, :8] @ np.array(ORG_WEIGHTS, dtype=np.int64)) % 11
    expected = np.where(c == 11, 0, c)  # 10 stands for X, whose value in the alphabet is 33
    got = np.where(values[:, 8] == ORG_ALPHABET.index("X"), 10, values[:, 8])
    valid = (norm.str.len_chars() == 18).fill_null(False) & ok & _bool(expected == got)
    return _keep_nulls(s, valid)


def uscc_org_code_valid(expr: pl.Expr) -> pl.Expr:
    """The organization code embedded in a USCC passes its own GB 11714 check.

    Not part of python-stdnum's USCC check; the detector uses it to tell credit codes from
    18-digit numbers that pass the MOD 31 check by chance (1 in 31).
    """
    return _as_expr(uscc_org_code_valid_series, expr)


def uscc_org_code_valid_scalar(value: str) -> bool:
    s = value.replace(" ", "").replace("-", "").upper().strip()
    if len(s) != 18 or any(ch not in ORG_ALPHABET for ch in s[8:17]):
        return False
    c = (
        11
        - sum(ORG_ALPHABET.index(ch) * w for ch, w in zip(s[8:16], ORG_WEIGHTS, strict=True)) % 11
    )
    want = "0" if c == 11 else "X" if c == 10 else str(c)
    return s[16] == want


# -- Luhn ------------------------------------------------------------------------------------


def luhn_valid_series(s: pl.Series, max_length: int = 32) -> pl.Series:
    width = -(-max_length // _CHUNK) * _CHUNK
    text = s.cast(pl.String)
    shape = (text.str.contains(r"^[0-9]+$") & (text.str.len_chars() <= max_length)).fill_null(False)
    # Left-padding with zeros does not change the Luhn sum; positions count from the right.
    digits = _digit_matrix(text.str.zfill(width), width)
    doubled = np.arange(width - 1, -1, -1) % 2 == 1
    d2 = digits * 2
    terms = np.where(doubled[None, :], d2 - 9 * (d2 > 9), digits)
    valid = shape & _bool(terms.sum(axis=1) % 10 == 0)
    return _keep_nulls(s, valid)


def luhn_valid(expr: pl.Expr, max_length: int = 32) -> pl.Expr:
    """Luhn checksum over a string of digits, vectorized; strings longer than ``max_length``
    (not card numbers) count as invalid."""
    return _as_expr(lambda s: luhn_valid_series(s, max_length), expr)


def luhn_valid_scalar(value: str) -> bool:
    if not value or not value.isascii() or not value.isdigit():
        return False
    total = 0
    for i, c in enumerate(reversed(value)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d >= 5 else d * 2
        total += d
    return total % 10 == 0
