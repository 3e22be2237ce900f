"""Portal sessions and login lockout, kept in the state database.

The browser holds only a random token; the table keeps its SM3, so a copy of the database
does not give anyone a live session. Each session carries its own CSRF token, the account,
the role chosen for it (an account with several roles picks one), and its last activity for
the idle timeout. Failed logins are counted per account; past the policy's limit the account
is locked for a while, even against the right password.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, Integer, String, Table, delete, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from governance.domain_policy import PortalPolicy
from shuyu_core.db import METADATA
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine

portal_sessions = Table(
    "portal_sessions",
    METADATA,
    Column("token_sm3", String(64), primary_key=True),
    Column("account", String(64), nullable=False, index=True),
    Column("role", String(100), nullable=True),  # None until the user picks one
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("last_seen", DateTime(), nullable=False),
)

portal_login_failures = Table(
    "portal_login_failures",
    METADATA,
    Column("account", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure", DateTime(), nullable=False),
    Column("locked_until", DateTime(), nullable=True),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Session:
    token_sm3: str
    account: str
    role: str | None
    csrf: str
    created_at: dt.datetime
    last_seen: dt.datetime

    def csrf_ok(self, presented: str | None) -> bool:
        # constant time: the comparison must not tell an attacker how much of a guess matched
        return bool(presented) and hmac.compare_digest(self.csrf, str(presented))


def create(home: Home, account: str) -> tuple[str, Session]:
    """A new session for ``account``; returns the cookie token (only ever seen here)."""
    token = secrets.token_urlsafe(32)
    now = _now()
    s = Session(sm3_hex(token.encode()), account, None, secrets.token_urlsafe(32), now, now)
    with state_engine(home).begin() as conn:
        conn.execute(
            portal_sessions.insert().values(
                token_sm3=s.token_sm3,
                account=account,
                role=None,
                csrf=s.csrf,
                created_at=now,
                last_seen=now,
            )
        )
    return token, s


def lookup(home: Home, token: str | None, policy: PortalPolicy) -> tuple[Session | None, bool]:
    """(the live session of ``token`` with its activity refreshed, expired?)."""
    if not token or len(token) > 200:
        return None, False
    digest = sm3_hex(token.encode())
    now = _now()
    with state_engine(home).begin() as conn:
        row = conn.execute(
            select(portal_sessions).where(portal_sessions.c.token_sm3 == digest)
        ).first()
        if row is None:
            return None, False
        idle = now - row.last_seen > dt.timedelta(minutes=policy.idle_timeout_minutes)
        too_old = now - row.created_at > dt.timedelta(hours=policy.session_max_hours)
        if idle or too_old:
            conn.execute(delete(portal_sessions).where(portal_sessions.c.token_sm3 == digest))
            return Session(
                digest, row.account, row.role, row.csrf, row.created_at, row.last_seen
            ), True
        conn.execute(
            portal_sessions.update()
            .where(portal_sessions.c.token_sm3 == digest)
            .values(last_seen=now)
        )
    return Session(digest, row.account, row.role, row.csrf, row.created_at, now), False


def anchor(s: Session) -> str:
    """What the ``portal.login`` audit entry records of a session: a digest of the stored
    token digest (never the token), so the entry vouches for exactly this row."""
    return sm3_hex(f"portal-session:{s.token_sm3}".encode())


def anchored(home: Home, s: Session) -> bool:
    """Whether a ``portal.login`` entry for ``s.account`` vouches for this session row.

    The table is in the state database, which the operators' logins can write: a row inserted
    (or re-pointed) to another account with a token its writer knows would otherwise be a
    login as that account, without its password."""
    from governance.audit import audit_log, format_ts

    since = format_ts((s.created_at - dt.timedelta(minutes=1)).replace(tzinfo=dt.UTC))
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.details).where(
                audit_log.c.action == "portal.login",
                audit_log.c.object == f"account/{s.account}",
                audit_log.c.outcome == "ok",
                audit_log.c.ts >= since,
            )
        ).all()
    want = anchor(s)
    return any(json.loads(r[0]).get("session") == want for r in rows)


def set_role(home: Home, s: Session, role: str) -> Session:
    with state_engine(home).begin() as conn:
        conn.execute(
            portal_sessions.update()
            .where(portal_sessions.c.token_sm3 == s.token_sm3)
            .values(role=role)
        )
    return Session(s.token_sm3, s.account, role, s.csrf, s.created_at, s.last_seen)


def destroy(home: Home, s: Session) -> None:
    with state_engine(home).begin() as conn:
        conn.execute(delete(portal_sessions).where(portal_sessions.c.token_sm3 == s.token_sm3))


def locked_until(home: Home, account: str) -> dt.datetime | None:
    """When the lock on ``account`` ends, or None when it may try to log in."""
    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(portal_login_failures.c.locked_until).where(
                portal_login_failures.c.account == account
            )
        ).first()
    if row is None or row[0] is None or row[0] <= _now():
        return None
    return row[0]


def failed(home: Home, account: str, policy: PortalPolicy) -> tuple[int, dt.datetime | None]:
    """Count one failed login; returns (failures so far, lock end if this one locked it)."""
    try:
        return _failed(home, account, policy)
    except SAIntegrityError:
        # two first failures at once both tried to insert the counter row: count again
        return _failed(home, account, policy)


def _failed(home: Home, account: str, policy: PortalPolicy) -> tuple[int, dt.datetime | None]:
    now = _now()
    with state_engine(home).begin() as conn:
        row = conn.execute(
            select(portal_login_failures).where(portal_login_failures.c.account == account)
        ).first()
        count = 1
        if row is not None:
            expired = row.locked_until is not None and row.locked_until <= now
            count = 1 if expired else row.failures + 1
        until = (
            now + dt.timedelta(minutes=policy.lockout_minutes)
            if count >= policy.max_failed_logins
            else None
        )
        values = {"failures": count, "last_failure": now, "locked_until": until}
        if row is None:
            conn.execute(portal_login_failures.insert().values(account=account, **values))
        else:
            conn.execute(
                portal_login_failures.update()
                .where(portal_login_failures.c.account == account)
                .values(**values)
            )
    return count, until


def succeeded(home: Home, account: str) -> None:
    with state_engine(home).begin() as conn:
        conn.execute(
            delete(portal_login_failures).where(portal_login_failures.c.account == account)
        )
