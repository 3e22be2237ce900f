"""Accounts and granted roles (账号与授权): the only source of identity.

An account is a person or a service known to the domain: a name, the roles granted to it, an
optional portal password (argon2id) and a status. Roles are ``operator``, ``reviewer``,
``admin`` (安全管理员: manages accounts and the domain policy), ``source_unit:<code>`` and
``developer:<id>``. Every change is made by an admin (or by ``shuyu init`` on an empty domain)
and recorded in the audit chain with the SM3 of the account's resulting state; the row keeps
the hash of that audit entry. Reading an account re-checks both, so a row edited in the
database (a self-granted role, a re-enabled account, an old state restored) is refused with
exit 8 instead of being trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Column, DateTime, String, Table, Text, func, select

from governance.actors import Actor
from shuyu_core.db import METADATA, MIGRATIONS
from shuyu_core.errors import IntegrityError, NotFoundError, PermissionDenied, ValidationError
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ROLE_KINDS = ("operator", "reviewer", "admin", "source_unit", "developer")
SCOPED_KINDS = ("source_unit", "developer")
_SCOPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_PASSWORD = 10
ACCOUNT_ACTIONS = (
    "account.add",
    "account.grant",
    "account.revoke",
    "account.disable",
    "account.enable",
    "account.passwd",
    "account.email",
)

accounts = Table(
    "accounts",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("roles", Text, nullable=False),  # JSON list, sorted
    Column("status", String(20), nullable=False),  # active | disabled
    Column("password_hash", Text, nullable=True),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    Column("state_sm3", String(64), nullable=False),
    Column("audit_hash", String(64), nullable=False),
    # optional notification address (通知邮箱); added to older databases by _add_email_column
    Column("email", String(254), nullable=True),
)
_EMAIL = re.compile(r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")


def _add_email_column(conn: Any) -> None:
    """Databases created before the e-mail field get the (nullable) column."""
    from sqlalchemy import inspect

    if "email" not in {c["name"] for c in inspect(conn).get_columns("accounts")}:
        conn.exec_driver_sql("ALTER TABLE accounts ADD COLUMN email VARCHAR(254)")


MIGRATIONS.append(_add_email_column)

# argon2id with the library's defaults (RFC 9106 low-memory profile).
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Account:
    name: str
    display_name: str
    roles: tuple[str, ...]
    status: str
    password_hash: str | None = field(default=None, repr=False)
    email: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def holds(self, role: str) -> bool:
        return role in self.roles

    def kinds(self) -> set[str]:
        return {r.split(":", 1)[0] for r in self.roles}

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "roles": list(self.roles),
            "status": self.status,
            "password": self.password_hash is not None,
            "email": self.email,
        }


def state_digest(a: Account) -> str:
    body = {
        "name": a.name,
        "display_name": a.display_name,
        "roles": sorted(a.roles),
        "status": a.status,
        "password_hash": a.password_hash,
    }
    if a.email is not None:  # absent from the digest of accounts without one (older rows)
        body["email"] = a.email
    return sm3_hex(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ValidationError(
            f"invalid account name {name!r}",
            hint="use 1-64 characters: letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit",
        )
    return name


def role_string(kind: str, unit: str | None = None, developer: str | None = None) -> str:
    """``source_unit`` + unit → ``source_unit:<unit>``; likewise ``developer``; checks the kind."""
    scope: str | None
    if ":" in kind:
        kind, scope = kind.split(":", 1)
    else:
        scope = unit if kind == "source_unit" else developer if kind == "developer" else None
    if kind not in ROLE_KINDS:
        raise ValidationError(f"unknown role {kind!r}", hint=f"use one of {', '.join(ROLE_KINDS)}")
    if kind in SCOPED_KINDS:
        flag = "--unit CODE" if kind == "source_unit" else "--developer ID"
        if not scope or not _SCOPE.match(scope):
            raise ValidationError(f"role {kind} needs its scope", hint=f"give {flag}")
        return f"{kind}:{scope}"
    if scope:
        raise ValidationError(f"role {kind} takes no scope ({scope!r})", hint="drop the scope")
    return kind


def conflicts(roles: set[str]) -> str | None:
    """Why this set of roles may not sit on one account (four-eyes), or None."""
    kinds = {r.split(":", 1)[0] for r in roles}
    if "reviewer" in kinds and kinds & {"operator", "developer"}:
        return "a reviewer account may not also be an operator or developer (四眼原则)"
    return None


def _to_account(row: Any) -> Account:
    return Account(
        name=row.name,
        display_name=row.display_name,
        roles=tuple(json.loads(row.roles)),
        status=row.status,
        password_hash=row.password_hash,
        email=row.email,
    )


def _verify_row(home: Home, row: Any) -> Account:
    """The account in ``row`` after checking it against its audit record (exit 8 if not)."""
    from governance.audit import entries_for, entry_by_hash

    acc = _to_account(row)
    hint = "an admin investigates with 'shuyu audit verify'; the account stays unusable until then"
    if state_digest(acc) != row.state_sm3:
        raise IntegrityError(f"account {acc.name} was edited in the database", hint=hint)
    entry = entry_by_hash(home, row.audit_hash)
    if (
        entry is None
        or entry["action"] not in ACCOUNT_ACTIONS
        or entry["object"] != acc.name
        or entry["details"].get("state_sm3") != row.state_sm3
    ):
        raise IntegrityError(f"account {acc.name} has no matching audit record", hint=hint)
    later = [
        e for e in entries_for(home, acc.name, ACCOUNT_ACTIONS, "ok") if e["seq"] > entry["seq"]
    ]
    if later:
        raise IntegrityError(
            f"account {acc.name} was restored to an older state (audit entry {entry['seq']}, "
            f"latest {later[-1]['seq']})",
            hint=hint,
        )
    return acc


def get(home: Home, name: str) -> Account | None:
    """The verified account ``name``, or None when there is none."""
    with state_engine(home).connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
    return _verify_row(home, row) if row is not None else None


def require_account(home: Home, name: str) -> Account:
    acc = get(home, name)
    if acc is None:
        raise NotFoundError(
            f"no account {name!r}", hint="an admin creates it: shuyu users add NAME --role ROLE"
        )
    return acc


def list_all(home: Home) -> list[Account]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(select(accounts).order_by(accounts.c.name)).all()
    return [_verify_row(home, r) for r in rows]


def problems(home: Home) -> list[str]:
    """Every account row that does not match its audit record (for ``shuyu audit verify``)."""
    with state_engine(home).connect() as conn:
        rows = conn.execute(select(accounts).order_by(accounts.c.name)).all()
    found: list[str] = []
    for row in rows:
        try:
            _verify_row(home, row)
        except IntegrityError as exc:
            found.append(exc.message)
    return found


def count(home: Home) -> int:
    with state_engine(home).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(accounts)).scalar_one())


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(
            f"password too short ({len(password)} characters)",
            hint=f"use at least {MIN_PASSWORD} characters",
        )
    return _hasher.hash(password)


def check_password(acc: Account, password: str) -> bool:
    if acc.password_hash is None:
        return False
    try:
        return _hasher.verify(acc.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _write(home: Home, acc: Account, action: str, by: Actor, extra: dict[str, Any]) -> Account:
    """Record the change in the audit chain, then store the row pointing at that entry."""
    from governance.audit import record

    digest = state_digest(acc)
    details = {"state_sm3": digest, "roles": list(acc.roles), "status": acc.status, **extra}
    audit_hash = record(home, action, acc.name, "ok", details, actor=by)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    values = {
        "display_name": acc.display_name,
        "roles": json.dumps(sorted(acc.roles), ensure_ascii=False),
        "status": acc.status,
        "password_hash": acc.password_hash,
        "email": acc.email,
        "updated_at": now,
        "state_sm3": digest,
        "audit_hash": audit_hash,
    }
    with state_engine(home).begin() as conn:
        if action == "account.add":
            conn.execute(accounts.insert().values(name=acc.name, created_at=now, **values))
        else:
            conn.execute(accounts.update().where(accounts.c.name == acc.name).values(**values))
    return acc


def _refuse(home: Home, action: str, name: str, message: str, hint: str, by: Actor) -> None:
    from governance.audit import record

    exc = PermissionDenied(message, hint=hint)
    record(home, action, name, "refused", {"reason": message}, actor=by)
    exc.audited = True
    raise exc


def _invalid(home: Home, action: str, name: str, exc: ValidationError, by: Actor) -> None:
    from governance.audit import record

    record(home, action, name, "error", {"error": exc.message}, actor=by)
    exc.audited = True
    raise exc


def add(
    home: Home,
    name: str,
    roles: list[str],
    by: Actor,
    *,
    display_name: str | None = None,
    password: str | None = None,
    sod: bool = True,
) -> Account:
    """Create an account. ``roles`` are full role strings (see :func:`role_string`)."""
    try:
        validate_name(name)
        if not roles:
            raise ValidationError(f"account {name} needs a role", hint="give --role ROLE")
        pw = hash_password(password) if password is not None else None
    except ValidationError as exc:
        _invalid(home, "account.add", name, exc, by)
        raise
    if get(home, name) is not None:
        _invalid(
            home,
            "account.add",
            name,
            ValidationError(f"account {name} exists", hint="use 'shuyu users grant'"),
            by,
        )
    reason = conflicts(set(roles)) if sod else None
    if reason:
        _refuse(home, "account.add", name, f"account {name}: {reason}", "use two accounts", by)
    acc = Account(name, display_name or name, tuple(sorted(set(roles))), "active", pw)
    return _write(home, acc, "account.add", by, {})


def grant(home: Home, name: str, role: str, by: Actor, *, sod: bool = True) -> Account:
    acc = require_account(home, name)
    if role in acc.roles:
        return acc
    if by.name == name:
        # 安全管理员 manage identities; one who grants themself reviewer (or operator) decides on
        # what they administer: another admin grants it.
        _refuse(
            home,
            "account.grant",
            name,
            f"account {name} may not grant itself a role ({role})",
            "another admin grants it",
            by,
        )
    reason = conflicts({*acc.roles, role}) if sod else None
    if reason:
        _refuse(home, "account.grant", name, f"account {name}: {reason}", "use two accounts", by)
    new = replace(acc, roles=tuple(sorted({*acc.roles, role})))
    return _write(home, new, "account.grant", by, {"role": role})


def revoke(home: Home, name: str, role: str, by: Actor) -> Account:
    acc = require_account(home, name)
    if role not in acc.roles:
        _invalid(
            home,
            "account.revoke",
            name,
            ValidationError(
                f"account {name} does not hold role {role}",
                hint=f"its roles: {', '.join(acc.roles) or '(none)'}",
            ),
            by,
        )
    if role == "admin" and _admins(home) == {name}:
        _refuse(
            home,
            "account.revoke",
            name,
            "the last admin cannot lose the admin role",
            "grant admin to another account first",
            by,
        )
    new = replace(acc, roles=tuple(r for r in acc.roles if r != role))
    return _write(home, new, "account.revoke", by, {"role": role})


def set_status(home: Home, name: str, active: bool, by: Actor) -> Account:
    acc = require_account(home, name)
    if not active and "admin" in acc.roles and _admins(home) == {name}:
        _refuse(
            home,
            "account.disable",
            name,
            "the last admin cannot be disabled",
            "grant admin to another account first",
            by,
        )
    new = replace(acc, status="active" if active else "disabled")
    return _write(home, new, "account.enable" if active else "account.disable", by, {})


def set_password(home: Home, name: str, password: str, by: Actor) -> Account:
    acc = require_account(home, name)
    try:
        pw = hash_password(password)
    except ValidationError as exc:
        _invalid(home, "account.passwd", name, exc, by)
        raise
    new = replace(acc, password_hash=pw)
    return _write(home, new, "account.passwd", by, {})


def set_email(home: Home, name: str, email: str | None, by: Actor) -> Account:
    """Set (or clear, with None) the account's notification address (admin)."""
    acc = require_account(home, name)
    if email is not None and not _EMAIL.match(email.strip()):
        _invalid(
            home,
            "account.email",
            name,
            ValidationError(f"{email!r} is not an e-mail address", hint="give name@domain"),
            by,
        )
    new = replace(acc, email=email.strip() if email else None)
    return _write(home, new, "account.email", by, {"email": new.email})


def _admins(home: Home) -> set[str]:
    return {a.name for a in list_all(home) if a.active and "admin" in a.roles}


def ensure(home: Home, name: str, roles: list[str], by: Actor) -> Account:
    """The account ``name`` holding at least ``roles`` (created or granted as needed)."""
    acc = get(home, name)
    if acc is None:
        return add(home, name, roles, by)
    for role in roles:
        acc = grant(home, name, role, by)
    return acc


def ever_created(home: Home) -> bool:
    """Whether the audit chain records any account ever made in this domain.

    ``shuyu init`` and the demo's bootstrap make the first admin of a *fresh* domain; counting
    the rows of ``accounts`` alone would let anyone who can write the state database empty
    that table and become the first admin of a domain with a history."""
    from governance.audit import audit_log

    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(audit_log.c.seq)
            .where(audit_log.c.action.in_(ACCOUNT_ACTIONS), audit_log.c.outcome == "ok")
            .limit(1)
        ).first()
    return row is not None
