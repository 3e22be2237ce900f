"""The six data-quality dimensions of GB/T 36344-2018 (信息技术 数据质量评价指标).

Every rule belongs to exactly one dimension; a dimension's score is the pooled ratio
``(total - failed) / total`` over its rules (numerator = values that pass, denominator =
values checked). See docs/quality.md for the mapping rule kind → dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Dimension(StrEnum):
    NORMATIVITY = "normativity"
    COMPLETENESS = "completeness"
    ACCURACY = "accuracy"
    CONSISTENCY = "consistency"
    TIMELINESS = "timeliness"
    ACCESSIBILITY = "accessibility"

    @property
    def zh(self) -> str:
        return _ZH[self]

    @property
    def label(self) -> str:
        """Chinese term with the English one, for reports and tables."""
        return f"{_ZH[self]} {self.value.capitalize()}"


_ZH = {
    Dimension.NORMATIVITY: "规范性",
    Dimension.COMPLETENESS: "完整性",
    Dimension.ACCURACY: "准确性",
    Dimension.CONSISTENCY: "一致性",
    Dimension.TIMELINESS: "时效性",
    Dimension.ACCESSIBILITY: "可访问性",
}

ORDER: tuple[Dimension, ...] = tuple(Dimension)


@dataclass(frozen=True)
class Ratio:
    """A score with its evidence: ``passed`` of ``total`` checked values."""

    passed: int
    total: int

    @property
    def score(self) -> float | None:
        return self.passed / self.total if self.total else None


def pooled(counts: list[tuple[Dimension, int, int]]) -> dict[Dimension, Ratio]:
    """Pool (dimension, failed, total) triples into one ratio per dimension.

    A dimension with nothing checked (total 0) is left out: reporting it as a perfect 1.0
    would claim a quality that was never measured.
    """
    sums: dict[Dimension, list[int]] = {}
    for dim, failed, total in counts:
        acc = sums.setdefault(dim, [0, 0])
        acc[0] += failed
        acc[1] += total
    return {
        d: Ratio(sums[d][1] - sums[d][0], sums[d][1]) for d in ORDER if d in sums and sums[d][1] > 0
    }
