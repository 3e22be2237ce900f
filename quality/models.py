"""Typed results of a quality check (the JSON contract plus the evidence behind it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quality.dimensions import ORDER, Dimension, Ratio, pooled


class Sample(BaseModel):
    """One offending row: its 1-based row number in the snapshot and a masked value."""

    model_config = ConfigDict(frozen=True)

    row: int
    value: str | None = None


class RuleResult(BaseModel):
    rule: str
    field: str | None
    dimension: Dimension
    failed: int
    total: int
    kind: str = ""
    description: str = ""
    samples: list[Sample] = Field(default_factory=list)
    note: str | None = None

    @property
    def share(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def contract(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "field": self.field,
            "dimension": self.dimension.value,
            "failed": self.failed,
            "total": self.total,
        }


class CheckResult(BaseModel):
    resource: str
    snapshot: str
    source_unit: str
    rows: int
    checked_at: dt.datetime
    as_of: dt.date
    catalog_version: str = ""
    # resource code -> snapshot id read for reference checks
    references: dict[str, str] = Field(default_factory=dict)
    rules: list[RuleResult]
    seconds: float = 0.0
    check_id: int | None = None

    def ratios(self) -> dict[Dimension, Ratio]:
        return pooled([(r.dimension, r.failed, r.total) for r in self.rules])

    def dimensions(self) -> dict[str, float]:
        """Scores 0..1 per measured dimension, in GB/T 36344 order."""
        out: dict[str, float] = {}
        for dim, ratio in self.ratios().items():
            if ratio.score is not None:
                out[dim.value] = ratio.score
        return out

    def contract(self) -> dict[str, Any]:
        """Exactly the JSON contract of ``shuyu quality check --format json``."""
        return {
            "resource": self.resource,
            "snapshot": self.snapshot,
            "dimensions": self.dimensions(),
            "rules": [r.contract() for r in self.rules],
        }

    def rule(self, rule_id: str) -> RuleResult:
        for r in self.rules:
            if r.rule == rule_id:
                return r
        raise KeyError(rule_id)


__all__ = ["ORDER", "CheckResult", "Dimension", "RuleResult", "Sample"]
