"""Which defect kinds each dataset carries, on which columns, and which catalog rule each
one breaks. docs/synthetic.md explains the mapping for the quality checks.

A defective row breaks exactly one rule of its resource (nulls skip every rule but
``required``); ``duplicate_key`` rows are extra appended copies whose key repeats a clean
row's key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = (
    "null_required",
    "bad_check_digit",
    "birth_inconsistent",
    "duplicate_key",
    "out_of_range",
    "unknown_code",
    "future_date",
    "stale_record",
)

# Minimum distance of injected future dates after as_of, and how much older than
# max_age_days stale records are, so results do not flip with a few days' difference.
FUTURE_MIN_DAYS = 30
FUTURE_MAX_DAYS = 730
STALE_EXTRA_MIN_DAYS = 365
STALE_EXTRA_MAX_DAYS = 3650
MAX_AGE_DAYS = 1825
# Clean update dates lie within this many days before as_of.
CLEAN_UPDATE_WINDOW_DAYS = 365


@dataclass(frozen=True)
class DefectSpec:
    kind: str
    columns: tuple[str, ...]
    rule: str  # the catalog rule the defect breaks


def _specs(*items: tuple[str, tuple[str, ...], str]) -> tuple[DefectSpec, ...]:
    return tuple(DefectSpec(k, c, r) for k, c, r in items)


SPECS: dict[str, tuple[DefectSpec, ...]] = {
    "RKJBXX": _specs(
        ("null_required", ("姓名",), "required"),
        ("bad_check_digit", ("公民身份号码",), "check_digit"),
        ("birth_inconsistent", ("出生日期",), "consistent_with_id"),
        ("duplicate_key", ("公民身份号码",), "primary_key"),
        ("unknown_code", ("民族",), "codelist"),
        ("future_date", ("登记日期",), "not_future"),
        ("stale_record", ("更新日期",), "max_age_days"),
    ),
    "SCZTDJ": _specs(
        ("null_required", ("企业名称",), "required"),
        ("bad_check_digit", ("统一社会信用代码",), "check_digit"),
        ("duplicate_key", ("统一社会信用代码",), "primary_key"),
        ("out_of_range", ("注册资本",), "range"),
        ("unknown_code", ("行业代码",), "codelist"),
        ("future_date", ("成立日期",), "not_future"),
        ("stale_record", ("更新日期",), "max_age_days"),
    ),
    "SBCBJF": _specs(
        ("null_required", ("缴费金额",), "required"),
        ("duplicate_key", ("公民身份号码", "缴费月份", "险种"), "primary_key"),
        ("out_of_range", ("缴费基数",), "range"),
        ("unknown_code", ("参保状态",), "allowed"),
        ("future_date", ("更新日期",), "not_future"),
        ("stale_record", ("更新日期",), "max_age_days"),
    ),
    "YBJS": _specs(
        ("null_required", ("医疗机构名称",), "required"),
        ("duplicate_key", ("结算单号",), "primary_key"),
        ("out_of_range", ("医疗总费用",), "range"),
        ("unknown_code", ("诊断编码",), "codelist"),
        ("future_date", ("就诊日期",), "not_future"),
        ("stale_record", ("更新日期",), "max_age_days"),
    ),
}


@dataclass(frozen=True)
class Picked:
    """Rows chosen in one chunk of one dataset: ``rows[kind]`` are row positions to corrupt,
    except for ``duplicate_key`` where they are the clean originals to copy and append."""

    rows: dict[str, np.ndarray]

    def reserved(self) -> np.ndarray:
        """Every row position touched (corrupted rows and duplicate originals)."""
        parts = list(self.rows.values())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def defect_count(n_rows: int, rate: float) -> int:
    """Defective rows for a chunk of ``n_rows`` base rows (half-up rounding)."""
    return int(np.floor(rate * n_rows + 0.5))


def pick(rng: np.random.Generator, code: str, n_rows: int, rate: float) -> Picked:
    """Split round(rate * n_rows) defects as evenly as possible over the dataset's kinds
    (the remainder goes to randomly chosen kinds) and choose distinct rows for them."""
    specs = SPECS[code]
    n_def = min(defect_count(n_rows, rate), n_rows)
    k = len(specs)
    counts = np.full(k, n_def // k, dtype=np.int64)
    rem = n_def - int(counts.sum())
    if rem:
        counts[rng.choice(k, size=rem, replace=False)] += 1
    chosen = rng.choice(n_rows, size=n_def, replace=False) if n_def else np.zeros(0, np.int64)
    rows: dict[str, np.ndarray] = {}
    start = 0
    for spec, cnt in zip(specs, counts, strict=True):
        rows[spec.kind] = np.sort(chosen[start : start + int(cnt)]).astype(np.int64)
        start += int(cnt)
    return Picked(rows)
