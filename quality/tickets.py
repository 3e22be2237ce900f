"""Correction requests (数据校核 tickets) for source units, with due dates in working days.

One ticket per (resource, rule). A check whose rule fails above its threshold opens it
for the resource's source unit, due 10 working days later (Yunnan draft). States::

    open → acknowledged → answered → verified
      ↘──────────────↘──────────↘ (a newer snapshot passes: verified)
    answered --(a newer snapshot still fails)--> reopened → acknowledged → answered → ...
    verified --(a newer snapshot fails again)--> reopened

Transitions driven by data happen only for a snapshot newer than the one the ticket last
saw, so re-checking the same snapshot never verifies or reopens anything. A ticket still
waiting for the unit (open, acknowledged, reopened) after its due date is flagged overdue.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, RowMapping

from catalogs.models import Resource
from governance.actors import Actor, current_actor
from governance.audit import record
from quality.models import CheckResult, RuleResult
from quality.store import _new_id, quality_ticket_events, quality_tickets, utcnow
from quality.workdays import RESPONSE_WORKING_DAYS, add_working_days, today_cn
from shuyu_core.errors import NotFoundError, ValidationError
from shuyu_core.home import Home, state_engine

OPEN, ACKNOWLEDGED, ANSWERED, VERIFIED, REOPENED = (
    "open",
    "acknowledged",
    "answered",
    "verified",
    "reopened",
)
ACTIVE = (OPEN, ACKNOWLEDGED, ANSWERED, REOPENED)
WAITING = (OPEN, ACKNOWLEDGED, REOPENED)  # the unit still owes an answer
STATE_ZH = {
    OPEN: "待处理",
    ACKNOWLEDGED: "已确认",
    ANSWERED: "已反馈",
    VERIFIED: "已核验",
    REOPENED: "重新打开",
}

# Failed share above which a rule opens a ticket. Any failure is worth a correction request,
# except record staleness: a slowly-changing registry always holds some records not
# re-verified within max_age_days, so 5% stale records are tolerated.
DEFAULT_DIMENSIONS: dict[str, float] = {
    "normativity": 0.0,
    "completeness": 0.0,
    "accuracy": 0.0,
    "consistency": 0.0,
    "timeliness": 0.0,
    "accessibility": 0.0,
}
DEFAULT_KINDS: dict[str, float] = {"max_age": 0.05}
THRESHOLDS_FILE = "quality_thresholds.yaml"


@dataclass(frozen=True)
class Thresholds:
    """Most specific wins: ``rules`` ("CODE/rule-id"), then ``kinds``, then ``dimensions``."""

    dimensions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DIMENSIONS))
    kinds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    rules: dict[str, float] = field(default_factory=dict)

    def for_rule(self, code: str, rule: RuleResult) -> float:
        key = f"{code}/{rule.rule}"
        if key in self.rules:
            return self.rules[key]
        if rule.kind in self.kinds:
            return self.kinds[rule.kind]
        return self.dimensions.get(rule.dimension.value, 0.0)

    @classmethod
    def load(cls, home: Home) -> Thresholds:
        """Defaults, overridden by ``$SHUYU_QUALITY_THRESHOLDS`` or
        ``<SHUYU_HOME>/quality_thresholds.yaml`` when present."""
        env = os.environ.get("SHUYU_QUALITY_THRESHOLDS")
        path = Path(env) if env else home.root / THRESHOLDS_FILE
        if not path.exists():
            if env:
                raise NotFoundError(
                    f"threshold file {path} does not exist",
                    hint="unset SHUYU_QUALITY_THRESHOLDS or point it at a YAML file",
                )
            return cls()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or set(data) - {"dimensions", "kinds", "rules"}:
            raise ValidationError(
                f"{path}: expected a mapping with keys dimensions, kinds, rules",
                hint="see docs/quality.md, section Thresholds",
            )
        out: dict[str, dict[str, float]] = {}
        for key in ("dimensions", "kinds", "rules"):
            section = data.get(key) or {}
            try:
                out[key] = {str(k): float(v) for k, v in section.items()}
            except (AttributeError, TypeError, ValueError):
                raise ValidationError(
                    f"{path}: {key} must map names to numbers between 0 and 1",
                    hint="e.g. 'kinds: {max_age: 0.05}'",
                ) from None
            bad = [k for k, v in out[key].items() if not 0.0 <= v <= 1.0]
            if bad:
                raise ValidationError(
                    f"{path}: {key}.{bad[0]} is not between 0 and 1",
                    hint="thresholds are failed shares, 0 opens on any failure",
                )
        return cls(
            {**DEFAULT_DIMENSIONS, **out["dimensions"]},
            {**DEFAULT_KINDS, **out["kinds"]},
            out["rules"],
        )


class Ticket(BaseModel):
    id: int
    resource: str
    rule: str
    field: str | None
    dimension: str
    source_unit: str
    state: str
    opened_at: dt.datetime
    opened_on: dt.date
    due_on: dt.date
    due_official: bool
    updated_at: dt.datetime
    opened_snapshot: str
    snapshot: str
    failed: int
    total: int
    threshold: float
    reopen_count: int
    overdue_flagged_at: dt.datetime | None
    verified_at: dt.datetime | None
    last_note: str | None

    def overdue(self, today: dt.date | None = None) -> bool:
        return self.state in WAITING and (today or today_cn()) > self.due_on

    def view(self, today: dt.date | None = None) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["overdue"] = self.overdue(today)
        d["state_zh"] = STATE_ZH[self.state]
        return d


@dataclass(frozen=True)
class Change:
    ticket: int
    resource: str
    rule: str
    from_state: str | None
    to_state: str


def _ticket(row: RowMapping) -> Ticket:
    return Ticket.model_validate(dict(row))


def _event(
    conn: Connection,
    ticket_id: int,
    who: Actor,
    from_state: str | None,
    to_state: str,
    snapshot: str | None,
    note: str | None,
) -> None:
    conn.execute(
        quality_ticket_events.insert().values(
            ticket_id=ticket_id,
            ts=utcnow(),
            actor=who.name,
            role=who.role,
            from_state=from_state,
            to_state=to_state,
            snapshot=snapshot,
            note=note,
        )
    )


def _due(start: dt.date) -> tuple[dt.date, bool]:
    return add_working_days(start, RESPONSE_WORKING_DAYS)


def apply_check(
    home: Home,
    resource: Resource,
    result: CheckResult,
    thresholds: Thresholds | None = None,
    today: dt.date | None = None,
) -> list[Change]:
    """Open, verify or reopen tickets from one check result; audit every change."""
    limits = thresholds or Thresholds.load(home)
    day = today or today_cn()
    who = current_actor()
    now = utcnow()
    changes: list[Change] = []
    engine = state_engine(home)
    with engine.begin() as conn:
        existing = {
            row.rule: _ticket(row._mapping)
            for row in conn.execute(
                select(quality_tickets).where(quality_tickets.c.resource == result.resource)
            )
        }
        for rule in result.rules:
            if rule.total == 0:
                continue  # not measured: neither a failure nor a verification
            limit = limits.for_rule(result.resource, rule)
            exceeds = rule.share > limit
            t = existing.get(rule.rule)
            if t is None:
                if not exceeds:
                    continue
                due, official = _due(day)
                ins = conn.execute(
                    quality_tickets.insert().values(
                        resource=result.resource,
                        rule=rule.rule,
                        field=rule.field,
                        dimension=rule.dimension.value,
                        source_unit=resource.source_unit.code,
                        state=OPEN,
                        opened_at=now,
                        opened_on=day,
                        due_on=due,
                        due_official=official,
                        updated_at=now,
                        opened_snapshot=result.snapshot,
                        snapshot=result.snapshot,
                        failed=rule.failed,
                        total=rule.total,
                        threshold=limit,
                        reopen_count=0,
                    )
                )
                tid = _new_id(ins)
                _event(conn, tid, who, None, OPEN, result.snapshot, None)
                changes.append(Change(tid, result.resource, rule.rule, None, OPEN))
                continue
            if result.snapshot <= t.snapshot:
                continue  # same or older data: nothing new to judge
            values: dict[str, Any] = {
                "snapshot": result.snapshot,
                "failed": rule.failed,
                "total": rule.total,
                "threshold": limit,
                "updated_at": now,
            }
            new_state: str | None = None
            if t.state in ACTIVE and not exceeds:
                new_state = VERIFIED
                values["verified_at"] = now
            elif exceeds and t.state in (ANSWERED, VERIFIED):
                new_state = REOPENED
                due, official = _due(day)
                values.update(
                    due_on=due,
                    due_official=official,
                    reopen_count=t.reopen_count + 1,
                    overdue_flagged_at=None,
                    verified_at=None,
                )
            if new_state is not None:
                values["state"] = new_state
            conn.execute(
                quality_tickets.update().where(quality_tickets.c.id == t.id).values(**values)
            )
            if new_state is not None:
                _event(conn, t.id, who, t.state, new_state, result.snapshot, None)
                changes.append(Change(t.id, result.resource, rule.rule, t.state, new_state))
    for c in changes:
        action = {OPEN: "ticket.open", VERIFIED: "ticket.verify", REOPENED: "ticket.reopen"}
        record(
            home,
            action[c.to_state],
            f"ticket/{c.ticket}",
            "ok",
            {
                "resource": c.resource,
                "rule": c.rule,
                "from": c.from_state,
                "snapshot": result.snapshot,
            },
        )
    flag_overdue(home, day)
    return changes


def flag_overdue(home: Home, today: dt.date | None = None) -> list[int]:
    """Mark tickets newly past their due date (once each) and audit the flag."""
    day = today or today_cn()
    who = current_actor()
    flagged: list[int] = []
    engine = state_engine(home)
    with engine.begin() as conn:
        rows = conn.execute(
            select(quality_tickets).where(
                quality_tickets.c.state.in_(WAITING),
                quality_tickets.c.due_on < day,
                quality_tickets.c.overdue_flagged_at.is_(None),
            )
        ).all()
        for row in rows:
            t = _ticket(row._mapping)
            conn.execute(
                quality_tickets.update()
                .where(quality_tickets.c.id == t.id)
                .values(overdue_flagged_at=utcnow())
            )
            _event(conn, t.id, who, t.state, t.state, t.snapshot, f"overdue since {t.due_on}")
            flagged.append(t.id)
    for tid in flagged:
        record(home, "ticket.overdue", f"ticket/{tid}", "ok", {"as_of": day.isoformat()})
    return flagged


def get(home: Home, ticket_id: int) -> Ticket:
    with state_engine(home).connect() as conn:
        row = conn.execute(select(quality_tickets).where(quality_tickets.c.id == ticket_id)).first()
    if row is None:
        raise NotFoundError(
            f"ticket {ticket_id} does not exist", hint="see 'shuyu tickets list' for ticket ids"
        )
    return _ticket(row._mapping)


def list_tickets(
    home: Home,
    unit: str | None = None,
    states: tuple[str, ...] | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[Ticket]:
    """Tickets by id; ``limit``/``offset`` page through them (the portal shows 200 a page)."""
    q = select(quality_tickets).order_by(quality_tickets.c.id)
    if unit is not None:
        q = q.where(quality_tickets.c.source_unit == unit)
    if states:
        q = q.where(quality_tickets.c.state.in_(states))
    if limit is not None:
        q = q.limit(limit).offset(offset)
    with state_engine(home).connect() as conn:
        return [_ticket(r._mapping) for r in conn.execute(q)]


def count_tickets(
    home: Home, unit: str | None = None, states: tuple[str, ...] | None = None
) -> int:
    q = select(func.count()).select_from(quality_tickets)
    if unit is not None:
        q = q.where(quality_tickets.c.source_unit == unit)
    if states:
        q = q.where(quality_tickets.c.state.in_(states))
    with state_engine(home).connect() as conn:
        return int(conn.execute(q).scalar_one())


def events(home: Home, ticket_id: int) -> list[dict[str, Any]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(quality_ticket_events)
            .where(quality_ticket_events.c.ticket_id == ticket_id)
            .order_by(quality_ticket_events.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


_MANUAL = {
    ACKNOWLEDGED: ((OPEN, REOPENED), "ticket.ack"),
    ANSWERED: ((OPEN, ACKNOWLEDGED, REOPENED), "ticket.answer"),
}


def transition(home: Home, ticket_id: int, to_state: str, note: str) -> Ticket:
    """A source unit acknowledges or answers a ticket. Role checks are the caller's job
    (``quality.api``); this enforces the state machine and records the event."""
    sources, action = _MANUAL[to_state]
    if not note.strip():
        raise ValidationError(
            f"ticket {ticket_id}: a note is required",
            hint="say what was checked or corrected, e.g. --note '已更正，下期数据生效'",
        )
    t = get(home, ticket_id)
    if t.state not in sources:
        exc = ValidationError(
            f"ticket {ticket_id} is {t.state}; it cannot become {to_state}",
            hint=f"only a ticket that is {' or '.join(sources)} can become {to_state}",
        )
        record(home, action, f"ticket/{ticket_id}", "refused", {"error": exc.one_line()})
        exc.audited = True
        raise exc
    who = current_actor()
    with state_engine(home).begin() as conn:
        conn.execute(
            quality_tickets.update()
            .where(quality_tickets.c.id == ticket_id)
            .values(state=to_state, updated_at=utcnow(), last_note=note)
        )
        _event(conn, ticket_id, who, t.state, to_state, t.snapshot, note)
    record(
        home,
        action,
        f"ticket/{ticket_id}",
        "ok",
        {"from": t.state, "to": to_state, "resource": t.resource, "rule": t.rule},
    )
    return get(home, ticket_id)
