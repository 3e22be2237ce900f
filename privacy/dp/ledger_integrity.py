"""Tamper evidence for the budget ledger: every row change is anchored in the audit chain.

Each write to ``dp_ledger`` (a charge, a state change, a void, a restoration) appends, in
the *same transaction*, one audit entry ``budget.ledger`` whose object is the entry id and
whose details carry the row's canonical fields and their SM3 (``row`` and ``sm3``). The
audit chain is hash-linked and guarded by triggers, so the last anchor of an entry is what
the row must still be. ``check`` compares the table with those anchors:

- ``edited``: the row no longer hashes to its last anchor (e.g. ``UPDATE … SET rho=0``);
- ``deleted``: an anchored row is gone;
- ``inserted``: a row no anchor knows (written outside the ledger code);
- ``anchor_edited`` / ``anchor_unlinked``: the anchor entry itself no longer hashes right or
  its successor in the chain no longer links to it.

A charge is decided on verified state: before charging, the rows of the resources and
privacy units being charged are checked under the ledger's write lock. A break is recorded
(``budget.ledger_break``) and holds every later charge until an admin runs
``shuyu budget resolve``: the resolution restores the audited values (the audit record is
the truth, never the edited table), re-anchors the restored rows and states the spent
budget per resource, unit and period as recomputed from the anchors.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from governance import audit
from governance.audit import audit_head, audit_log
from privacy.dp.ledger_tables import dp_ledger
from shuyu_core.errors import ShuyuError
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home

ANCHOR = "budget.ledger"
BREAK = "budget.ledger_break"
RESOLVE = "budget.resolve"
_TS = "%Y-%m-%dT%H:%M:%S.%fZ"
FIELDS = (
    "entry_id",
    "release_id",
    "product_id",
    "version",
    "resource",
    "unit",
    "period",
    "rho",
    "epsilon",
    "delta",
    "snapshots",
    "actor",
    "charged_at",
    "state",
    "draws",
    "updated_at",
    "release_sm3",
)
_FLOATS = ("rho", "epsilon", "delta")
_TIMES = ("charged_at", "updated_at")

Pair = tuple[str, str]  # (resource, privacy unit)


class LedgerTampered(ShuyuError):
    """The ledger differs from what the audit chain recorded, or a break is unresolved."""

    exit_code = 8
    found: LedgerCheck | None = None  # what a check found (None: held by an earlier break)


# --- canonical rows ------------------------------------------------------------------------


def _ts(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).strftime(_TS)
    return None if value is None else str(value)


def _num(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None if value is None else str(value)


def _int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None if value is None else str(value)


def row_fields(mapping: Any) -> dict[str, Any]:
    """The canonical, JSON-ready fields of a ledger row (what its digest covers)."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = mapping[name]
        if name in _FLOATS:
            out[name] = _num(value)
        elif name in _TIMES:
            out[name] = _ts(value)
        elif name == "draws":
            out[name] = _int(value)
        else:
            out[name] = None if value is None else str(value)
    return out


def row_digest(fields: dict[str, Any]) -> str:
    return sm3_hex(
        json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    )


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    """Database values of canonical fields (to restore an audited row)."""
    out = dict(fields)
    for name in _TIMES:
        out[name] = dt.datetime.strptime(fields[name], _TS).replace(tzinfo=dt.UTC)
    return out


def anchor(conn: Connection, entry_id: str, op: str, extra: dict[str, Any] | None = None) -> None:
    """Append the current state of ``entry_id`` to the audit chain, in ``conn``'s transaction.

    ``op`` says what changed it (charge, state, void, recharge, restore, reinsert, remove).
    A removed row is anchored with ``row`` and ``sm3`` null.
    """
    row = conn.execute(select(dp_ledger).where(dp_ledger.c.entry_id == entry_id)).first()
    fields = None if row is None else row_fields(row._mapping)
    base = fields or (extra or {}).get("row_found") or {}
    details: dict[str, Any] = {
        "op": op,
        "resource": base.get("resource"),
        "unit": base.get("unit"),
        "period": base.get("period"),
        "release": base.get("release_id"),
        **(extra or {}),
        "row": fields,
        "sm3": None if fields is None else row_digest(fields),
    }
    audit.append(conn, ANCHOR, entry_id, "ok", details)


# --- checking ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: str  # edited | deleted | inserted | anchor_edited | anchor_unlinked
    entry_id: str
    resource: str | None
    unit: str | None
    period: str | None
    problem: str
    audited: dict[str, Any] | None = None  # the row as last anchored
    found: dict[str, Any] | None = None  # the row as found in the table
    anchor_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LedgerCheck:
    rows: int
    anchors: int
    findings: list[Finding] = field(default_factory=list)
    # entry id -> (last anchored fields or None when removed, its audit seq)
    audited: dict[str, tuple[dict[str, Any] | None, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def one_line(self) -> str:
        if self.ok:
            return f"ledger intact: {self.rows} rows match their {self.anchors} audit anchors"
        kinds = sorted({f.kind for f in self.findings})
        first = self.findings[0]
        return (
            f"ledger broken: {len(self.findings)} finding(s) ({', '.join(kinds)}); first: "
            f"{first.entry_id} {first.kind}: {first.problem}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "anchors": self.anchors,
            "findings": [f.to_dict() for f in self.findings],
        }


def _changed(audited: dict[str, Any], found: dict[str, Any]) -> str:
    diffs = [
        f"{k} {audited.get(k)!r}→{found.get(k)!r}" for k in FIELDS if audited.get(k) != found.get(k)
    ]
    return ", ".join(diffs) or "the row's digest differs"


def check(
    conn: Connection, pairs: Iterable[Pair] | None = None, release: str | None = None
) -> LedgerCheck:
    """Compare ledger rows with their audit anchors: the rows of ``pairs`` (resource, unit),
    or of one ``release``, or all rows when both are None.

    Only the *last* anchor of an entry decides what its row must be, so only those anchors
    are re-hashed and checked for their successor's link here; ``shuyu audit verify`` walks
    the whole chain.
    """
    scope = None if pairs is None else set(pairs)
    prefix = None if release is None else f"{release}/"

    def wanted(resource: Any, unit: Any) -> bool:
        return scope is None or (resource, unit) in scope

    findings: list[Finding] = []
    audited: dict[str, tuple[dict[str, Any] | None, int]] = {}
    digests: dict[str, str | None] = {}
    anchors = 0
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    stmt = select(audit_log.c.seq, audit_log.c.object, audit_log.c.details).where(
        audit_log.c.action == ANCHOR
    )
    if prefix is not None:
        stmt = stmt.where(audit_log.c.object.startswith(prefix, autoescape=True))
    seen: set[str] = set()
    # Newest first: an entry's older anchors are counted but never parsed.
    for seq, obj, details in conn.execute(stmt.order_by(audit_log.c.seq.desc())):
        key = str(obj)
        if prefix is not None and not key.startswith(prefix):
            continue  # LIKE may be case-insensitive (SQLite): keep exact prefixes only
        if key in seen:
            anchors += key in latest
            continue
        seen.add(key)
        try:
            d = json.loads(details)
        except ValueError:
            d = {}
        if not isinstance(d, dict) or not wanted(d.get("resource"), d.get("unit")):
            continue
        anchors += 1
        latest[key] = (int(seq), d)
    intact, unlinked = _anchors_intact(conn, {seq: obj for obj, (seq, _d) in latest.items()})
    findings += unlinked
    for obj, (seq, d) in sorted(latest.items()):
        if seq not in intact:
            findings.append(
                Finding(
                    "anchor_edited",
                    obj,
                    d.get("resource"),
                    d.get("unit"),
                    d.get("period"),
                    f"audit entry {seq} anchoring {obj} does not match its hash",
                    anchor_seq=seq,
                )
            )
            continue
        audited[obj] = (d.get("row"), seq)
        digests[obj] = d.get("sm3")

    rows = 0
    found: dict[str, dict[str, Any]] = {}
    resources = None if scope is None else sorted({r for r, _u in scope})
    rstmt = select(dp_ledger)
    if resources is not None:
        rstmt = rstmt.where(dp_ledger.c.resource.in_(resources))
    if release is not None:
        rstmt = rstmt.where(dp_ledger.c.release_id == release)
    for r in conn.execute(rstmt):
        m = r._mapping
        if not wanted(m["resource"], m["unit"]):
            continue
        rows += 1
        found[str(m["entry_id"])] = row_fields(m)

    for entry_id, fields in sorted(found.items()):
        last = audited.get(entry_id)
        where = (fields.get("resource"), fields.get("unit"), fields.get("period"))
        if last is None or last[0] is None:
            findings.append(
                Finding(
                    "inserted",
                    entry_id,
                    *where,
                    f"row {entry_id} (ρ={fields.get('rho')}) was written outside the ledger: "
                    "no audit entry anchors it",
                    found=fields,
                    anchor_seq=None if last is None else last[1],
                )
            )
        elif row_digest(fields) != digests.get(entry_id):
            findings.append(
                Finding(
                    "edited",
                    entry_id,
                    *where,
                    f"row {entry_id} differs from its audit anchor (entry {last[1]}): "
                    + _changed(last[0], fields),
                    audited=last[0],
                    found=fields,
                    anchor_seq=last[1],
                )
            )
    for entry_id, (fields_or_none, seq) in sorted(audited.items()):
        if fields_or_none is not None and entry_id not in found:
            f = fields_or_none
            findings.append(
                Finding(
                    "deleted",
                    entry_id,
                    f.get("resource"),
                    f.get("unit"),
                    f.get("period"),
                    f"row {entry_id} (ρ={f.get('rho')}, anchored in audit entry {seq}) is "
                    "missing from the ledger",
                    audited=f,
                    anchor_seq=seq,
                )
            )
    return LedgerCheck(rows=rows, anchors=anchors, findings=findings, audited=audited)


def _anchors_intact(conn: Connection, anchors: dict[int, str]) -> tuple[set[int], list[Finding]]:
    """Which anchor entries (seq -> object) still hash right, and findings for those whose
    successor in the chain no longer links to them (a local chain check)."""
    if not anchors:
        return set(), []
    head = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar()
    intact: set[int] = set()
    out: list[Finding] = []
    seqs = sorted(anchors)
    for i in range(0, len(seqs), 400):
        chunk = seqs[i : i + 400]
        wanted = sorted({*chunk, *(s + 1 for s in chunk)})
        got = {
            int(r.seq): r
            for r in conn.execute(select(audit_log).where(audit_log.c.seq.in_(wanted)))
        }
        for s in chunk:
            own = got.get(s)
            if own is None or not audit.stored_hash_ok(own):
                continue
            intact.add(s)
            succ = got.get(s + 1)
            if succ is None and head is not None and s >= int(head):
                continue  # the anchor is the head itself
            if succ is None or succ.prev_hash != own.hash or not audit.stored_hash_ok(succ):
                out.append(
                    Finding(
                        "anchor_unlinked",
                        anchors[s],
                        None,
                        None,
                        None,
                        f"audit entry {s + 1} no longer links to ledger anchor {s} "
                        f"({anchors[s]}): the chain around the anchor was rewritten",
                        anchor_seq=s,
                    )
                )
    return intact, out


def open_break(conn: Connection) -> dict[str, Any] | None:
    """The last recorded ledger break when no resolution came after it, else None."""
    row = conn.execute(
        select(audit_log.c.seq, audit_log.c.action, audit_log.c.object, audit_log.c.ts)
        .where(audit_log.c.action.in_([BREAK, RESOLVE]), audit_log.c.outcome != "refused")
        .order_by(audit_log.c.seq.desc())
        .limit(1)
    ).first()
    if row is None or row.action != BREAK:
        return None
    return {"seq": int(row.seq), "object": row.object, "ts": row.ts}


def tampered(check_result: LedgerCheck, what: str) -> LedgerTampered:
    exc = LedgerTampered(
        f"{what} refused: {check_result.one_line()}",
        hint="an admin investigates ('shuyu audit verify', 'shuyu audit export') and runs "
        "'shuyu budget resolve --reason TEXT'; building stops until then",
    )
    exc.found = check_result
    return exc


def held(brk: dict[str, Any], what: str) -> LedgerTampered:
    return LedgerTampered(
        f"{what} refused: the ledger was found edited (audit entry {brk['seq']}, {brk['ts']}) "
        "and the break is unresolved",
        hint="an admin runs 'shuyu budget resolve --reason TEXT' after investigating",
    )


def record_break(home: Home, obj: str, result: LedgerCheck, during: str) -> str:
    """Audit a found break; it holds every later charge until resolved."""
    return audit.record(
        home,
        BREAK,
        obj,
        "error",
        {"during": during, **result.to_dict()},
    )


def verify(home: Home) -> LedgerCheck:
    """Every ledger row against its anchor (``shuyu audit verify``), in one read transaction."""
    from shuyu_core.home import state_engine

    engine = state_engine(home)
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        result = check(conn)
        conn.rollback()
    return result


# --- resolution ----------------------------------------------------------------------------


def spent_by_line(
    rows: Iterable[dict[str, Any] | None],
) -> dict[tuple[str, str, str], float]:
    """Spent ρ per (resource, unit, period) over rows that are not void."""
    out: dict[tuple[str, str, str], float] = {}
    for f in rows:
        if f is None or f.get("state") == "void":
            continue
        rho = f.get("rho")
        key = (str(f.get("resource")), str(f.get("unit")), str(f.get("period")))
        out[key] = out.get(key, 0.0) + (float(rho) if isinstance(rho, int | float) else 0.0)
    return out


def restore(conn: Connection, result: LedgerCheck) -> list[dict[str, Any]]:
    """Make the table what the audit record says; anchor every restored row. Returns what
    was done (for the resolution entry)."""
    done: list[dict[str, Any]] = []
    for f in result.findings:
        if f.kind == "edited" and f.audited is not None:
            conn.execute(
                update(dp_ledger)
                .where(dp_ledger.c.entry_id == f.entry_id)
                .values(**_values(f.audited))
            )
            anchor(conn, f.entry_id, "restore", {"found": f.found})
            done.append({"entry_id": f.entry_id, "action": "restored audited values"})
        elif f.kind == "deleted" and f.audited is not None:
            conn.execute(insert(dp_ledger).values(**_values(f.audited)))
            anchor(conn, f.entry_id, "reinsert")
            done.append({"entry_id": f.entry_id, "action": "re-inserted audited row"})
        elif f.kind == "inserted":
            conn.execute(delete(dp_ledger).where(dp_ledger.c.entry_id == f.entry_id))
            anchor(conn, f.entry_id, "remove", {"row_found": f.found})
            done.append({"entry_id": f.entry_id, "action": "removed unaudited row"})
    return done


def table_spent(conn: Connection) -> dict[tuple[str, str, str], float]:
    rows = conn.execute(
        select(
            dp_ledger.c.resource,
            dp_ledger.c.unit,
            dp_ledger.c.period,
            func.coalesce(func.sum(dp_ledger.c.rho), 0.0),
        )
        .where(dp_ledger.c.state != "void")
        .group_by(dp_ledger.c.resource, dp_ledger.c.unit, dp_ledger.c.period)
    ).all()
    return {(str(r[0]), str(r[1]), str(r[2])): float(r[3]) for r in rows}
