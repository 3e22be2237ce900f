"""Where each built release stands: built → assessed → decided → published.

One read-only view over the release manifests, the assessment runs, the reviewer decisions and
the publications, shared by ``shuyu releases list``, ``shuyu review list`` and the portal's
operator and reviewer pages, so that every listing agrees on what "awaiting review" means.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from assessment import engine, publish, review
from products import release as rel
from shuyu_core.home import Home, state_engine

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


def _stage(assessment: str | None, decision: review.Review | None, published: bool) -> str:
    if published:
        return "published"
    if assessment is None:
        return "built"
    if decision is None or decision.assessment_id != assessment:
        return "assessed"
    return {"approve": "approved", "reject": "rejected", "rectify": "rectify"}[decision.decision]


@dataclass(frozen=True)
class _Facts:
    """The latest assessment run, the latest decision and the publication of every release,
    read with one query each (pages list hundreds of releases on every request)."""

    runs: dict[str, Any]
    decisions: dict[str, review.Review]
    published: dict[str, dt.datetime]


def _facts(home: Home) -> _Facts:
    with state_engine(home).connect() as conn:
        runs = {
            r.release_id: r
            for r in conn.execute(
                select(
                    engine.assessment_runs.c.release_id,
                    engine.assessment_runs.c.assessment_id,
                    engine.assessment_runs.c.verdict,
                    engine.assessment_runs.c.assessed_at,
                ).order_by(engine.assessment_runs.c.seq)
            )
        }
        decisions = {
            d.release_id: d
            for d in (
                review._row(r)
                for r in conn.execute(
                    select(review.review_decisions).order_by(review.review_decisions.c.id)
                )
            )
        }
        published = {
            r.release_id: r.published_at
            for r in conn.execute(
                select(publish.publications.c.release_id, publish.publications.c.published_at)
            )
        }
    return _Facts(runs, decisions, published)


def _status(m: rel.ReleaseManifest | _Summary, f: _Facts) -> ReleaseStatus:
    run = f.runs.get(m.release_id)
    d = f.decisions.get(m.release_id)
    pub = f.published.get(m.release_id)
    assessed_at = run.assessed_at if run is not None else None
    return ReleaseStatus(
        release=m.release_id,
        product=m.product_id,
        name=m.name,
        version=m.version,
        kind=m.kind,
        developer=m.developer,
        built_at=m.created_at,
        assessment=run.assessment_id if run is not None else None,
        verdict=run.verdict if run is not None else None,
        assessed_at=assessed_at.replace(tzinfo=dt.UTC) if assessed_at else None,
        decision=d.decision if d else None,
        decision_on=d.assessment_id if d else None,
        reviewer=d.reviewer if d else None,
        decided_at=d.decided_at if d else None,
        published_at=pub.replace(tzinfo=dt.UTC).isoformat() if pub else None,
        stage=_stage(run.assessment_id if run is not None else None, d, pub is not None),
    )


def of(home: Home, manifest: rel.ReleaseManifest) -> ReleaseStatus:
    return _status(manifest, _facts(home))


@dataclass(frozen=True)
class _Summary:
    """The few manifest fields a listing shows (display only: no gate reads these)."""

    release_id: str
    product_id: str
    name: str
    version: str
    kind: str
    developer: str
    created_at: dt.datetime


# manifest path -> (mtime_ns, size, summary): a release is written once, so listing pages
# re-read only what changed instead of parsing every manifest on every request.
_summaries: dict[Path, tuple[int, int, _Summary]] = {}
_summaries_lock = threading.Lock()


def _summary(path: Path) -> _Summary | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    with _summaries_lock:
        hit = _summaries.get(path)
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2]
    m = rel.ReleaseManifest.model_validate_json(path.read_text(encoding="utf-8"))
    s = _Summary(m.release_id, m.product_id, m.name, m.version, m.kind, m.developer, m.created_at)
    with _summaries_lock:
        _summaries[path] = (st.st_mtime_ns, st.st_size, s)
    return s


def _summaries_of(home: Home, product: str | None) -> list[_Summary]:
    if not home.releases.is_dir():
        return []
    found = []
    for d in home.releases.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            s = _summary(d / rel.MANIFEST)
            if s is not None and (product is None or s.product_id == product):
                found.append(s)
    return sorted(found, key=lambda s: s.created_at)


def all_statuses(home: Home, product: str | None = None) -> list[ReleaseStatus]:
    """Every built release (of ``product``), oldest first."""
    facts = _facts(home)
    return [_status(m, facts) for m in _summaries_of(home, product)]


def awaiting_review(home: Home) -> list[ReleaseStatus]:
    """The reviewers' queue (待办): assessed releases without a decision on the latest one."""
    return [s for s in all_statuses(home) if s.awaiting_review and s.stage != "published"]


def stages_from_state(home: Home) -> list[tuple[str, str, dt.datetime | None]]:
    """(release, stage, when) for every assessed release, from the state database alone.

    For notices on every page: no manifest is read, so its cost does not grow with the size
    of the release directories. Releases never assessed are left out (nothing to notify).
    """
    f = _facts(home)
    out = []
    for rid, run in f.runs.items():
        d = f.decisions.get(rid)
        pub = f.published.get(rid)
        stage = _stage(run.assessment_id, d, pub is not None)
        when = pub or (d.decided_at if d and stage != "assessed" else run.assessed_at)
        out.append((rid, stage, when))
    return out
