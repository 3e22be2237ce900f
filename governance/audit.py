"""Append-only, hash-chained audit log (操作日志) in the state database, kept five years.

Each entry's hash is SM3 over the previous entry's hash and the entry's canonical JSON
(sequence number, time, actor, role, action, object, outcome, details), so an edit, deletion,
insertion or reordering breaks the chain at a findable place. The time is stored as the exact
ISO string that was hashed, so it round-trips byte for byte.

A chain alone cannot show that its *tail* was cut off: the shortened chain is still valid.
So every append also updates a one-row anchor table (``audit_head``: last sequence number
and hash) in the same transaction; ``verify`` compares the chain's end with it. Someone able
to rewrite both tables consistently could still forge a shorter history, which is why
``shuyu audit verify`` prints the head (sequence and hash) for an operator to note outside
the domain and pass back later with ``--anchor SEQ:HASH``.

Database triggers (SQLite and PostgreSQL) refuse any UPDATE of an entry and any DELETE of an
entry younger than five years, so ordinary code paths cannot alter the log at all; the chain
is what catches someone who drops the triggers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine

from governance.actors import Actor, current_actor
from shuyu_core.db import METADATA
from shuyu_core.errors import PermissionDenied, ShuyuError
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine

GENESIS = "0" * 64
OUTCOMES = ("ok", "refused", "error")
RETENTION_YEARS = 5
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_SeqType = BigInteger().with_variant(Integer, "sqlite")

audit_log = Table(
    "audit_log",
    METADATA,
    Column("seq", _SeqType, primary_key=True, autoincrement=False),
    # Fixed-width UTC ISO string (TS_FORMAT): hashed as stored, sortable as text.
    Column("ts", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("object", String(500), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_ts", "ts"),
    # Gates look up the evidence of one object (a release's build, an account's last change)
    # and a recorded entry by its hash without walking the chain; evidence other tables
    # anchor here (the budget ledger) by action.
    Index("ix_audit_log_object", "object"),
    Index("ix_audit_log_hash", "hash"),
    Index("ix_audit_log_action", "action"),
)

# One row (id = 1): the last appended entry, and the purge base (entries up to base_seq were
# purged after their five years; base_hash is the hash the first remaining entry links to).
audit_head = Table(
    "audit_head",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", _SeqType, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("base_seq", _SeqType, nullable=False),
    Column("base_hash", String(64), nullable=False),
)

_SQLITE_GUARDS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be changed'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_log_retention BEFORE DELETE ON audit_log
    WHEN OLD.ts > strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', 'now', '-{RETENTION_YEARS} years')
    BEGIN SELECT RAISE(ABORT,
        'audit_log retention: entries younger than {RETENTION_YEARS} years cannot be deleted');
    END""",
]
_PG_GUARDS = [
    f"""CREATE OR REPLACE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit_log is append-only: entries cannot be changed';
      ELSIF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'audit_log cannot be truncated: purge old entries instead';
      END IF;
      IF OLD.ts > to_char((now() AT TIME ZONE 'UTC') - interval '{RETENTION_YEARS} years',
                          'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') THEN
        RAISE EXCEPTION
          'audit_log retention: entries younger than {RETENTION_YEARS} years cannot be deleted';
      END IF;
      RETURN OLD;
    END $$""",
    """CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard()""",
    # TRUNCATE skips row triggers, so it gets a statement trigger of its own.
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard()""",
]
for _stmt in _SQLITE_GUARDS:
    event.listen(audit_log, "after_create", DDL(_stmt).execute_if(dialect="sqlite"))
for _stmt in _PG_GUARDS:
    event.listen(audit_log, "after_create", DDL(_stmt).execute_if(dialect="postgresql"))


class AuditChainBroken(ShuyuError):
    """``verify`` found a break in the audit chain."""

    exit_code = 8


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_ts(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime(TS_FORMAT)


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return sm3_hex(prev_hash.encode() + canonical(entry))


def _hashed_entry(row: Any) -> dict[str, Any]:
    """The hashed content of a stored row (everything but the two hash columns)."""
    return {
        "seq": int(row.seq),
        "ts": row.ts,
        "actor": row.actor,
        "role": row.role,
        "action": row.action,
        "object": row.object,
        "outcome": row.outcome,
        "details": json.loads(row.details),
    }


def _lock(conn: Connection, engine: Engine) -> None:
    """Serialize writers: read the head and append under one write lock."""
    if engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(text("LOCK TABLE audit_head IN EXCLUSIVE MODE"))


def _read_head(conn: Connection) -> tuple[int, str, int, str] | None:
    row = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
    if row is None:
        return None
    return int(row.seq), row.hash, int(row.base_seq), row.base_hash


def _head_problem(conn: Connection, head: tuple[int, str, int, str] | None) -> str | None:
    """Why the head anchor and the log's last entry disagree, or None when they agree.

    An append links to the head; if the head row was deleted, or an entry was inserted after
    it, appending would either fork the chain or collide with the foreign entry. So ``record``
    refuses (exit 8) instead of failing on a database constraint.
    """
    top = conn.execute(select(func.max(audit_log.c.seq))).scalar()
    if head is None:
        if top is None:
            return None
        return f"the head anchor row is missing while the log holds entries up to {int(top)}"
    head_seq, _, base_seq, _ = head
    last = int(top) if top is not None else base_seq
    if last == head_seq:
        return None
    if last > head_seq:
        return (
            f"entry {head_seq + 1} follows the head anchor ({head_seq}): it was appended "
            "outside the logger"
        )
    return f"the head anchor records entry {head_seq} but the log ends at entry {last}"


def head_check(home: Home) -> None:
    """Raise ``AuditChainBroken`` (exit 8) when no entry could be appended right now.

    Commands that change files call this before their first side effect (see
    ``pipelines/recovery.py``), so a broken head stops them before they do anything rather
    than after their work is visible.
    """
    engine = state_engine(home)
    # One snapshot: a writer appending between the two reads must not look like a break.
    with _snapshot_read(engine) as conn:
        problem = _head_problem(conn, _read_head(conn))
    if problem is not None:
        raise _head_broken(problem)


def _head_broken(problem: str) -> AuditChainBroken:
    exc = AuditChainBroken(
        f"audit chain head broken: {problem}; no entry can be appended",
        hint="run 'shuyu audit verify', export the log and investigate before anything else",
    )
    # The log cannot take the entry that would record this error.
    exc.audited = True
    return exc


def record(
    home: Home,
    action: str,
    obj: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> str:
    """Append one entry and return its hash. ``outcome`` is ok, refused or error."""
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}, not {outcome!r}")
    # Resolve the actor before taking the write lock: resolving may itself audit a refusal.
    who = actor or current_actor()
    engine = state_engine(home)
    with engine.connect() as conn:
        _lock(conn, engine)
        digest = append(conn, action, obj, outcome, details, who)
        conn.commit()
    return digest


def append(
    conn: Connection,
    action: str,
    obj: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> str:
    """Append one entry inside the caller's open transaction and return its hash.

    For evidence that must change together with another table (a ledger row and its digest):
    the caller commits both or neither. On SQLite the caller's ``BEGIN IMMEDIATE`` already
    holds the database's write lock; on PostgreSQL the head is locked here, so a caller that
    locks other tables must lock them first (always in that order).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}, not {outcome!r}")
    if conn.dialect.name != "sqlite":
        conn.execute(text("LOCK TABLE audit_head IN EXCLUSIVE MODE"))
    who = actor or current_actor()
    if who.via:
        # A service account acting for a person: both are recorded (trust model).
        details = {**(details or {}), "via": who.via}
    # Anything not JSON-native (dates, paths) becomes its string form *before* hashing, so
    # what is hashed is exactly what is stored and read back.
    details_text = json.dumps(
        details or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
    )
    head = _read_head(conn)
    problem = _head_problem(conn, head)
    if problem is not None:
        # The caller's transaction is rolled back by its context: nothing is appended.
        raise _head_broken(problem)
    if head is None:
        seq, prev = 1, GENESIS
    else:
        seq, prev = head[0] + 1, head[1]
    values = {
        "seq": seq,
        "ts": format_ts(_utcnow()),
        "actor": who.name[:200],
        "role": who.role,
        "action": action[:100],
        "object": obj[:500],
        "outcome": outcome,
        "details": details_text,
    }
    entry = {**values, "details": json.loads(details_text)}
    digest = entry_hash(prev, entry)
    conn.execute(audit_log.insert().values(**values, prev_hash=prev, hash=digest))
    if head is None:
        conn.execute(
            audit_head.insert().values(id=1, seq=seq, hash=digest, base_seq=0, base_hash=GENESIS)
        )
    else:
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return digest


def stored_hash_ok(row: Any) -> bool:
    """A stored entry (a row of ``audit_log``) still hashes to its recorded hash."""
    try:
        return bool(entry_hash(row.prev_hash, _hashed_entry(row)) == row.hash)
    except ValueError:  # details no longer JSON
        return False


@contextlib.contextmanager
def _snapshot_read(engine: Engine) -> Iterator[Connection]:
    """One consistent read of the head row and the entries.

    Without it, a writer appending between the two reads makes a sound chain look as if
    entries were "appended outside the logger". SQLite (WAL): a deferred ``BEGIN`` takes its
    read snapshot at the first SELECT and keeps it until the end; PostgreSQL: REPEATABLE
    READ gives every statement of the transaction the snapshot of the first.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()
    else:
        with (
            engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
            conn.begin(),
        ):
            yield conn


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    base_seq: int = 0
    break_seq: int | None = None
    kind: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def one_line(self) -> str:
        if self.ok:
            return (
                f"audit chain intact: {self.entries} entries (seq {self.base_seq + 1}.."
                f"{self.head_seq}), head {self.head_hash}"
            )
        return f"audit chain broken at entry {self.break_seq} ({self.kind}): {self.problem}"


def verify(home: Home, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Walk the chain from the purge base to the head anchor and report the first break.

    ``anchor`` is a (seq, hash) noted outside the domain earlier; the entry at ``seq`` must
    still have that hash.
    """
    engine = state_engine(home)
    with _snapshot_read(engine) as conn:
        head = _read_head(conn)
        head_seq, head_hash, base_seq, base_hash = head or (0, GENESIS, 0, GENESIS)
        expected, prev, count = base_seq + 1, base_hash, 0

        def broken(seq: int, kind: str, problem: str) -> VerifyResult:
            return VerifyResult(False, count, head_seq, head_hash, base_seq, seq, kind, problem)

        rows = conn.execution_options(yield_per=5000).execute(
            select(audit_log).order_by(audit_log.c.seq)
        )
        for row in rows:
            seq = int(row.seq)
            if seq < expected:
                return broken(seq, "inserted", f"entry {seq} lies before the purge base {base_seq}")
            if seq > expected:
                return broken(
                    expected,
                    "deleted",
                    f"entries {expected}..{seq - 1} are missing (deleted)"
                    if seq - 1 > expected
                    else f"entry {expected} is missing (deleted)",
                )
            if head is not None and seq > head_seq:
                return broken(
                    seq,
                    "inserted",
                    f"entries from {seq} on were appended outside the logger (the head "
                    f"anchor ends at {head_seq})",
                )
            if row.prev_hash != prev:
                return broken(
                    seq,
                    "relinked",
                    f"entry {seq} does not link to entry {seq - 1}: one of them was "
                    "rewritten, inserted or moved",
                )
            try:
                computed = entry_hash(row.prev_hash, _hashed_entry(row))
            except ValueError:
                computed = ""
            if computed != row.hash:
                return broken(
                    seq,
                    "edited",
                    f"entry {seq} ({row.action} {row.object}) does not match its hash: it "
                    "was edited, or moved here from another position",
                )
            if anchor is not None and seq == anchor[0] and row.hash != anchor[1]:
                return broken(
                    seq,
                    "anchor_mismatch",
                    f"entry {seq} has hash {row.hash}, not the noted anchor {anchor[1]}: "
                    "the chain was rewritten up to here",
                )
            prev, expected, count = row.hash, seq + 1, count + 1
        last = expected - 1
        if head is None and count:
            return broken(1, "no_anchor", "entries exist but the head anchor is missing")
        if last < head_seq:
            return broken(
                last + 1,
                "truncated",
                f"the chain ends at entry {last} but the head anchor records {head_seq}: "
                f"entries {last + 1}..{head_seq} were removed from the tail",
            )
        if head is not None and prev != head_hash:
            return broken(
                last, "anchor_mismatch", f"entry {last}'s hash differs from the head anchor"
            )
        if anchor is not None and not (base_seq < anchor[0] <= last):
            return broken(
                anchor[0],
                "anchor_mismatch",
                f"the noted anchor entry {anchor[0]} is not in the log",
            )
        return VerifyResult(True, count, head_seq, head_hash, base_seq)


def _row_dict(row: Any) -> dict[str, Any]:
    return {**_hashed_entry(row), "prev_hash": row.prev_hash, "hash": row.hash}


def _ts_bound(value: dt.date | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    else:
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return format_ts(moment)


def entries(
    home: Home,
    since: dt.date | dt.datetime | None = None,
    until: dt.date | dt.datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Entries in chain order, from ``since`` (inclusive) to ``until`` (exclusive), UTC."""
    stmt = select(audit_log).order_by(audit_log.c.seq)
    if since is not None:
        stmt = stmt.where(audit_log.c.ts >= _ts_bound(since))
    if until is not None:
        stmt = stmt.where(audit_log.c.ts < _ts_bound(until))
    engine = state_engine(home)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=5000).execute(stmt):
            yield _row_dict(row)


def export(
    home: Home,
    since: dt.date | dt.datetime | None = None,
    until: dt.date | dt.datetime | None = None,
) -> Iterator[str]:
    """JSON lines, one entry each, with its sequence number and both hashes so that the
    export can be re-verified elsewhere (``verify_lines``)."""
    for e in entries(home, since, until):
        yield json.dumps(e, ensure_ascii=False, sort_keys=True)


def verify_lines(lines: Iterator[str]) -> tuple[bool, str]:
    """Check an exported range on its own: every entry hashes right and links to the last."""
    prev: str | None = None
    last_seq: int | None = None
    for n, line in enumerate(lines, 1):
        e = json.loads(line)
        if last_seq is not None and e["seq"] != last_seq + 1:
            return False, f"line {n}: entry {e['seq']} follows {last_seq}"
        if prev is not None and e["prev_hash"] != prev:
            return False, f"line {n}: entry {e['seq']} does not link to the line before"
        body = {k: v for k, v in e.items() if k not in ("hash", "prev_hash")}
        if entry_hash(e["prev_hash"], body) != e["hash"]:
            return False, f"line {n}: entry {e['seq']} does not match its hash"
        prev, last_seq = e["hash"], e["seq"]
    return True, "ok"


def entry_by_hash(home: Home, digest: str) -> dict[str, Any] | None:
    """The entry whose hash is ``digest``, or None."""
    engine = state_engine(home)
    with engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.hash == digest)).first()
    return _row_dict(row) if row is not None else None


def entries_for(
    home: Home, obj: str, actions: tuple[str, ...] | None = None, outcome: str | None = None
) -> list[dict[str, Any]]:
    """Entries about ``obj`` (optionally of these actions and outcome), oldest first."""
    stmt = select(audit_log).where(audit_log.c.object == obj).order_by(audit_log.c.seq)
    if actions:
        stmt = stmt.where(audit_log.c.action.in_(actions))
    if outcome:
        stmt = stmt.where(audit_log.c.outcome == outcome)
    engine = state_engine(home)
    with engine.connect() as conn:
        return [_row_dict(r) for r in conn.execute(stmt)]


def tail(home: Home, n: int = 20) -> list[dict[str, Any]]:
    engine = state_engine(home)
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(n)).all()
    return [_row_dict(r) for r in reversed(rows)]


def retention_cutoff(now: dt.datetime | None = None) -> dt.datetime:
    """Entries at or after this moment are younger than five years and must be kept."""
    t = (now or _utcnow()).astimezone(dt.UTC)
    try:
        return t.replace(year=t.year - RETENTION_YEARS)
    except ValueError:  # 29 February
        return t.replace(year=t.year - RETENTION_YEARS, day=28)


def purge(home: Home, before: dt.date | dt.datetime) -> int:
    """Delete the oldest entries, all older than ``before``; refuse anything younger than
    five years. The chain stays verifiable: the purge base keeps the last purged hash."""
    cutoff = retention_cutoff()
    bound = _ts_bound(before)
    if bound > format_ts(cutoff):
        exc = PermissionDenied(
            f"audit purge before {before} refused: entries younger than {RETENTION_YEARS} "
            f"years (after {cutoff.date()}) must be kept",
            hint=f"choose a date on or before {cutoff.date()}",
        )
        record(home, "audit.purge", f"before {before}", "refused", {"reason": exc.message})
        exc.audited = True
        raise exc
    check = verify(home)
    if not check.ok:
        exc = PermissionDenied(
            f"audit purge refused: the chain is broken ({check.problem})",
            hint="investigate with 'shuyu audit verify' and keep the evidence",
        )
        record(home, "audit.purge", f"before {before}", "refused", {"reason": exc.message})
        exc.audited = True
        raise exc
    engine = state_engine(home)
    with engine.connect() as conn:
        _lock(conn, engine)
        head = _read_head(conn)
        if head is None:
            conn.rollback()
            return 0
        first_young = conn.execute(
            select(audit_log.c.seq).where(audit_log.c.ts >= bound).order_by(audit_log.c.seq)
        ).first()
        upto = int(first_young[0]) - 1 if first_young else head[0]
        if upto <= head[2]:
            conn.rollback()
            removed = 0
        else:
            upto_hash = conn.execute(
                select(audit_log.c.hash).where(audit_log.c.seq == upto)
            ).scalar_one()
            result = conn.execute(audit_log.delete().where(audit_log.c.seq <= upto))
            conn.execute(
                audit_head.update()
                .where(audit_head.c.id == 1)
                .values(base_seq=upto, base_hash=upto_hash)
            )
            conn.commit()
            removed = int(result.rowcount or 0)
    record(home, "audit.purge", f"before {before}", "ok", {"removed": removed})
    return removed
