"""API tokens (接口令牌) of the verification service: issued and revoked by an admin.

A token is ``shuyu_<token_id>_<secret>`` (a 256-bit random secret). It is shown once, at
issue; the state database keeps only the SM3 of the whole token, compared in constant time.
Like an account row, a token row is anchored in the audit chain: it keeps the hash of its
``token.issue`` entry, which names the token id, the account and the SM3. A row inserted or
edited in the database (another account, another digest, a revocation undone) does not
match its entry, or a ``token.revoke`` entry exists, and the token is refused.

A token authenticates its account only: what the account may do is decided at each request
by the account's granted roles (``governance.roles.require``), so disabling the account or
revoking its developer role stops its tokens without touching them.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, String, Table, select

from governance import accounts
from governance.actors import Actor
from governance.audit import entries_for, entry_by_hash, record
from shuyu_core.db import METADATA
from shuyu_core.errors import NotFoundError, PermissionDenied, ValidationError
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine

PREFIX = "shuyu_"
_TOKEN = re.compile(r"^shuyu_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

api_tokens = Table(
    "api_tokens",
    METADATA,
    Column("token_id", String(12), primary_key=True),
    Column("account", String(64), nullable=False, index=True),
    Column("token_sm3", String(64), nullable=False),
    Column("note", String(200), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("revoked_at", DateTime(), nullable=True),
    Column("audit_hash", String(64), nullable=False),
)


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    account: str
    note: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _refuse(home: Home, action: str, obj: str, message: str, hint: str, by: Actor) -> None:
    exc = PermissionDenied(message, hint=hint)
    record(home, action, obj, "refused", {"reason": message}, actor=by)
    exc.audited = True
    raise exc


def issue(home: Home, account: str, by: Actor, note: str = "") -> tuple[str, str]:
    """A new token for ``account`` (a developer account): ``(token_id, token)``.

    The token is returned once and never stored; the caller shows it to the admin."""
    from governance import roles

    roles.require(home, "tokens.manage", f"account/{account}", actor=by)
    acc = accounts.get(home, account)
    if acc is None or not acc.active:
        _refuse(
            home,
            "token.issue",
            f"account/{account}",
            f"account {account!r} does not exist or is disabled",
            "create or enable the account first (shuyu users add / enable)",
            by,
        )
        raise AssertionError  # unreachable: _refuse raises
    if "developer" not in acc.kinds():
        _refuse(
            home,
            "token.issue",
            f"account/{account}",
            f"account {account} holds no developer role: API tokens are for developers",
            "grant it developer:<id> first (shuyu users grant NAME --role developer:<id>)",
            by,
        )
    if len(note) > 200:
        raise ValidationError("token note longer than 200 characters", hint="shorten --note")
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    digest = sm3_hex(token.encode("ascii"))
    audit_hash = record(
        home,
        "token.issue",
        token_id,
        "ok",
        {"account": account, "token_sm3": digest, "note": note},
        actor=by,
    )
    with state_engine(home).begin() as conn:
        conn.execute(
            api_tokens.insert().values(
                token_id=token_id,
                account=account,
                token_sm3=digest,
                note=note,
                created_at=_now(),
                revoked_at=None,
                audit_hash=audit_hash,
            )
        )
    return token_id, token


def revoke(home: Home, token_id: str, by: Actor, reason: str = "") -> TokenInfo:
    from governance import roles

    roles.require(home, "tokens.manage", token_id, actor=by)
    with state_engine(home).connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
    if row is None:
        raise NotFoundError(f"no API token {token_id!r}", hint="see 'shuyu tokens list'")
    if row.revoked_at is not None:
        return _info(row)
    record(home, "token.revoke", token_id, "ok", {"account": row.account, "reason": reason}, by)
    with state_engine(home).begin() as conn:
        conn.execute(
            api_tokens.update().where(api_tokens.c.token_id == token_id).values(revoked_at=_now())
        )
    with state_engine(home).connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
    return _info(row)


def _info(row: object) -> TokenInfo:
    return TokenInfo(
        row.token_id,  # type: ignore[attr-defined]
        row.account,  # type: ignore[attr-defined]
        row.note,  # type: ignore[attr-defined]
        row.created_at,  # type: ignore[attr-defined]
        row.revoked_at,  # type: ignore[attr-defined]
    )


def list_tokens(home: Home, by: Actor, account: str | None = None) -> list[TokenInfo]:
    from governance import roles

    roles.require(home, "tokens.manage", account or "tokens", actor=by)
    stmt = select(api_tokens).order_by(api_tokens.c.created_at)
    if account:
        stmt = stmt.where(api_tokens.c.account == account)
    with state_engine(home).connect() as conn:
        return [_info(r) for r in conn.execute(stmt)]


def authenticate(home: Home, presented: str | None) -> tuple[str, str] | tuple[None, str]:
    """``(account, token_id)`` of a valid, unrevoked, audit-anchored token, else
    ``(None, reason)``. The reason goes to the audit log, never to the caller."""
    m = _TOKEN.match(presented or "")
    if m is None:
        return None, "missing or malformed token"
    token_id = m.group(1)
    with state_engine(home).connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
    digest = sm3_hex((presented or "").encode("ascii"))
    if row is None:
        hmac.compare_digest(digest, "0" * 64)  # same work as a known id
        return None, f"unknown token id {token_id}"
    if not hmac.compare_digest(digest, str(row.token_sm3)):
        return None, f"wrong secret for token {token_id}"
    if row.revoked_at is not None:
        return None, f"token {token_id} is revoked"
    entry = entry_by_hash(home, str(row.audit_hash))
    if (
        entry is None
        or entry["action"] != "token.issue"
        or entry["object"] != token_id
        or entry["details"].get("token_sm3") != row.token_sm3
        or entry["details"].get("account") != row.account
    ):
        return None, f"token {token_id} has no matching audit record"
    if entries_for(home, token_id, ("token.revoke",), "ok"):
        return None, f"token {token_id} was revoked (the row was edited)"
    return str(row.account), token_id
