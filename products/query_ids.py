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

import polars as pl

from catalogs.vocabulary import PiiType
from privacy.pii import entities as E

QUERY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MAX_LENGTH = 64

# Identifier types judged on the whole value and on each token of the id.
_IDENTIFIERS = (
    PiiType.CN_RESIDENT_ID,
    PiiType.CN_MOBILE,
    PiiType.CN_PHONE,
    PiiType.EMAIL,
    PiiType.CN_BANK_CARD,
    PiiType.CN_USCC,
    PiiType.CN_PASSPORT,
    PiiType.CN_LICENSE_PLATE,
)
# Types also searched in every window of their length (an identifier glued to a prefix or
# suffix is still the identifier); their validators are strict enough for windows.
_WINDOWED = ((PiiType.CN_RESIDENT_ID, 18), (PiiType.CN_USCC, 18), (PiiType.CN_MOBILE, 11))
# Tokens beyond the free-text ones: digit runs, and 17 digits plus a check character.
_EXTRA_TOKENS = (r"[0-9]+", r"[0-9]{17}[0-9Xx]")


def _is_identifier(expr: pl.Expr) -> pl.Expr:
    hits = [E.FULL_MATCH[t](expr).fill_null(False) for t in _IDENTIFIERS]
    hits.append(E.is_resident_id_legacy(expr).fill_null(False))
    return pl.any_horizontal(hits)


def _tokens(expr: pl.Expr) -> pl.Expr:
    extra = [expr.str.extract_all(p) for p in _EXTRA_TOKENS]
    return pl.concat_list([E.free_text_tokens(expr), *extra])


def problems(queries: pl.DataFrame) -> pl.DataFrame:
    """``row`` (1-based) and ``problem`` for every query id that may not be used."""
    qid = pl.col("query_id").cast(pl.String).str.strip_chars()
    upper = qid.str.to_uppercase()
    windows = [
        E.FULL_MATCH[entity](upper.str.slice(offset, width)).fill_null(False)
        & (upper.str.len_chars() >= offset + width)
        for entity, width in _WINDOWED
        for offset in range(MAX_LENGTH - width + 1)
    ]
    own = (
        pl.col("id_number").cast(pl.String).str.strip_chars().str.to_uppercase()
        if "id_number" in queries.columns
        else pl.lit(None, dtype=pl.String)  # a release's output: no identifier to compare
    )
    frame = queries.select(
        (pl.int_range(pl.len()) + 1).alias("row"),
        pl.when(~qid.str.contains(QUERY_ID_PATTERN).fill_null(False))
        .then(pl.lit("not a short reference [A-Za-z0-9_.:-], at most 64 characters"))
        .when(
            _is_identifier(qid)
            | _tokens(qid).list.eval(_is_identifier(pl.element())).list.any().fill_null(False)
            | pl.any_horizontal(windows)
        )
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
