"""The quality area's entry points: role checks, state, tickets and audit in one place.

The CLI and the demo call these; other areas read ``latest_result`` (no role check: it is
a library call inside the domain, e.g. the pre-release assessment's input completeness).
Permissions come from ``governance.roles`` (``quality.check`` operators; ``quality.report.read``
and ``ticket.read`` operators, reviewers and the owning source unit; ``ticket.ack`` and
``ticket.answer`` the owning source unit only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from catalogs.catalog import Catalog
from governance.actors import current_actor
from governance.audit import record
from governance.roles import require
from quality import engine, evaluation, report, store, tickets
from quality.models import CheckResult
from quality.tickets import Change, Ticket
from shuyu_core import atomic, snapshots
from shuyu_core.errors import NotFoundError, ShuyuError
from shuyu_core.home import Home, state_engine


class QualitySummary(BaseModel):
    """Dimension scores of one stored check, with the evidence behind each ratio."""

    resource: str
    snapshot: str
    checked_at: dt.datetime
    rows: int
    # dimension -> score 0..1 (only dimensions that were measured)
    dimensions: dict[str, float]
    # dimension -> (passed, total)
    ratios: dict[str, tuple[int, int]]


def _summary(res: CheckResult) -> QualitySummary:
    return QualitySummary(
        resource=res.resource,
        snapshot=res.snapshot,
        checked_at=res.checked_at,
        rows=res.rows,
        dimensions=res.dimensions(),
        ratios={d.value: (r.passed, r.total) for d, r in res.ratios().items()},
    )


def latest_result(home: Home, code: str, snapshot: str | None = None) -> QualitySummary | None:
    """Scores of the newest stored check of ``code`` (of ``snapshot`` if given); None if the
    resource (or that snapshot) was never checked."""
    with state_engine(home).connect() as conn:
        res = store.latest_check(conn, code, snapshot=snapshot)
    return _summary(res) if res else None


def latest_check(home: Home, code: str, snapshot: str | None = None) -> CheckResult | None:
    """The full stored result (rules, masked samples) of the newest check of ``code``."""
    with state_engine(home).connect() as conn:
        return store.latest_check(conn, code, snapshot=snapshot)


def run_check(
    home: Home,
    code: str,
    snapshot_id: str | None = None,
    *,
    as_of: dt.date | None = None,
    catalog: Catalog | None = None,
    open_tickets: bool = True,
    today: dt.date | None = None,
) -> tuple[CheckResult, list[Change]]:
    """Check one snapshot, store the result, then open/verify/reopen tickets. Audited."""
    cat = catalog or Catalog.load()
    resource = cat.get(code)
    require(home, "quality.check", f"resource/{code}", resource.source_unit.code)
    try:
        result = engine.check_snapshot(home, resource, snapshot_id, as_of=as_of)
    except ShuyuError as exc:
        record(home, "quality.check", f"resource/{code}", "error", {"error": exc.one_line()})
        exc.audited = True
        raise
    who = current_actor()
    with state_engine(home).begin() as conn:
        check_id = store.save_check(conn, result, str(who))
    result = result.model_copy(update={"check_id": check_id})
    record(
        home,
        "quality.check",
        f"{code}/{result.snapshot}",
        "ok",
        {
            "check_id": check_id,
            "rows": result.rows,
            "dimensions": result.dimensions(),
            "failing_rules": [r.rule for r in result.rules if r.failed],
            "seconds": round(result.seconds, 3),
        },
    )
    changes = tickets.apply_check(home, resource, result, today=today) if open_tickets else []
    return result, changes


def pending(home: Home, catalog: Catalog | None = None) -> list[tuple[str, str]]:
    """(resource, snapshot) for every resource whose latest snapshot was never checked."""
    cat = catalog or Catalog.load()
    out: list[tuple[str, str]] = []
    with state_engine(home).connect() as conn:
        for res in cat:
            try:
                sid = snapshots.latest(home, res.code).snapshot_id
            except NotFoundError:
                continue
            if store.latest_check(conn, res.code, snapshot=sid) is None:
                out.append((res.code, sid))
    return out


def check_pending(
    home: Home,
    *,
    catalog: Catalog | None = None,
    as_of: dt.date | None = None,
    today: dt.date | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[CheckResult, list[Change]]]:
    """Check each resource whose latest snapshot is new (never checked), in catalog order.

    This is how a new snapshot verifies or reopens tickets on its own: run it after every
    ingestion (``shuyu quality sweep``, or the ``shuyu-quality-sweep`` Prefect flow on a
    schedule). Idempotent: a second run finds nothing pending and changes nothing.
    """
    cat = catalog or Catalog.load()
    require(home, "quality.check", "resources/pending")
    done = []
    for code, sid in pending(home, cat):
        if progress is not None:
            progress(f"{code} snapshot {sid}")
        done.append(run_check(home, code, sid, as_of=as_of, catalog=cat, today=today))
    return done


def write_unit_report(
    home: Home, unit: str, catalog: Catalog | None = None, today: dt.date | None = None
) -> tuple[Path, Path, dict[str, Any]]:
    """Build and write ``work/quality/<unit>/report.{html,json}`` for an allowed actor."""
    cat = catalog or Catalog.load()
    report.unit_resources(cat, unit)  # unknown unit: NotFoundError before the role check
    require(home, "quality.report.read", f"quality-report/{unit}", unit)
    tickets.flag_overdue(home, today)
    doc = report.build(home, unit, cat, today)
    html_path, json_path = report.write(home, doc)
    record(
        home,
        "quality.report",
        f"quality-report/{unit}",
        "ok",
        {"html": str(html_path), "json": str(json_path), "resources": doc["summary"]["checked"]},
    )
    return html_path, json_path, doc


def scope_unit(unit: str | None) -> str | None:
    """``unit``, or for a source-unit actor who named none, its own unit."""
    who = current_actor()
    if who.kind == "source_unit" and unit is None:
        return who.scope
    return unit


def list_tickets(
    home: Home,
    unit: str | None = None,
    states: tuple[str, ...] | None = None,
    today: dt.date | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[Ticket]:
    """Tickets the actor may see: a source unit only its own (``unit`` defaults to it)."""
    scoped = scope_unit(unit)
    require(home, "ticket.read", f"tickets/{scoped or 'all'}", scoped)
    tickets.flag_overdue(home, today)
    return tickets.list_tickets(home, unit=scoped, states=states, limit=limit, offset=offset)


def show_ticket(home: Home, ticket_id: int) -> tuple[Ticket, list[dict[str, Any]]]:
    t = tickets.get(home, ticket_id)
    require(home, "ticket.read", f"ticket/{ticket_id}", t.source_unit)
    return t, tickets.events(home, ticket_id)


def acknowledge(home: Home, ticket_id: int, note: str) -> Ticket:
    t = tickets.get(home, ticket_id)
    require(home, "ticket.ack", f"ticket/{ticket_id}", t.source_unit)
    return tickets.transition(home, ticket_id, tickets.ACKNOWLEDGED, note)


def answer(home: Home, ticket_id: int, note: str) -> Ticket:
    t = tickets.get(home, ticket_id)
    require(home, "ticket.answer", f"ticket/{ticket_id}", t.source_unit)
    return tickets.transition(home, ticket_id, tickets.ANSWERED, note)


def evaluate_sources(home: Home, catalog: Catalog | None = None) -> list[dict[str, Any]]:
    """The data-supply evaluation; a source unit gets only its own row."""
    scoped = scope_unit(None)
    require(home, "quality.report.read", f"sources/{scoped or 'all'}", scoped)
    rows = evaluation.evaluate(home, catalog)
    if scoped is not None:
        rows = [r for r in rows if r["unit"] == scoped]
    record(home, "sources.evaluate", f"sources/{scoped or 'all'}", "ok", {"units": len(rows)})
    return rows


def export_evaluation(
    home: Home, catalog: Catalog | None = None
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write the evaluation to ``work/quality/evaluation/sources.{csv,json}`` (atomically)."""
    rows = evaluate_sources(home, catalog)
    out = evaluation.export_dir(home)
    csv_path, json_path = out / "sources.csv", out / "sources.json"
    atomic.write_text(csv_path, evaluation.to_csv(rows))
    atomic.write_text(json_path, evaluation.to_json(rows))
    return csv_path, json_path, rows
