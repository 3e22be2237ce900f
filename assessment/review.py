"""Reviewer decisions on an assessed release: 通过 approve, 未通过 reject, 限期整改 rectify.

Only the ``reviewer`` role decides (``governance.roles``: review.approve / review.reject /
review.rectify). A decision names the assessment it was made on. Approval is refused unless
that assessment's verdict is ``pass``, no rectification was ordered on that same assessment
(after 限期整改 only a newer assessment can be approved), and the release, its spec, the
agreements and the catalog are unchanged since (the assessment's fingerprint); a
rectification order is due 30 days on. Every decision and every refusal is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Date, DateTime, Integer, String, Table, Text, select

from assessment import adapters as ad
from assessment import engine
from assessment.models import RECTIFY_DAYS, Assessment, Decision
from governance import roles, separation
from governance.audit import record
from governance.evidence import anchored_entries
from shuyu_core import ids
from shuyu_core.db import METADATA
from shuyu_core.errors import PermissionDenied, ShuyuError, ValidationError
from shuyu_core.home import Home, state_engine

review_decisions = Table(
    "review_decisions",
    METADATA,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("release_id", String(200), nullable=False, index=True),
    Column("assessment_id", String(200), nullable=False),
    Column("decision", String(20), nullable=False),
    Column("comment", Text, nullable=False),
    Column("reviewer", String(200), nullable=False),
    Column("decided_at", DateTime(), nullable=False),
    Column("due_date", Date(), nullable=True),
)

_ACTIONS: dict[str, str] = {
    "approve": "review.approve",
    "reject": "review.reject",
    "rectify": "review.rectify",
}


@dataclass(frozen=True)
class Review:
    id: int
    release_id: str
    assessment_id: str
    decision: str
    comment: str
    reviewer: str
    decided_at: dt.datetime
    due_date: dt.date | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "release": self.release_id,
            "assessment": self.assessment_id,
            "decision": self.decision,
            "comment": self.comment,
            "reviewer": self.reviewer,
            "decided_at": self.decided_at.isoformat(),
            "due_date": self.due_date.isoformat() if self.due_date else None,
        }


# A decision's comment goes into the audit chain, which is kept five years and re-hashed by
# every verify: a bounded size keeps one request from bloating it.
MAX_COMMENT = 4000

_DECISIONS = ("review.approve", "review.reject", "review.rectify")


def _refuse(home: Home, action: str, release_id: str, message: str, hint: str) -> ShuyuError:
    exc = PermissionDenied(message, hint=hint)
    record(home, action, release_id, "refused", {"reason": message})
    exc.audited = True
    return exc


def _valid_id(home: Home, action: str, release_id: str) -> None:
    """A release id must match its pattern, and its directory resolve inside releases/,
    before it reaches the database or a path."""
    try:
        ids.release_id(release_id)
        ad.release_dir(home, release_id)
    except ShuyuError as exc:
        record(home, action, str(release_id)[:200], "refused", {"reason": exc.message})
        exc.audited = True
        raise


def unchanged_since(home: Home, a: Assessment) -> list[str]:
    """Fingerprint components that changed since assessment ``a`` (empty: unchanged)."""
    manifest = ad.load_release(home, a.release)
    now = engine.fingerprint(home, manifest, ad.load_catalog().version)
    return a.fingerprint.changes(now)


def decide(home: Home, release_id: str, decision: Decision, comment: str) -> Review:
    """Record a reviewer's decision on the latest assessment of ``release_id``."""
    action = _ACTIONS[decision]
    who = roles.require(home, action, release_id)
    reviewer = who.name
    _valid_id(home, action, release_id)
    if not comment.strip() or len(comment) > MAX_COMMENT:
        exc = ValidationError(
            f"a {decision} decision on {release_id} needs a comment"
            + (f" of at most {MAX_COMMENT} characters" if comment.strip() else ""),
            hint="give --comment TEXT with the reasons (recorded and audited)",
        )
        record(home, action, release_id, "error", {"error": exc.message})
        exc.audited = True
        raise exc
    latest = engine.latest(home, release_id)
    if latest is None:
        raise _refuse(
            home,
            action,
            release_id,
            f"release {release_id} has no assessment to review",
            f"run 'shuyu assess {release_id}' first",
        )
    if decision == "approve":
        conflicts = separation.approval_conflicts(home, release_id, who)
        if conflicts:
            raise _refuse(
                home,
                action,
                release_id,
                f"{who.name} may not approve {release_id} (四眼原则): {'; '.join(conflicts)}",
                "another reviewer, who took no part in building, assessing or publishing it, "
                "decides",
            )
        # From the audit chain too: deleting the rectify row must not lift the order.
        rectified = [
            r
            for r in history(home, release_id)
            if r.decision == "rectify" and r.assessment_id == latest.assessment_id
        ] or [
            _from_entry(e)
            for e in anchored_entries(home, release_id, ("review.rectify",), "a decision")[0]
            if e["details"].get("assessment") == latest.assessment_id
        ]
        if rectified:
            # An order to rectify stands until the release is assessed again: approving the
            # very assessment that was found wanting would make the order meaningless.
            raise _refuse(
                home,
                action,
                release_id,
                f"cannot approve {release_id}: rectification was ordered on assessment "
                f"{latest.assessment_id} ({rectified[-1].decided_at:%Y-%m-%d}) and no newer "
                "assessment exists",
                f"correct the release, re-run 'shuyu assess {release_id}', then review the new "
                "report",
            )
        if latest.verdict != "pass":
            raise _refuse(
                home,
                action,
                release_id,
                f"cannot approve {release_id}: assessment {latest.assessment_id} verdict is "
                f"{latest.verdict}",
                "only a release whose assessment passed can be approved; reject it or order "
                "rectification",
            )
        if latest.assessed_for != latest.assessed_at.date():
            raise _refuse(
                home,
                action,
                release_id,
                f"cannot approve {release_id}: assessment {latest.assessment_id} was made as of "
                f"{latest.assessed_for}, not on the day it ran",
                f"re-run 'shuyu assess {release_id}' without --at",
            )
        changed = unchanged_since(home, latest)
        if changed:
            raise _refuse(
                home,
                action,
                release_id,
                f"cannot approve {release_id}: {', '.join(changed)} changed since assessment "
                f"{latest.assessment_id}",
                f"re-run 'shuyu assess {release_id}' and review the new report",
            )
    now = dt.datetime.now(dt.UTC)
    due = now.date() + dt.timedelta(days=RECTIFY_DAYS) if decision == "rectify" else None
    with state_engine(home).begin() as conn:
        result = conn.execute(
            review_decisions.insert().values(
                release_id=release_id,
                assessment_id=latest.assessment_id,
                decision=decision,
                comment=comment.strip(),
                reviewer=reviewer,
                decided_at=now.replace(tzinfo=None),
                due_date=due,
            )
        )
        pk = result.inserted_primary_key
        review_id = int(pk[0]) if pk else 0
    record(
        home,
        action,
        release_id,
        "ok",
        {
            "review": review_id,
            "assessment": latest.assessment_id,
            "verdict": latest.verdict,
            "decision": decision,
            "comment": comment.strip(),
            "due_date": due.isoformat() if due else None,
            "separation_of_duties_relaxed": separation.relaxed_reason(home),
        },
    )
    return Review(
        review_id, release_id, latest.assessment_id, decision, comment.strip(), reviewer, now, due
    )


def _row(r: Any) -> Review:
    m = r._mapping
    at = m["decided_at"]
    return Review(
        id=int(m["id"]),
        release_id=m["release_id"],
        assessment_id=m["assessment_id"],
        decision=m["decision"],
        comment=m["comment"],
        reviewer=m["reviewer"],
        decided_at=at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at,
        due_date=m["due_date"],
    )


def history(home: Home, release_id: str) -> list[Review]:
    """Every decision on ``release_id``, oldest first."""
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(review_decisions)
            .where(review_decisions.c.release_id == release_id)
            .order_by(review_decisions.c.id)
        ).all()
    return [_row(r) for r in rows]


def _from_entry(e: dict[str, Any]) -> Review:
    d = e["details"]
    at = dt.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return Review(
        int(d.get("review") or 0),
        e["object"],
        str(d.get("assessment")),
        str(d.get("decision")),
        str(d.get("comment") or ""),
        e["actor"],
        at,
        None,
    )


def decision_problems(home: Home, decision: Review) -> list[str]:
    """Why ``decision`` (a row of ``review_decisions``) is not the release's latest audited
    decision: the table is writable by any operator, so an approval inserted, a rejection
    turned into an approval, or an approval relabelled to another reviewer is found here."""
    entries, problems = anchored_entries(home, decision.release_id, _DECISIONS, "a decision")
    if not entries:
        return [*problems, f"no reviewer decision on {decision.release_id} in the audit chain"]
    last = entries[-1]
    d = last["details"]
    if (
        d.get("review") != decision.id
        or d.get("decision") != decision.decision
        or d.get("assessment") != decision.assessment_id
        or last["actor"] != decision.reviewer
    ):
        problems.append(
            f"the {decision.decision} by {decision.reviewer} (review {decision.id}) is not the "
            f"latest audited decision ({d.get('decision')} by {last['actor']}, review "
            f"{d.get('review')})"
        )
    return problems


def latest_decision(home: Home, release_id: str) -> Review | None:
    found = history(home, release_id)
    return found[-1] if found else None


def show(home: Home, release_id: str) -> dict[str, Any]:
    """What a reviewer sees: the latest assessment, its reports and the decisions so far."""
    ad.require_role(home, "assessment.read", release_id)
    _valid_id(home, "assessment.read", release_id)
    a = engine.require_latest(home, release_id)
    paths = engine.report_paths(home, a)
    record(home, "assessment.read", release_id, "ok", {"assessment": a.assessment_id})
    return {
        "release": release_id,
        "product": a.product,
        "assessment": a.assessment_id,
        "verdict": a.verdict,
        "due_date": a.due_date.isoformat() if a.due_date else None,
        "reasons": a.reasons,
        "failing": [c.contract() for c in a.checks if c.status != "pass"],
        "reports": {k: str(v) for k, v in paths.items()},
        "decisions": [r.to_dict() for r in history(home, release_id)],
        "rectification_overdue": _overdue(home, release_id, a),
    }


def _overdue(home: Home, release_id: str, a: Assessment) -> bool:
    """A rectification (ordered or by verdict) whose due date passed without a new pass."""
    today = dt.datetime.now(dt.UTC).date()
    last = latest_decision(home, release_id)
    due = last.due_date if last is not None and last.decision == "rectify" else a.due_date
    return due is not None and due < today and a.verdict != "pass"
