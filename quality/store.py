"""Quality state in the state database (SQLAlchemy Core, portable to PostgreSQL).

``quality_checks`` keeps every check run (the full result as JSON, masked samples only);
``quality_rule_results`` the per-rule counts for queries; ``quality_tickets`` and
``quality_ticket_events`` the correction requests (数据校核) and their history.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.engine import Connection, CursorResult

from quality.models import CheckResult
from shuyu_core.db import METADATA

_ID = BigInteger().with_variant(Integer, "sqlite")

quality_checks = Table(
    "quality_checks",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("resource", String(64), nullable=False),
    Column("snapshot", String(64), nullable=False),
    Column("source_unit", String(64), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("result", Text, nullable=False),
    Index("ix_quality_checks_resource_snapshot", "resource", "snapshot"),
)

quality_rule_results = Table(
    "quality_rule_results",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("check_id", _ID, ForeignKey("quality_checks.id"), nullable=False, index=True),
    Column("rule", String(200), nullable=False),
    Column("field", String(200), nullable=True),
    Column("dimension", String(20), nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
)

quality_tickets = Table(
    "quality_tickets",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("resource", String(64), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("field", String(200), nullable=True),
    Column("dimension", String(20), nullable=False),
    Column("source_unit", String(64), nullable=False, index=True),
    Column("state", String(20), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("opened_on", Date, nullable=False),
    Column("due_on", Date, nullable=False),
    # False when the due date fell outside the holiday calendar's years (Mon-Fri fallback)
    Column("due_official", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("opened_snapshot", String(64), nullable=False),
    Column("snapshot", String(64), nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("overdue_flagged_at", DateTime(timezone=True), nullable=True),
    Column("verified_at", DateTime(timezone=True), nullable=True),
    Column("last_note", Text, nullable=True),
    UniqueConstraint("resource", "rule", name="uq_quality_tickets_resource_rule"),
)

quality_ticket_events = Table(
    "quality_ticket_events",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("ticket_id", _ID, ForeignKey("quality_tickets.id"), nullable=False, index=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(200), nullable=False),
    Column("from_state", String(20), nullable=True),
    Column("to_state", String(20), nullable=False),
    Column("snapshot", String(64), nullable=True),
    Column("note", Text, nullable=True),
)


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every insert here has an autoincrement key
        raise RuntimeError("insert returned no primary key")
    return int(key[0])


def save_check(conn: Connection, result: CheckResult, actor: str) -> int:
    ins = conn.execute(
        quality_checks.insert().values(
            resource=result.resource,
            snapshot=result.snapshot,
            source_unit=result.source_unit,
            checked_at=result.checked_at,
            as_of=result.as_of,
            rows=result.rows,
            seconds=result.seconds,
            actor=actor,
            result=result.model_dump_json(exclude={"check_id"}),
        )
    )
    check_id = _new_id(ins)
    conn.execute(
        quality_rule_results.insert(),
        [
            {
                "check_id": check_id,
                "rule": r.rule,
                "field": r.field,
                "dimension": r.dimension.value,
                "failed": r.failed,
                "total": r.total,
            }
            for r in result.rules
        ],
    )
    return check_id


def _load(row_id: int, text: str) -> CheckResult:
    res = CheckResult.model_validate_json(text)
    return res.model_copy(update={"check_id": row_id})


def latest_check(
    conn: Connection, code: str, snapshot: str | None = None, before: str | None = None
) -> CheckResult | None:
    """The newest stored check of ``code`` (of ``snapshot``, or of a snapshot before ``before``).

    Snapshot ids sort by ingestion time, so "newest" is by snapshot, then by check time.
    """
    q = select(quality_checks.c.id, quality_checks.c.result).where(
        quality_checks.c.resource == code
    )
    if snapshot is not None:
        q = q.where(quality_checks.c.snapshot == snapshot)
    if before is not None:
        q = q.where(quality_checks.c.snapshot < before)
    q = q.order_by(quality_checks.c.snapshot.desc(), quality_checks.c.id.desc()).limit(1)
    row = conn.execute(q).first()
    return _load(row[0], row[1]) if row else None


def history(conn: Connection, code: str, limit: int = 12) -> list[CheckResult]:
    """The last check of each of the newest ``limit`` checked snapshots, oldest first."""
    rows = conn.execute(
        select(quality_checks.c.id, quality_checks.c.snapshot, quality_checks.c.result)
        .where(quality_checks.c.resource == code)
        .order_by(quality_checks.c.snapshot.desc(), quality_checks.c.id.desc())
    ).all()
    seen: dict[str, CheckResult] = {}
    for row_id, snap, text in rows:
        if snap not in seen:
            seen[snap] = _load(row_id, text)
        if len(seen) >= limit:
            break
    return sorted(seen.values(), key=lambda r: r.snapshot)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
