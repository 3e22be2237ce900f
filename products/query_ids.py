"""What a verification ``query_id`` may be: the requester's own reference, never an identifier.

A query id is stored in the audit log and written verbatim to the release, so an id that is a
resident ID, a mobile number, a bank card, a USCC, an e-mail … would carry personal information
out of the domain beside the answer. A batch is refused as a whole when any of its query ids

- is not a short reference (``[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}``: no names, no e-mails);
- is, or contains as a token, a valid identifier (the check-digit validators of
  ``privacy.pii``: resident IDs incl. 15-digit ones, mobiles, landlines, bank cards with Luhn,
  USCC, passports, plates, e-mails), also when glued to a prefix (18- and 11-character windows);
- contains the identifier its own query asks about (valid or not).

The refusal names the rows (1-based) and the kind of problem, never the value.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from catalogs.vocabulary import PiiType
from privacy.pii import entities as E

QUERY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MAX_LENGTH = 64

# Identifier types judged on the whole id and on each of its tokens, each with a cheap shape
# that every valid value has (the check-digit validator runs only on values of that shape).
_SHAPES: tuple[tuple[str, Callable[[pl.Expr], pl.Expr]], ...] = (
    (r"^[0-9]{17}[0-9Xx]$", E.FULL_MATCH[PiiType.CN_RESIDENT_ID]),
    (r"^[1-8][0-9]{14}$", E.is_resident_id_legacy),
    (r"^[+0-9 ()\-]{11,20}$", E.FULL_MATCH[PiiType.CN_MOBILE]),
    (r"^[+0-9 ()\-]{7,24}$", E.FULL_MATCH[PiiType.CN_PHONE]),
    (r"@", E.FULL_MATCH[PiiType.EMAIL]),
    (r"^[0-9 \-]{14,24}$", E.FULL_MATCH[PiiType.CN_BANK_CARD]),
    (r"^[0-9A-Za-z]{18}$", E.FULL_MATCH[PiiType.CN_USCC]),
    (r"^[A-Za-z]{1,2}[0-9]{7,8}$", E.FULL_MATCH[PiiType.CN_PASSPORT]),
    (r"[^\x00-\x7f]", E.FULL_MATCH[PiiType.CN_LICENSE_PLATE]),
)
# Types also searched in every window of their length (an identifier glued to a prefix or
# suffix is still the identifier), with the shape a window must have to be validated; their
# validators are strict enough for windows.
_WINDOWED: tuple[tuple[PiiType, int, str], ...] = (
    (PiiType.CN_RESIDENT_ID, 18, r"^[0-9]{17}[0-9X]$"),
    (PiiType.CN_USCC, 18, r"^[0-9A-Z]{18}$"),
    (PiiType.CN_MOBILE, 11, r"^1[3-9][0-9]{9}$"),
)
# Tokens beyond the free-text ones: digit runs, and 17 digits plus a check character.
_EXTRA_TOKENS = (r"[0-9]+", r"[0-9]{17}[0-9Xx]")


def _valid(values: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``values`` (column ``t``) that are a valid identifier of some type."""
    t = pl.col("t").str.strip_chars()
    found = [
        values.filter(t.str.contains(shape).fill_null(False)).filter(validator(t).fill_null(False))
        for shape, validator in _SHAPES
    ]
    return pl.concat(found).unique()


def _tokens(expr: pl.Expr) -> pl.Expr:
    extra = [expr.str.extract_all(p) for p in _EXTRA_TOKENS]
    return pl.concat_list([E.free_text_tokens(expr), *extra])


def _window_hits(long_runs: pl.DataFrame) -> pl.Series:
    """The ids (column ``v``) with an identifier in some window of their upper-cased text."""
    v = pl.col("v")
    found: list[pl.Series] = []
    for entity, width, shape in _WINDOWED:
        windows = pl.concat(
            [
                long_runs.filter(v.str.len_chars() >= offset + width).select(
                    v, v.str.to_uppercase().str.slice(offset, width).alias("t")
                )
                for offset in range(MAX_LENGTH - width + 1)
            ]
        ).filter(pl.col("t").str.contains(shape))
        if windows.height:
            valid = (
                windows.select("t")
                .unique()
                .filter(E.FULL_MATCH[entity](pl.col("t")).fill_null(False))
            )
            found.append(windows.join(valid, on="t", how="semi")["v"])
    return pl.concat(found) if found else pl.Series("v", [], dtype=pl.String)


def _identifier_like(ids: pl.Series) -> pl.Series:
    """True where the id is, contains as a token, or hides in a window, an identifier.

    Every identifier type judged here has at least 7 digits (e-mails and plates are already
    refused by the pattern), so only distinct ids with 7 digits are looked at; their tokens
    (the id itself, free-text tokens, digit runs) are validated once each, and windows are
    tried only on ids with a run long enough to hold an ID number, USCC or mobile."""
    v = pl.col("v")
    candidates = (
        pl.DataFrame({"v": ids}).unique().filter(v.str.count_matches("[0-9]").fill_null(0) >= 7)
    )
    if candidates.height == 0:
        return pl.Series(ids.name, [False] * ids.len(), dtype=pl.Boolean)
    tokens = (
        candidates.select(v, pl.concat_list(v, _tokens(v)).alias("t"))
        .explode("t")
        .drop_nulls("t")
        .unique()
    )
    valid = _valid(tokens.select("t").unique())
    hits = tokens.join(valid, on="t", how="semi")["v"]
    long_runs = candidates.filter(v.str.contains(r"[0-9]{11}|[0-9A-Za-z]{18}").fill_null(False))
    if long_runs.height:
        hits = pl.concat([hits, _window_hits(long_runs)])
    return ids.is_in(hits.implode()).fill_null(False)


def problems(queries: pl.DataFrame) -> pl.DataFrame:
    """``row`` (1-based) and ``problem`` for every query id that may not be used."""
    qid = pl.col("query_id").cast(pl.String).str.strip_chars()
    upper = qid.str.to_uppercase()
    own = (
        pl.col("id_number").cast(pl.String).str.strip_chars().str.to_uppercase()
        if "id_number" in queries.columns
        else pl.lit(None, dtype=pl.String)  # a release's output: no identifier to compare
    )
    stripped = queries.select(qid.alias("query_id"))["query_id"]
    frame = queries.with_columns(_identifier_like(stripped).alias("_identifier")).select(
        (pl.int_range(pl.len()) + 1).alias("row"),
        pl.when(~qid.str.contains(QUERY_ID_PATTERN).fill_null(False))
        .then(pl.lit("not a short reference [A-Za-z0-9_.:-], at most 64 characters"))
        .when(pl.col("_identifier"))
        .then(pl.lit("looks like an identifier (resident ID, mobile, bank card, USCC, e-mail …)"))
        .when(
            (own.str.len_chars() >= 4).fill_null(False)
            & upper.str.contains(own, literal=True).fill_null(False)
        )
        .then(pl.lit("contains the identifier the query asks about"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("problem"),
    )
    return frame.drop_nulls("problem")


def summary(found: pl.DataFrame, limit: int = 10) -> str:
    """``row 3: looks like an identifier; row 7: …`` for the first ``limit`` problems."""
    rows = found.head(limit).rows()
    more = f" (and {found.height - limit} more)" if found.height > limit else ""
    return "; ".join(f"row {r}: {p}" for r, p in rows) + more
