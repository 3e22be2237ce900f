"""The assessment's data: checks, dimensions, verdicts (发布前评估).

A check has a dimension, a name, a status (``pass`` | ``warn`` | ``fail``), evidence (the
numbers, never raw values) and the rule it applied. ``rectifiable`` says whether a failure
can be put right within the rectification period (限期整改) or blocks the release outright.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["pass", "warn", "fail"]
Verdict = Literal["pass", "fail", "rectify"]
Decision = Literal["approve", "reject", "rectify"]

RECTIFY_DAYS = 30

# Jilin's ten dimensions (合法性 … 特定主体知情同意), in report order.
DIMENSIONS: dict[str, tuple[str, str]] = {
    "legality": ("合法性", "Legality"),
    "desensitization": ("敏感数据脱敏", "Desensitization"),
    "consent": ("特定主体知情同意", "Data-subject consent"),
    "accuracy": ("准确性", "Accuracy"),
    "consistency": ("一致性", "Consistency"),
    "normativity": ("规范性", "Normativity"),
    "completeness": ("完整性", "Completeness"),
    "timeliness": ("时效性", "Timeliness"),
    "accessibility": ("可访问性", "Accessibility"),
    "circulation": ("流通交易风险性", "Circulation and trade risk"),
}

VERDICT_LABELS: dict[str, str] = {
    "pass": "通过 pass",
    "fail": "未通过 fail",
    "rectify": "限期整改 rectify",
}
STATUS_LABELS: dict[str, str] = {"pass": "通过 pass", "warn": "警告 warn", "fail": "不通过 fail"}
DECISION_LABELS: dict[str, str] = {
    "approve": "通过 approved",
    "reject": "未通过 rejected",
    "rectify": "限期整改 rectification ordered",
}


def dimension_label(dim: str) -> str:
    zh, en = DIMENSIONS.get(dim, (dim, dim))
    return f"{zh} {en}"


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    dimension: str
    name: str
    title: str
    status: Status
    evidence: str
    rule: str
    rectifiable: bool = Field(
        description="a failure can be corrected within 30 days (限期整改); otherwise it blocks"
    )
    data: dict[str, Any] = Field(default_factory=dict, description="numbers for charts")

    def contract(self) -> dict[str, str]:
        return {
            "dimension": self.dimension,
            "name": self.name,
            "status": self.status,
            "evidence": self.evidence,
        }


class Fingerprint(BaseModel):
    """What the assessment saw; publication requires all of it unchanged."""

    model_config = ConfigDict(frozen=True)

    release_manifest_sm3: str
    outputs_sm3: str
    release_spec_sm3: str
    current_spec_sm3: str
    governance_sm3: str
    catalog_version: str
    # The build seal (audit entry hash) and whether the files still match it.
    release_seal: str = ""

    def changes(self, other: Fingerprint) -> list[str]:
        mine, theirs = self.model_dump(), other.model_dump()
        return [k for k in mine if mine[k] != theirs[k]]


class Assessment(BaseModel):
    model_config = ConfigDict(frozen=True)

    assessment_id: str
    release: str
    product: str
    product_name: str
    product_name_en: str
    version: str
    kind: str
    verdict: Verdict
    due_date: dt.date | None = None
    reasons: list[str]
    checks: list[Check]
    assessed_at: dt.datetime
    assessed_for: dt.date
    actor: str
    fingerprint: Fingerprint
    context: dict[str, Any] = Field(default_factory=dict, description="budget, lineage, spec")

    def contract(self) -> dict[str, Any]:
        """The JSON contract printed by ``shuyu assess RELEASE --format json``."""
        return {
            "release": self.release,
            "product": self.product,
            "verdict": self.verdict,
            "checks": [c.contract() for c in self.checks],
        }

    def failing(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


def decide(checks: list[Check], at: dt.date) -> tuple[Verdict, dt.date | None, list[str]]:
    """The verdict rules (documented in docs/assessment.md):

    - ``fail`` (未通过) if any check fails that is not rectifiable (legality, desensitization,
      consent, integrity: these cannot be corrected on the same release);
    - ``rectify`` (限期整改, due 30 days on) if any rectifiable check fails or any check warns;
    - ``pass`` (通过) otherwise.
    """
    blocking = [c for c in checks if c.status == "fail" and not c.rectifiable]
    fixable = [c for c in checks if c.status == "fail" and c.rectifiable]
    warned = [c for c in checks if c.status == "warn"]
    if blocking:
        verdict: Verdict = "fail"
        reasons = [f"{c.name}: {c.evidence}" for c in blocking]
        reasons += [f"(rectifiable) {c.name}: {c.evidence}" for c in fixable]
        return verdict, None, reasons
    if fixable or warned:
        due = at + dt.timedelta(days=RECTIFY_DAYS)
        reasons = [f"{c.name}: {c.evidence}" for c in (*fixable, *warned)]
        return "rectify", due, reasons
    return "pass", None, []
