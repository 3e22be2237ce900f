"""Per-privacy-unit contribution bounding: the streaming pre-aggregation before any DP step.

A person has many rows (a social-insurance month per insurance type, a medical visit…). The
DP mechanisms assume each unit contributes at most a declared number of rows with values in
declared bounds, so the raw rows are first reduced to exactly one row per unit (group-by on
the unit's identifier) and each value is clipped. The result is written to ``work/`` with
polars' streaming engine, so memory stays bounded by the number of units, not of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shuyu_core.errors import ShuyuError


@dataclass(frozen=True)
class Clip:
    column: str
    lower: float
    upper: float


def one_row_per_unit(lf: pl.LazyFrame, unit: str, aggs: list[pl.Expr]) -> pl.LazyFrame:
    """Reduce every unit's rows to one row (the unit column plus ``aggs``)."""
    return lf.group_by(unit).agg(aggs)


def first_per_unit(lf: pl.LazyFrame, unit: str) -> pl.LazyFrame:
    """One row per unit of a registry that should be unique but may hold duplicates."""
    return lf.unique(subset=[unit], keep="any")


def clip(lf: pl.LazyFrame, clips: list[Clip]) -> pl.LazyFrame:
    return lf.with_columns(pl.col(c.column).clip(c.lower, c.upper) for c in clips)


def sink_bounded(lf: pl.LazyFrame, unit: str, path: Path) -> pl.LazyFrame:
    """Write the bounded frame (streaming) without the unit identifier; return a scan of it.

    ``lf`` must come from ``one_row_per_unit`` / ``first_per_unit`` (and joins on the unit
    between such frames), which guarantee one row per unit by construction. The identifier is
    dropped: the DP step needs only dimensions and bounded values, and the work zone should
    hold no identifier it does not need.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lf.drop(unit).sink_parquet(path, engine="streaming")
    return pl.scan_parquet(path)


def max_rows_per_unit(lf: pl.LazyFrame, unit: str) -> int:
    """The largest number of rows any unit has (tests and checks on small frames)."""
    out = lf.group_by(unit).len().select(pl.col("len").max()).collect().item()
    if out is None:
        return 0
    if not isinstance(out, int):
        raise ShuyuError(f"unexpected row count {out!r} for {unit}")
    return out
