"""``audit verify`` under concurrent writers, and a broken head: exit 8, never 70."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

import pytest
from reliability_testkit import population, shuyu, snapshot_dirs
from sqlalchemy import text

from governance import audit
from governance.actors import Actor
from shuyu_core.db import reset_engines
from shuyu_core.home import Home, state_engine

WRITERS = 4
VERIFIERS = 2
PER_WRITER = 30
VERIFY_ROUNDS = 8


def _writer(root: str, n: int, barrier: Any, worker: int) -> None:
    os.environ["SHUYU_HOME"] = root
    home = Home.from_env()
    barrier.wait()
    for i in range(n):
        audit.record(
            home,
            "concurrency.append",
            f"w{worker}",
            "ok",
            {"i": i},
            Actor(f"writer-{worker}", "operator"),
        )


def _verifier(root: str, rounds: int, barrier: Any, failures: Any) -> None:
    os.environ["SHUYU_HOME"] = root
    home = Home.from_env()
    barrier.wait()
    for _ in range(rounds):
        result = audit.verify(home)
        if not result.ok:
            failures.put(result.one_line())


def test_verify_beside_writers_reports_no_false_break(home: Home) -> None:
    audit.record(home, "concurrency.start", "test")
    start = audit.verify(home).head_seq  # the seeded accounts' entries and the start
    reset_engines()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS + VERIFIERS)
    failures = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(str(home.root), PER_WRITER, barrier, w))
        for w in range(WRITERS)
    ] + [
        ctx.Process(target=_verifier, args=(str(home.root), VERIFY_ROUNDS, barrier, failures))
        for _ in range(VERIFIERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert seen == []
    final = audit.verify(home)
    assert final.ok and final.head_seq == start + WRITERS * PER_WRITER


def test_verify_does_not_see_an_append_between_its_two_reads(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of the race: a writer appends right after verify read the head."""
    for i in range(3):
        audit.record(home, "t", f"o{i}")
    n = audit.verify(home).head_seq  # the seeded accounts' entries and the three
    real = audit._read_head

    def read_head_then_someone_appends(conn: Any) -> Any:
        head = real(conn)
        monkeypatch.setattr(audit, "_read_head", real)
        audit.record(home, "t", "concurrent append")  # its own connection and transaction
        return head

    monkeypatch.setattr(audit, "_read_head", read_head_then_someone_appends)
    result = audit.verify(home)
    assert result.ok, result.one_line()
    assert (result.entries, result.head_seq) == (n, n)
    assert audit.verify(home).head_seq == n + 1


def test_head_check_does_not_see_an_append_between_its_two_reads(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-flight check of every writing command reads the head and the log's end in
    one snapshot too, or a concurrent append would stop an innocent command with exit 8."""
    for i in range(3):
        audit.record(home, "t", f"o{i}")
    real = audit._read_head

    def read_head_then_someone_appends(conn: Any) -> Any:
        head = real(conn)
        monkeypatch.setattr(audit, "_read_head", real)
        audit.record(home, "t", "concurrent append")
        return head

    monkeypatch.setattr(audit, "_read_head", read_head_then_someone_appends)
    audit.head_check(home)  # no AuditChainBroken
    assert audit.verify(home).ok


def _break(home: Home, statement: str) -> None:
    engine = state_engine(home)
    with engine.begin() as conn:
        conn.execute(text(statement))


def _insert_after_head(home: Home) -> None:
    head = audit.verify(home)
    _break(
        home,
        "INSERT INTO audit_log (seq, ts, actor, role, action, object, outcome, details, "
        f"prev_hash, hash) VALUES ({head.head_seq + 1}, '2026-01-01T00:00:00.000000Z', 'x', "
        f"'operator', 'forged', 'o', 'ok', '{{}}', '{head.head_hash}', '{'0' * 64}')",
    )


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda h: _break(h, "DELETE FROM audit_head"), "head anchor row is missing"),
        (_insert_after_head, "entry 4"),
    ],
    ids=["head-row-deleted", "entry-at-head-plus-one"],
)
def test_broken_head_is_exit_8_for_verify_and_writers(home: Home, tamper: Any, named: str) -> None:
    for i in range(3):
        audit.record(home, "t", f"o{i}")
    tamper(home)
    with pytest.raises(audit.AuditChainBroken, match="head"):
        audit.record(home, "t", "refused append")

    proc = shuyu("audit", "verify")
    assert proc.returncode == 8, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "internal error" not in proc.stderr
    # A writing command stops before its first side effect: nothing lands in raw/.
    src = home.root / "x.csv"
    population().write_csv(src)
    proc = shuyu("ingest", "RKJBXX", "--from", str(src), "--no-check")
    assert proc.returncode == 8, proc.stderr
    assert "internal error" not in proc.stderr
    assert snapshot_dirs(home) == []
    # The tamper is still what verify reports; nothing was appended meanwhile.
    result = audit.verify(home)
    assert not result.ok
