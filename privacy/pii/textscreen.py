"""Exhaustive identifier screening of text cells, and redaction of what it finds.

The scanner (``privacy.pii.scan``) decides what a *column* is from a sample and a share of
values; a few remarks holding a mobile or an ID number stay under any share. Here every cell
is examined: candidate tokens are extracted with the free-text token patterns of
``privacy.pii.entities`` and each token is validated as a whole (check digits for resident
IDs and USCC, Luhn for bank cards, the number plans of mobiles and landlines, e-mail, plate
and passport formats). All of it is vectorized over the whole column (explode, validate,
aggregate); nothing is sampled.

Names of persons cannot be found by a pattern: :func:`han_ngrams` gives the 2–4 character Han
substrings of every cell so that a caller can compare them with the names of the persons in
the inputs by keyed hashes (``assessment.checks.free_text_screening``).
"""

from __future__ import annotations

import threading

import polars as pl

from catalogs.vocabulary import PiiType
from privacy.pii import entities as E

# Identifier types screened in text cells (IP addresses are left out: version numbers and
# dotted codes look the same, and an IP is not an identifier of a person here).
# Order is precedence: a token valid as several types counts as the first (an all-digit USCC
# starting with 9 can also pass Luhn; a resident ID can also pass the USCC checks).
SCREENED: tuple[PiiType, ...] = (
    PiiType.CN_RESIDENT_ID,
    PiiType.CN_USCC,
    PiiType.CN_BANK_CARD,
    PiiType.CN_MOBILE,
    PiiType.CN_PHONE,
    PiiType.EMAIL,
    PiiType.CN_LICENSE_PLATE,
    PiiType.CN_PASSPORT,
)
NAME_LENGTHS = (2, 3, 4)


# Every screened form holds a digit or an '@': other values need no tokenizing.
_MAY_HOLD = r"[0-9@]"


def _distinct_hits(values: pl.Series) -> pl.DataFrame:
    """(``v``, ``entity``) for the distinct values that hold a valid identifier."""
    empty = pl.DataFrame(schema={"v": pl.String, "entity": pl.String})
    uniq = values.drop_nulls().unique()
    uniq = uniq.filter(uniq.str.contains(_MAY_HOLD))
    if uniq.len() == 0:
        return empty
    frame = uniq.to_frame("v")
    whole = _validated(frame, E.free_text_tokens(pl.col("v")), SCREENED)
    # Maximal alphanumeric runs give token boundaries, but a number glued to Latin letters
    # ("Tel13812345678") is then one run: its digit runs (with an ID's final X) are tokens
    # for the types whose structure makes a chance match rare (mobile number plan, ID date
    # and check digit), not for Luhn or USCC, which a tenth or so of digit runs would pass.
    glued = pl.concat_list(
        [pl.col("v").str.extract_all(r"[0-9]+"), pl.col("v").str.extract_all(r"[0-9]{17}[Xx]")]
    )
    inner = _validated(frame, glued, (PiiType.CN_RESIDENT_ID, PiiType.CN_MOBILE))
    return pl.concat([whole, inner]).unique()


def _validated(
    frame: pl.DataFrame, candidates: pl.Expr, types: tuple[PiiType, ...]
) -> pl.DataFrame:
    # Tokens carry the value's row index, not the value: a long value (an HTML line holding
    # an SVG path) with thousands of tokens would otherwise be copied once per token.
    indexed = frame.with_row_index("i")
    tokens = indexed.select("i", candidates.alias("t")).explode("t").drop_nulls("t").unique()
    entity = pl.coalesce(
        [
            pl.when(E.FULL_MATCH[e](pl.col("t")).fill_null(False)).then(pl.lit(e.value))
            for e in types
        ]
    )
    found = tokens.select("i", entity.alias("entity")).drop_nulls("entity").unique()
    return found.join(indexed, on="i").select("v", "entity")


def identifier_hits(s: pl.Series) -> pl.DataFrame:
    """One row per (cell index ``r``, ``entity``) where the cell holds a valid identifier.

    Tokenized and validated once per distinct value (code columns repeat a few values
    millions of times), then mapped back to the cells.
    """
    text = s.cast(pl.String)
    distinct = _distinct_hits(text)
    if distinct.height == 0:
        return pl.DataFrame(schema={"r": pl.UInt32, "entity": pl.String})
    cells = text.to_frame("v").with_row_index("r")
    return cells.join(distinct, on="v", how="inner").select("r", "entity").unique()


def cells_with_identifiers(s: pl.Series) -> pl.Series:
    """Boolean per cell: it holds at least one valid identifier token."""
    text = s.cast(pl.String)
    distinct = _distinct_hits(text)
    if distinct.height == 0:
        return pl.Series(s.name, [False] * s.len(), dtype=pl.Boolean)
    return text.is_in(distinct["v"].unique().implode()).fill_null(False).alias(s.name)


def _redact_cells(text: pl.Series, hit: pl.Series) -> pl.Series:
    """``text`` with the identifier tokens of the ``hit`` cells redacted."""
    from transforms.operators import MASK, redact_identifiers

    frame = pl.DataFrame({"v": text, "hit": hit})
    redacted = frame.select(
        pl.when(pl.col("hit")).then(redact_identifiers(pl.col("v"))).otherwise(pl.col("v"))
    ).to_series()
    # The broad token patterns cover every screened form but one never knows: a cell that
    # still holds a valid identifier after redaction is hidden entirely.
    left = cells_with_identifiers(redacted)
    if left.any():
        redacted = (
            pl.DataFrame({"v": redacted, "left": left})
            .select(
                pl.when(pl.col("left"))
                .then(pl.col("v").str.replace_all(r"(?s).", MASK))
                .otherwise(pl.col("v"))
            )
            .to_series()
        )
    return redacted


def _redact_series(s: pl.Series) -> pl.Series:
    text = s.cast(pl.String)
    hit = cells_with_identifiers(text)
    if not hit.any():
        return text
    return _redact_cells(text, hit).rename(s.name)


class _CleanMemo:
    """Distinct values one query has already screened and found clean, kept across batches.

    A code or category column kept as text (region codes, ethnic group) repeats a few values
    in every batch of a streaming query; tokenizing and validating them again per batch cost
    0.8 s of CPU per 10 M region codes (``benchmarks/bench_pii.py``, section 2). Only values
    found to hold *no* identifier are remembered, so a hit is always screened afresh. Past
    ``capacity`` values, or when after ``_PROBE`` looked-up values fewer than
    ``_MIN_HIT_RATE`` were known (free text: each remark new), the memo is dropped.
    """

    _PROBE = 200_000
    _MIN_HIT_RATE = 0.05

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.known = pl.Series("v", [], dtype=pl.String)
        self.lock = threading.Lock()
        self.looked_up = 0
        self.found = 0
        self.enabled = True

    def __call__(self, s: pl.Series) -> pl.Series:
        with self.lock:
            enabled, known = self.enabled, self.known
        if not enabled:
            return _redact_series(s)
        text = s.cast(pl.String)
        uniq = text.drop_nulls().unique()
        new = uniq.filter(~uniq.is_in(known.implode())) if known.len() else uniq
        hits = _distinct_hits(new)
        hit_values = hits["v"].unique()
        clean = new.filter(~new.is_in(hit_values.implode())) if hits.height else new
        with self.lock:
            self.looked_up += uniq.len()
            self.found += uniq.len() - new.len()
            if self.enabled and clean.len():
                if self.known.len() + clean.len() > self.capacity:
                    self.enabled, self.known = False, self.known.clear()
                else:
                    self.known = pl.concat([self.known, clean.rename("v")])
            if self.looked_up >= self._PROBE and self.found < self._MIN_HIT_RATE * self.looked_up:
                self.enabled, self.known = False, self.known.clear()
        if hits.height == 0:
            return text.rename(s.name)
        hit = text.is_in(hit_values.implode()).fill_null(False)
        return _redact_cells(text, hit).rename(s.name)


def redact_valid_identifiers(expr: pl.Expr) -> pl.Expr:
    """Text with its identifier tokens replaced, whatever share of cells holds them.

    Cells without a valid identifier are returned unchanged (a region code or an amount is
    not an identifier); in a cell that holds one, every identifier-shaped token is redacted
    (``transforms.operators.redact_identifiers``): erring towards hiding in such a cell.
    Values found clean are remembered for the rest of the query (:class:`_CleanMemo`).
    """
    return expr.cast(pl.String).map_batches(
        _CleanMemo(), return_dtype=pl.String, is_elementwise=True
    )


HAN_WINDOW = 64


def han_ngrams(s: pl.Series) -> pl.DataFrame:
    """Distinct (cell index ``r``, ``g``) for every 2–4 character substring of a Han run."""
    runs = (
        s.cast(pl.String)
        .to_frame("v")
        .with_row_index("r")
        .select("r", pl.col("v").str.extract_all(f"{E.HAN}{{2,}}").alias("run"))
        .explode("run")
        .drop_nulls("run")
        .with_columns(pl.col("run").str.len_chars().alias("n"))
        # Long runs are cut into overlapping windows first: exploding every offset of a run
        # copies the run once per offset (quadratic memory: a 100 000-character run would
        # take 10 GB). A window of W characters starting every W - 3 characters still holds
        # each 2–4 character substring whole, and `unique()` drops the overlap's repeats.
        .with_columns(pl.int_ranges(0, pl.col("n"), HAN_WINDOW - 3).alias("w"))
        .explode("w")
        .select(
            "r",
            pl.col("run").str.slice(pl.col("w"), HAN_WINDOW).alias("run"),
            (pl.col("n") - pl.col("w")).clip(upper_bound=HAN_WINDOW).alias("n"),
        )
    )
    parts: list[pl.DataFrame] = []
    for length in NAME_LENGTHS:
        grams = (
            runs.filter(pl.col("n") >= length)
            .with_columns(pl.int_ranges(0, pl.col("n") - length + 1).alias("o"))
            .explode("o")
            .select("r", pl.col("run").str.slice(pl.col("o"), length).alias("g"))
        )
        parts.append(grams)
    if not parts:
        return pl.DataFrame(schema={"r": pl.UInt32, "g": pl.String})
    return pl.concat(parts).unique()
