"""The dimension vocabulary: one polars expression per word, mapping a field to a public key.

A value that maps to no key (an unknown code, a date outside the calendar, a person born after
the period's end) becomes null and the row is dropped before bounding: keys are never read
from the data, so such a row has no cell to go to.
"""

from __future__ import annotations

import csv
import datetime as dt
from functools import cache
from pathlib import Path

import polars as pl

from catalogs.product_language import DeriveSpec
from catalogs.product_models import Band, DimensionSpec
from shuyu_core.errors import NotFoundError

MAPS = Path(__file__).resolve().parents[2] / "catalogs" / "codelists" / "maps"


@cache
def mapping(name: str) -> tuple[tuple[str, str, str], ...]:
    """Ranges ``lo..hi`` (inclusive, compared on the code's first len(lo) characters) → key."""
    path = MAPS / f"{name}.csv"
    if not path.is_file() or "/" in name or name.startswith("."):
        known = ", ".join(sorted(p.stem for p in MAPS.glob("*.csv")))
        raise NotFoundError(f"unknown code-list mapping {name!r}", hint=f"use one of: {known}")
    with path.open(encoding="utf-8", newline="") as fh:
        return tuple((r["lo"], r["hi"], r["code"]) for r in csv.DictReader(fh))


def available_mappings() -> list[str]:
    return sorted(p.stem for p in MAPS.glob("*.csv"))


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String


def age_at(birth: pl.Expr, as_of: dt.date) -> pl.Expr:
    """Completed years at ``as_of`` (negative for a birth after ``as_of``)."""
    before_birthday = (birth.dt.month().cast(pl.Int32) * 100 + birth.dt.day().cast(pl.Int32)) > (
        as_of.month * 100 + as_of.day
    )
    return (
        pl.lit(as_of.year, pl.Int32)
        - birth.dt.year().cast(pl.Int32)
        - before_birthday.cast(pl.Int32)
    )


def banded(value: pl.Expr, bands: list[Band]) -> pl.Expr:
    """The label of the band holding ``value``; null outside every band."""
    out: pl.Expr = pl.lit(None, dtype=pl.String)
    for b in sorted(bands, key=lambda b: b.lower, reverse=True):
        out = pl.when(value.is_between(b.lower, b.upper)).then(pl.lit(b.label)).otherwise(out)
    return out


def _year_month(col: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(year, month) as integers from a date or a YYYYMM / YYYY-MM text."""
    if _is_text(dtype):
        digits = col.str.replace_all("-", "")
        return (
            digits.str.slice(0, 4).cast(pl.Int32, strict=False),
            digits.str.slice(4, 2).cast(pl.Int32, strict=False),
        )
    return col.dt.year().cast(pl.Int32), col.dt.month().cast(pl.Int32)


def derive(
    d: DeriveSpec, col: pl.Expr, dtype: pl.DataType, dim: DimensionSpec, period_end: dt.date
) -> pl.Expr:
    """The key expression of dimension ``d`` over column ``col`` (of type ``dtype``)."""
    word = d.as_
    if word == "value":
        return col.cast(pl.String)
    if word in ("year", "quarter", "month"):
        year, month = _year_month(col, dtype)
        if word == "year":
            return year.cast(pl.String)
        if word == "quarter":
            q = ((month - 1) // 3 + 1).cast(pl.String)
            return pl.concat_str([year.cast(pl.String), pl.lit("Q"), q])
        return pl.concat_str(
            [year.cast(pl.String), pl.lit("-"), month.cast(pl.String).str.zfill(2)]
        )
    if word == "age_band":
        assert dim.bands is not None
        age = age_at(col, period_end)
        # Born after the period's end: not yet a person of the period (no negative band).
        return pl.when(age >= 0).then(banded(age, dim.bands)).otherwise(None)
    if word in ("province", "prefecture", "county"):
        code = col.cast(pl.String)
        keep = {"province": 2, "prefecture": 4, "county": 6}[word]
        return pl.concat_str([code.str.slice(0, keep), pl.lit("0" * (6 - keep))])
    if word == "band":
        assert dim.bands is not None
        # Bands have whole-number bounds (upper inclusive): a band covers [lower, upper + 1),
        # so 99.5 falls in 0-99 instead of between 0-99 and 100-499 (no gaps for amounts).
        return banded(col.cast(pl.Float64).floor(), dim.bands)
    assert word == "map" and d.mapping is not None
    code = col.cast(pl.String).str.to_uppercase()
    out: pl.Expr = pl.lit(None, dtype=pl.String)
    for lo, hi, key in reversed(mapping(d.mapping)):
        head = code.str.slice(0, len(lo))
        out = pl.when(head.is_between(pl.lit(lo), pl.lit(hi))).then(pl.lit(key)).otherwise(out)
    return out


def needs_bands(d: DeriveSpec) -> bool:
    return d.as_ in ("age_band", "band")


def needs_date(d: DeriveSpec) -> bool:
    return d.as_ == "age_band"
