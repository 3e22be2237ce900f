"""Correction tickets: due dates in working days, automatic verify/reopen, overdue, roles."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from accounts_testkit import act_as
from sqlalchemy import select

from catalogs.catalog import Catalog
from governance.audit import audit_log
from quality import api, tickets
from quality.testing import clean_population, write_snapshot
from quality.workdays import add_working_days
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home, state_engine

# The State Council notice for 2025 (国办发明电〔2024〕12号): National Day and Mid-Autumn
# Festival off 1-8 October; Sunday 28 September and Saturday 11 October are working days.
_OFF_2025 = {dt.date(2025, 10, d) for d in range(1, 9)}
_WORK_WEEKEND_2025 = {dt.date(2025, 9, 28), dt.date(2025, 10, 11)}


def _by_hand(start: dt.date, n: int) -> dt.date:
    day, counted = start, 0
    while counted < n:
        day += dt.timedelta(days=1)
        work = (day.weekday() < 5 and day not in _OFF_2025) or day in _WORK_WEEKEND_2025
        counted += work
    return day


def test_due_date_skips_national_day_week_and_counts_the_working_saturday() -> None:
    due, official = add_working_days(dt.date(2025, 9, 29), 10)
    assert official
    # 30 Sep (1), 9 Oct (2), 10 Oct (3), Sat 11 Oct (4), 13-17 Oct (5-9), Mon 20 Oct (10)
    assert due == dt.date(2025, 10, 20) == _by_hand(dt.date(2025, 9, 29), 10)
    # Opened the Friday before: the adjusted working Sunday 28 Sep counts.
    assert add_working_days(dt.date(2025, 9, 26), 10)[0] == dt.date(2025, 10, 16)
    assert _by_hand(dt.date(2025, 9, 26), 10) == dt.date(2025, 10, 16)
    # Without the holiday calendar it would have been 13 October: the calendar matters.
    assert due != dt.date(2025, 10, 13)


def test_due_date_beyond_the_calendar_falls_back_to_weekdays_and_says_so() -> None:
    due, official = add_working_days(dt.date(2099, 1, 2), 10)  # a Friday
    assert not official
    assert due == dt.date(2099, 1, 16)


def _bad_people(n_bad_names: int, seed: int = 1) -> pl.DataFrame:
    f = clean_population(60, seed=seed)
    names = f["姓名"].to_list()
    for i in range(n_bad_names):
        names[i] = None
    return f.with_columns(pl.Series("姓名", names, dtype=pl.String))


def _snapshot(home: Home, frame: pl.DataFrame, days_ago: int) -> str:
    res = Catalog.load().get("RKJBXX")
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    return write_snapshot(home, res, frame, ingested_at=when).snapshot_id


def _as(role: str) -> None:
    act_as(Home.from_env(), "t-" + role.replace(":", "-"), role)


def _audit(home: Home, action: str, outcome: str) -> list[dict[str, object]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log).where(audit_log.c.action == action, audit_log.c.outcome == outcome)
        ).all()
    return [dict(r._mapping) for r in rows]


@pytest.fixture(autouse=True)
def _operator(home: Home) -> None:
    _as("operator")


def test_lifecycle_open_answer_reopen_verify_regress(home: Home) -> None:
    opened = dt.date(2025, 9, 29)
    s1 = _snapshot(home, _bad_people(3), days_ago=3)
    _, changes = api.run_check(home, "RKJBXX", s1, today=opened)
    assert [(c.rule, c.to_state) for c in changes] == [("required:姓名", "open")]
    t = tickets.list_tickets(home)[0]
    assert (t.state, t.source_unit, t.failed, t.total) == ("open", "SU-GA", 3, 60)
    assert t.opened_on == opened and t.due_on == dt.date(2025, 10, 20) and t.due_official

    # Re-checking the same snapshot changes nothing.
    assert api.run_check(home, "RKJBXX", s1, today=opened)[1] == []

    _as("source_unit:SU-GA")
    assert api.acknowledge(home, t.id, "收到").state == "acknowledged"
    assert api.answer(home, t.id, "已更正").state == "answered"

    # A newer snapshot still failing: the answer did not fix it → reopened, new due date.
    _as("operator")
    s2 = _snapshot(home, _bad_people(2, seed=2), days_ago=2)
    later = dt.date(2025, 10, 21)
    _, changes = api.run_check(home, "RKJBXX", s2, today=later)
    assert [(c.from_state, c.to_state) for c in changes] == [("answered", "reopened")]
    t = tickets.get(home, t.id)
    assert t.state == "reopened" and t.reopen_count == 1 and t.failed == 2
    assert t.due_on == add_working_days(later, 10)[0]

    # A clean snapshot verifies it, whatever state it is in.
    s3 = _snapshot(home, _bad_people(0, seed=3), days_ago=1)
    _, changes = api.run_check(home, "RKJBXX", s3, today=later)
    assert [(c.from_state, c.to_state) for c in changes] == [("reopened", "verified")]
    assert tickets.get(home, t.id).verified_at is not None

    # The problem comes back: the verified ticket reopens (one ticket per resource and rule).
    s4 = _snapshot(home, _bad_people(1, seed=4), days_ago=0)
    _, changes = api.run_check(home, "RKJBXX", s4, today=later)
    assert [(c.from_state, c.to_state) for c in changes] == [("verified", "reopened")]
    assert len(tickets.list_tickets(home)) == 1
    states = [e["to_state"] for e in tickets.events(home, t.id)]
    assert states == [
        "open",
        "acknowledged",
        "answered",
        "reopened",
        "verified",
        "reopened",
    ]
    assert len(_audit(home, "ticket.reopen", "ok")) == 2
    assert len(_audit(home, "ticket.verify", "ok")) == 1
    assert len(_audit(home, "quality.check", "ok")) == 5

    # An older snapshot re-checked later cannot move the ticket backwards.
    assert api.run_check(home, "RKJBXX", s3, today=later)[1] == []


def test_overdue_is_flagged_once_and_answered_tickets_are_not_overdue(home: Home) -> None:
    s1 = _snapshot(home, _bad_people(2), days_ago=1)
    api.run_check(home, "RKJBXX", s1, today=dt.date(2025, 9, 29))
    t = tickets.list_tickets(home)[0]
    assert not t.overdue(dt.date(2025, 10, 20))  # the due day itself is still in time
    assert t.overdue(dt.date(2025, 10, 21))
    listed = api.list_tickets(home, today=dt.date(2025, 10, 21))
    api.list_tickets(home, today=dt.date(2025, 10, 22))
    assert listed[0].overdue_flagged_at is not None
    assert len(_audit(home, "ticket.overdue", "ok")) == 1
    _as("source_unit:SU-GA")
    api.answer(home, t.id, "已核实")
    assert not tickets.get(home, t.id).overdue(dt.date(2025, 12, 1))


def test_thresholds_file_overrides_defaults(home: Home) -> None:
    s1 = _snapshot(home, _bad_people(3), days_ago=1)
    (home.root / "quality_thresholds.yaml").write_text(
        "rules:\n  RKJBXX/required:姓名: 0.1\n", encoding="utf-8"
    )
    # 3/60 = 5% missing names is under the 10% threshold: no ticket.
    assert api.run_check(home, "RKJBXX", s1)[1] == []
    (home.root / "quality_thresholds.yaml").write_text(
        "dimensions:\n  completeness: 0.01\n", encoding="utf-8"
    )
    s2 = _snapshot(home, _bad_people(3, seed=5), days_ago=0)
    assert [c.rule for c in api.run_check(home, "RKJBXX", s2)[1]] == ["required:姓名"]
    (home.root / "quality_thresholds.yaml").write_text("kinds: {max_age: 2}\n", encoding="utf-8")
    with pytest.raises(ValidationError):
        tickets.Thresholds.load(home)


def test_source_units_act_only_on_their_own_tickets(home: Home) -> None:
    s1 = _snapshot(home, _bad_people(2), days_ago=1)
    api.run_check(home, "RKJBXX", s1)
    tid = tickets.list_tickets(home)[0].id

    _as("source_unit:SU-RS")
    assert api.list_tickets(home) == []  # scoped to its own unit
    with pytest.raises(PermissionDenied):
        api.list_tickets(home, unit="SU-GA")
    with pytest.raises(PermissionDenied):
        api.acknowledge(home, tid, "不是我们的")
    with pytest.raises(PermissionDenied):
        api.show_ticket(home, tid)
    refused = _audit(home, "ticket.ack", "refused")
    assert len(refused) == 1 and refused[0]["role"] == "source_unit:SU-RS"
    assert tickets.get(home, tid).state == "open"

    # Operators run checks but do not answer for the source unit.
    _as("operator")
    with pytest.raises(PermissionDenied):
        api.answer(home, tid, "代答")
    # A source unit may not run checks.
    _as("source_unit:SU-GA")
    with pytest.raises(PermissionDenied):
        api.run_check(home, "RKJBXX")
    assert [t.id for t in api.list_tickets(home)] == [tid]
    with pytest.raises(ValidationError):
        api.answer(home, tid, "  ")
    api.answer(home, tid, "已更正")
    with pytest.raises(ValidationError):
        api.acknowledge(home, tid, "too late to acknowledge an answered ticket")


def test_sweep_checks_only_new_snapshots_and_verifies_on_its_own(home: Home) -> None:
    assert api.check_pending(home) == []  # nothing ingested yet
    s1 = _snapshot(home, _bad_people(2), days_ago=2)
    done = api.check_pending(home, today=dt.date(2025, 9, 29))
    assert [(r.resource, r.snapshot) for r, _ in done] == [("RKJBXX", s1)]
    assert [c.to_state for c in done[0][1]] == ["open"]
    assert api.pending(home) == [] and api.check_pending(home) == []  # idempotent
    tid = tickets.list_tickets(home)[0].id

    _as("source_unit:SU-GA")
    with pytest.raises(PermissionDenied):
        api.check_pending(home)  # source units do not run checks, even with nothing pending
    api.answer(home, tid, "已补录姓名")

    # The corrected delivery arrives; the sweep alone verifies the ticket.
    _as("operator")
    s2 = _snapshot(home, _bad_people(0, seed=9), days_ago=1)
    assert api.pending(home) == [("RKJBXX", s2)]
    done = api.check_pending(home)
    assert [(c.ticket, c.from_state, c.to_state) for c in done[0][1]] == [
        (tid, "answered", "verified")
    ]
    assert tickets.get(home, tid).state == "verified"
