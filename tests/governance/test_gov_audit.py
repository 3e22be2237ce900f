"""The audit chain: round-trip, append-only guards, tamper detection, export, retention."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from accounts_testkit import seed
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from governance import audit
from governance.actors import Actor, set_current
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home, state_engine


@pytest.fixture()
def home(bare_home: Home) -> Home:
    """These tests count entries from the genesis: a domain with no account (no entry) yet."""
    return bare_home


def _fill(home: Home, n: int = 10) -> list[str]:
    return [
        audit.record(
            home,
            f"test.step{i}",
            f"object-{i}",
            "ok" if i % 3 else "refused",
            {"i": i, "amount": i * 0.1, "day": dt.date(2025, 1, 1 + i), "名称": "营口"},
            actor=Actor(f"user{i % 2}", "operator"),
        )
        for i in range(n)
    ]


# Restore only the clock: monkeypatch.undo() would also revert the home fixture's environment.
_REAL_UTCNOW = audit._utcnow


def _tamper(home: Home, *statements: str) -> None:
    """Act as someone with database-owner rights: drop the guards, then alter rows."""
    engine = state_engine(home)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_retention"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_guard ON audit_log"))
        for s in statements:
            conn.exec_driver_sql(s)


def test_entries_round_trip_and_chain_verifies(home: Home) -> None:
    hashes = _fill(home, 5)
    rows = audit.tail(home, 10)
    assert [r["hash"] for r in rows] == hashes
    assert rows[0]["prev_hash"] == audit.GENESIS
    assert all(r["prev_hash"] == p["hash"] for p, r in itertools.pairwise(rows))
    # The stored time string is exactly what was hashed: recompute from the stored row.
    first = rows[0]
    body = {k: v for k, v in first.items() if k not in ("hash", "prev_hash")}
    assert audit.entry_hash(audit.GENESIS, body) == first["hash"]
    assert first["details"] == {"i": 0, "amount": 0.0, "day": "2025-01-01", "名称": "营口"}
    assert first["actor"] == "user0" and first["role"] == "operator"
    result = audit.verify(home)
    assert result.ok and result.entries == 5 and result.head_seq == 5
    assert result.head_hash == hashes[-1]


def test_record_uses_current_actor_and_rejects_unknown_outcome(home: Home) -> None:
    seed(home, {"test-operator": ["operator"]})
    audit.record(home, "x", "y")
    assert audit.tail(home, 1)[0]["actor"] == "test-operator"
    with pytest.raises(ValueError, match="outcome"):
        audit.record(home, "x", "y", "maybe")


def test_database_refuses_update_and_young_delete(home: Home) -> None:
    _fill(home, 3)
    engine = state_engine(home)
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET outcome = 'ok' WHERE seq = 1"))
    with pytest.raises(DatabaseError, match="younger than 5 years"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    assert audit.verify(home).ok


@pytest.mark.parametrize(
    ("statements", "seq", "kind"),
    [
        (["UPDATE audit_log SET outcome = 'ok' WHERE seq = 4"], 4, "edited"),
        (["UPDATE audit_log SET actor = 'someone-else' WHERE seq = 7"], 7, "edited"),
        (
            ["""UPDATE audit_log SET details = replace(details, '"i":2', '"i":9') WHERE seq = 3"""],
            3,
            "edited",
        ),
        (["DELETE FROM audit_log WHERE seq = 5"], 5, "deleted"),
        (["DELETE FROM audit_log WHERE seq IN (2, 3)"], 2, "deleted"),
        (
            [
                "UPDATE audit_log SET seq = -1 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 6",
                "UPDATE audit_log SET seq = 6 WHERE seq = -1",
            ],
            3,
            "relinked",
        ),
        (["DELETE FROM audit_log WHERE seq >= 8"], 8, "truncated"),
        (["DELETE FROM audit_log WHERE seq = 10"], 10, "truncated"),
    ],
    ids=[
        "edit-outcome",
        "edit-actor",
        "edit-details",
        "delete-one",
        "delete-two",
        "swap",
        "truncate-tail",
        "truncate-last",
    ],
)
def test_tampering_is_located(home: Home, statements: list[str], seq: int, kind: str) -> None:
    _fill(home, 10)
    assert audit.verify(home).ok
    _tamper(home, *statements)
    result = audit.verify(home)
    assert not result.ok
    assert (result.break_seq, result.kind) == (seq, kind)
    assert f"entry {seq}" in result.one_line() or f"{seq}.." in result.one_line()


def test_swap_of_contents_keeping_sequence_numbers_is_detected(home: Home) -> None:
    _fill(home, 8)
    cols = "ts, actor, role, action, object, outcome, details, prev_hash, hash"
    _tamper(
        home,
        "CREATE TEMP TABLE a AS SELECT * FROM audit_log WHERE seq IN (2, 5)",
        f"UPDATE audit_log SET ({cols}) = (SELECT {cols} FROM a WHERE a.seq = 7 - audit_log.seq)"
        " WHERE seq IN (2, 5)",
    )
    moved = audit.tail(home, 8)
    assert moved[1]["action"] == "test.step4" and moved[4]["action"] == "test.step1"
    result = audit.verify(home)
    assert (result.ok, result.break_seq) == (False, 2)


def test_entry_appended_outside_the_logger_is_detected(home: Home) -> None:
    hashes = _fill(home, 4)
    # A well-formed entry that links correctly, but written around record(): no head update.
    body = {
        "seq": 5,
        "ts": "2025-05-05T00:00:00.000000Z",
        "actor": "intruder",
        "role": "operator",
        "action": "publish",
        "object": "x",
        "outcome": "ok",
        "details": {},
    }
    digest = audit.entry_hash(hashes[-1], body)
    with state_engine(home).begin() as conn:
        conn.execute(
            audit.audit_log.insert().values(
                **{**body, "details": "{}"}, prev_hash=hashes[-1], hash=digest
            )
        )
    result = audit.verify(home)
    assert (result.ok, result.break_seq, result.kind) == (False, 5, "inserted")


def test_consistent_rewrite_is_caught_by_an_external_anchor(home: Home) -> None:
    hashes = _fill(home, 6)
    anchor = (6, hashes[-1])
    assert audit.verify(home, anchor).ok
    # Rewrite entry 3 and recompute every later hash and the head: the chain alone is valid.
    engine = state_engine(home)
    _tamper(home, "UPDATE audit_log SET outcome = 'error' WHERE seq = 3")
    with engine.begin() as conn:
        rows = conn.execute(select(audit.audit_log).order_by(audit.audit_log.c.seq)).all()
        prev = rows[1].hash
        for row in rows[2:]:
            digest = audit.entry_hash(prev, audit._hashed_entry(row))
            conn.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": prev, "h": digest, "s": row.seq},
            )
            prev = digest
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    assert audit.verify(home).ok
    result = audit.verify(home, anchor)
    assert (result.ok, result.break_seq, result.kind) == (False, 6, "anchor_mismatch")


def test_export_since_and_reverify(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    old = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    monkeypatch.setattr(audit, "_utcnow", lambda: old)
    _fill(home, 3)
    monkeypatch.setattr(audit, "_utcnow", _REAL_UTCNOW)
    _fill(home, 4)
    lines = list(audit.export(home, since=dt.date(2025, 1, 1)))
    assert len(lines) == 4
    parsed = [json.loads(line) for line in lines]
    assert [e["seq"] for e in parsed] == [4, 5, 6, 7]
    assert all(e["ts"] >= "2025-01-01" for e in parsed)
    assert audit.verify_lines(iter(lines)) == (True, "ok")
    parsed[1]["outcome"] = "error"
    forged = [json.dumps(e, ensure_ascii=False) for e in parsed]
    ok, where = audit.verify_lines(iter(forged))
    assert not ok and "entry 5" in where
    assert len(list(audit.export(home, until=dt.date(2025, 1, 1)))) == 3


def test_purge_refuses_young_entries_and_keeps_chain_verifiable(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_current(Actor("test-operator", "operator"))  # purge records its own entries
    now = dt.datetime.now(dt.UTC)
    ancient = now.replace(year=now.year - 7)
    monkeypatch.setattr(audit, "_utcnow", lambda: ancient)
    _fill(home, 4)
    monkeypatch.setattr(audit, "_utcnow", _REAL_UTCNOW)
    _fill(home, 3)
    cutoff = audit.retention_cutoff().date()
    with pytest.raises(PermissionDenied, match="younger than 5 years") as info:
        audit.purge(home, cutoff + dt.timedelta(days=2))
    assert info.value.audited
    last = audit.tail(home, 1)[0]
    assert (last["action"], last["outcome"]) == ("audit.purge", "refused")
    assert len(list(audit.entries(home))) == 8

    removed = audit.purge(home, now.replace(year=now.year - 6).date())
    assert removed == 4
    remaining = list(audit.entries(home))
    assert remaining[0]["seq"] == 5 and remaining[-1]["action"] == "audit.purge"
    result = audit.verify(home)
    assert result.ok and result.base_seq == 4 and result.entries == 5


def test_purge_refused_when_chain_is_broken(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    set_current(Actor("test-operator", "operator"))  # purge records its own entries
    now = dt.datetime.now(dt.UTC)
    monkeypatch.setattr(audit, "_utcnow", lambda: now.replace(year=now.year - 7))
    _fill(home, 4)
    monkeypatch.setattr(audit, "_utcnow", _REAL_UTCNOW)
    _tamper(home, "UPDATE audit_log SET object = 'nothing to see' WHERE seq = 2")
    with pytest.raises(PermissionDenied, match="chain is broken"):
        audit.purge(home, now.replace(year=now.year - 6).date())
    assert len(list(audit.entries(home, until=dt.date(now.year - 6, 1, 1)))) == 4
