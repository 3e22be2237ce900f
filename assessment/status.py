"""Where each built release stands: built → assessed → decided → published.

One read-only view over the release manifests, the assessment runs, the reviewer decisions and
the publications, shared by ``shuyu releases list``, ``shuyu review list`` and the portal's
operator and reviewer pages, so that every listing agrees on what "awaiting review" means.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from assessment import engine, publish, review
from products import release as rel
from shuyu_core.home import Home

STAGE_ZH = {
    "built": "已构建，待评估",
    "assessed": "已评估，待评审",
    "approved": "已通过，待发布",
    "rejected": "未通过",
    "rectify": "限期整改",
    "published": "已发布",
}


@dataclass(frozen=True)
class ReleaseStatus:
    release: str
    product: str
    name: str
    version: str
    kind: str
    developer: str
    built_at: dt.datetime
    assessment: str | None
    verdict: str | None
    assessed_at: dt.datetime | None
    decision: str | None
    decision_on: str | None  # the assessment the latest decision was made on
    reviewer: str | None
    decided_at: dt.datetime | None
    published_at: str | None
    stage: str

    @property
    def awaiting_review(self) -> bool:
        """Assessed, and no decision yet on the latest assessment."""
        return self.assessment is not None and self.decision_on != self.assessment

    @property
    def stage_zh(self) -> str:
        return STAGE_ZH[self.stage]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, dt.datetime):
                d[k] = v.isoformat()
        d["awaiting_review"] = self.awaiting_review
        d["stage_zh"] = self.stage_zh
        return d


def _stage(a: Any, decision: review.Review | None, published: bool) -> str:
    if published:
        return "published"
    if a is None:
        return "built"
    if decision is None or decision.assessment_id != a.assessment_id:
        return "assessed"
    return {"approve": "approved", "reject": "rejected", "rectify": "rectify"}[decision.decision]


def of(home: Home, manifest: rel.ReleaseManifest) -> ReleaseStatus:
    a = engine.latest(home, manifest.release_id)
    d = review.latest_decision(home, manifest.release_id)
    pub = publish.publication(home, manifest.release_id)
    return ReleaseStatus(
        release=manifest.release_id,
        product=manifest.product_id,
        name=manifest.name,
        version=manifest.version,
        kind=manifest.kind,
        developer=manifest.developer,
        built_at=manifest.created_at,
        assessment=a.assessment_id if a else None,
        verdict=a.verdict if a else None,
        assessed_at=a.assessed_at if a else None,
        decision=d.decision if d else None,
        decision_on=d.assessment_id if d else None,
        reviewer=d.reviewer if d else None,
        decided_at=d.decided_at if d else None,
        published_at=str(pub["published_at"]) if pub else None,
        stage=_stage(a, d, pub is not None),
    )


def all_statuses(home: Home, product: str | None = None) -> list[ReleaseStatus]:
    """Every built release (of ``product``), oldest first."""
    return [of(home, m) for m in rel.list_releases(home, product)]


def awaiting_review(home: Home) -> list[ReleaseStatus]:
    """The reviewers' queue (待办): assessed releases without a decision on the latest one."""
    return [s for s in all_statuses(home) if s.awaiting_review and s.stage != "published"]
