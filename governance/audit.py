"""Append-only, hash-chained audit log (操作日志) in the state database.

Each entry's hash is SM3 over the previous entry's hash and the entry's canonical JSON, so
an edit, deletion, insertion or reordering breaks the chain at a findable place.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, Text, select, text

from governance.actors import Actor, current_actor
from shuyu_core.db import METADATA
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine

GENESIS = "0" * 64

audit_log = Table(
    "audit_log",
    METADATA,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("object", String(500), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return sm3_hex(prev_hash.encode() + canonical(entry))


def record(
    home: Home,
    action: str,
    obj: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> str:
    """Append one entry and return its hash. ``outcome`` is ok, refused or error."""
    who = actor or current_actor()
    engine = state_engine(home)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # Take the write lock before reading the tail so concurrent writers serialize.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            conn.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        row = conn.execute(
            select(audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        prev = row[0] if row else GENESIS
        ts = dt.datetime.now(dt.UTC)
        entry = {
            "ts": ts.isoformat(),
            "actor": who.name,
            "role": who.role,
            "action": action,
            "object": obj,
            "outcome": outcome,
            "details": details or {},
        }
        digest = entry_hash(prev, entry)
        conn.execute(
            audit_log.insert().values(
                ts=ts,
                actor=who.name,
                role=who.role,
                action=action,
                object=obj,
                outcome=outcome,
                details=json.dumps(details or {}, ensure_ascii=False, sort_keys=True),
                prev_hash=prev,
                hash=digest,
            )
        )
        conn.commit()
    return digest
