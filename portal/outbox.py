"""Notification outbox (通知发件箱): derived by a sweep over the state, sent by SMTP.

The sweep (:func:`sweep`) looks at the state — correction tickets and release stages — and
adds one row per event and recipient role the first time it sees it, keyed so that the
same event is never queued twice:

| event | when | to |
|---|---|---|
| ``ticket.opened`` | a ticket waits for its unit's first answer | ``source_unit:<unit>`` |
| ``ticket.due_soon`` | a waiting ticket is due within two working days | ``source_unit:<unit>`` |
| ``ticket.overdue`` | a waiting ticket is past its due date | the unit and ``operator`` |
| ``release.awaiting_review`` | a release's latest assessment has no decision | ``reviewer`` |
| ``release.decision`` | approved / rejected / rectify | ``operator`` |
| ``release.published`` | published | ``operator`` and ``reviewer`` |

It is a sweep rather than hooks in the core so that nothing the core does can be held up or
broken by notification, and events that happened while nobody swept are still found. It runs
when someone opens 待办/通知 in the portal and with ``shuyu notify run`` (cron or a Prefect
schedule), which also delivers: when ``SHUYU_SMTP_URL`` is set
(``smtp://[user:password@]host[:port][?from=addr&starttls=1]`` or ``smtps://…``), each unsent
row is mailed to the active accounts holding its role that have an e-mail address
(``shuyu users email``). Messages carry the title and a portal link only — never data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import Column, DateTime, Integer, String, Table, Text, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from governance import accounts
from governance.audit import record
from quality import tickets
from quality.store import quality_tickets
from quality.workdays import add_working_days, today_cn
from shuyu_core.db import METADATA
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home, state_engine

MAX_ATTEMPTS = 5

outbox = Table(
    "notification_outbox",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_key", String(300), nullable=False, unique=True),
    Column("event", String(40), nullable=False),
    Column("recipient", String(100), nullable=False, index=True),  # a role string
    Column("title", Text, nullable=False),
    Column("link", String(300), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("sent_at", DateTime(), nullable=True),
    Column("sent_to", Integer, nullable=False, default=0),  # how many addresses
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
)


@dataclass(frozen=True)
class Event:
    key: str
    event: str
    recipient: str
    title: str
    link: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _ticket_events(home: Home) -> list[Event]:
    t = quality_tickets.c
    today = today_cn()
    soon, _ = add_working_days(today, 2)
    q = select(t.id, t.source_unit, t.resource, t.rule, t.state, t.due_on).where(
        t.state.in_(tickets.WAITING)
    )
    with state_engine(home).connect() as conn:
        rows = conn.execute(q).all()
    out: list[Event] = []
    for tid, unit, resource, rule, state, due in rows:
        label = f"工单 #{tid} {resource} · {rule}"
        unit_role = f"source_unit:{unit}"
        link = f"/unit/tickets/{tid}"
        if state in (tickets.OPEN, tickets.REOPENED):
            out.append(
                Event(
                    f"ticket.opened:{tid}:{state}",
                    "ticket.opened",
                    unit_role,
                    f"新工单：{label}（应于 {due} 前答复）",
                    link,
                )
            )
        if due < today:
            for role, url in ((unit_role, link), ("operator", f"/ops/tickets/{tid}")):
                out.append(
                    Event(
                        f"ticket.overdue:{tid}:{due}|{role}",
                        "ticket.overdue",
                        role,
                        f"已逾期：{label}（应于 {due} 前答复）",
                        url,
                    )
                )
        elif due <= soon:
            out.append(
                Event(
                    f"ticket.due_soon:{tid}:{due}",
                    "ticket.due_soon",
                    unit_role,
                    f"两个工作日内到期：{label}（{due}）",
                    link,
                )
            )
    return out


def _release_events(home: Home) -> list[Event]:
    from assessment import status

    zh = status.STAGE_ZH
    out: list[Event] = []
    for rid, stage, when in status.stages_from_state(home):
        at = when.isoformat(timespec="seconds") if when else ""
        if stage == "assessed":
            out.append(
                Event(
                    f"release.review:{rid}:{at}",
                    "release.awaiting_review",
                    "reviewer",
                    f"待评审：{rid}",
                    f"/review/{rid}",
                )
            )
        elif stage in ("approved", "rejected", "rectify"):
            out.append(
                Event(
                    f"release.decision:{rid}:{stage}:{at}",
                    "release.decision",
                    "operator",
                    f"评审结论（{zh[stage]}）：{rid}",
                    f"/ops/releases/{rid}",
                )
            )
        elif stage == "published":
            for role, url in (("operator", f"/ops/releases/{rid}"), ("reviewer", f"/review/{rid}")):
                out.append(
                    Event(
                        f"release.published:{rid}|{role}",
                        "release.published",
                        role,
                        f"已发布：{rid}",
                        url,
                    )
                )
    return out


def sweep(home: Home) -> int:
    """Queue every event not queued before; returns how many rows were added."""
    found = _ticket_events(home) + _release_events(home)
    if not found:
        return 0
    with state_engine(home).connect() as conn:
        known = set(conn.execute(select(outbox.c.event_key)).scalars())
    new = [e for e in {e.key: e for e in found}.values() if e.key not in known]
    if not new:
        return 0
    now = _now()
    rows = [
        {
            "event_key": e.key,
            "event": e.event,
            "recipient": e.recipient,
            "title": e.title,
            "link": e.link,
            "created_at": now,
            "sent_to": 0,
            "attempts": 0,
        }
        for e in new
    ]
    added = 0
    with state_engine(home).connect() as conn:
        for i in range(0, len(rows), 500):
            chunk = rows[i : i + 500]
            try:
                with conn.begin():
                    conn.execute(outbox.insert(), chunk)
                added += len(chunk)
            except SAIntegrityError:  # a concurrent sweep queued some: insert the rest one by one
                for r in chunk:
                    try:
                        with conn.begin():
                            conn.execute(outbox.insert().values(**r))
                        added += 1
                    except SAIntegrityError:  # already queued by the other sweep
                        continue
    return added


def for_roles(home: Home, roles: list[str], limit: int = 100) -> list[dict[str, Any]]:
    """The newest outbox rows addressed to any of ``roles`` (for 待办/通知)."""
    q = (
        select(outbox)
        .where(outbox.c.recipient.in_(roles))
        .order_by(outbox.c.id.desc())
        .limit(limit)
    )
    with state_engine(home).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    ssl: bool
    starttls: bool
    user: str | None
    password: str | None
    sender: str


def smtp_config(url: str | None = None) -> SmtpConfig | None:
    """``SHUYU_SMTP_URL`` parsed, or None when it is not set."""
    raw = url if url is not None else os.environ.get("SHUYU_SMTP_URL", "")
    if not raw:
        return None
    u = urlsplit(raw)
    if u.scheme not in ("smtp", "smtps") or not u.hostname:
        raise ValidationError(
            "SHUYU_SMTP_URL must be smtp://host[:port] or smtps://host[:port]",
            hint="e.g. smtp://mail.example.gov.cn:25?from=shuyu@example.gov.cn",
        )
    qs = parse_qs(u.query)
    return SmtpConfig(
        host=u.hostname,
        port=u.port or (465 if u.scheme == "smtps" else 25),
        ssl=u.scheme == "smtps",
        starttls=qs.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        user=unquote(u.username) if u.username else None,
        password=unquote(u.password) if u.password else None,
        sender=qs.get("from", ["shuyu@localhost"])[0],
    )


def _addresses(home: Home) -> dict[str, list[str]]:
    """Role string → e-mail addresses of the active accounts holding it."""
    out: dict[str, list[str]] = {}
    for a in accounts.list_all(home):
        if a.active and a.email:
            for r in a.roles:
                out.setdefault(r, []).append(a.email)
    return out


def deliver(home: Home, cfg: SmtpConfig, portal_url: str = "") -> dict[str, int]:
    """Mail every unsent row (fewer than MAX_ATTEMPTS tries) to its role's addresses."""
    with state_engine(home).connect() as conn:
        pending = conn.execute(
            select(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.attempts < MAX_ATTEMPTS)
            .order_by(outbox.c.id)
        ).all()
    counts = {"sent": 0, "no_recipient": 0, "failed": 0}
    if not pending:
        return counts
    book = _addresses(home)
    smtp: smtplib.SMTP | None = None
    try:
        for row in pending:
            to = sorted(set(book.get(row.recipient, [])))
            error: str | None = None
            if to:
                try:
                    if smtp is None:
                        smtp = _connect(cfg)
                    msg = EmailMessage()
                    msg["Subject"] = f"[数域] {row.title}"
                    msg["From"] = cfg.sender
                    msg["To"] = ", ".join(to)
                    msg.set_content(
                        f"{row.title}\n\n请登录数据运营门户查看：{portal_url}{row.link}\n\n"
                        "（本邮件由数域自动发送，不含任何数据内容。）"
                    )
                    smtp.send_message(msg)
                except (smtplib.SMTPException, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                    smtp = None
            with state_engine(home).begin() as conn:
                stmt = outbox.update().where(outbox.c.id == row.id)
                if error is None:
                    conn.execute(stmt.values(sent_at=_now(), sent_to=len(to), last_error=None))
                else:
                    conn.execute(stmt.values(attempts=row.attempts + 1, last_error=error))
            if error is not None:
                counts["failed"] += 1
            elif to:
                counts["sent"] += 1
            else:
                counts["no_recipient"] += 1
    finally:
        if smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
    record(home, "notify.send", "notification_outbox", "ok", {**counts, "host": cfg.host})
    return counts


def _connect(cfg: SmtpConfig) -> smtplib.SMTP:
    smtp: smtplib.SMTP = (
        smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=30)
        if cfg.ssl
        else smtplib.SMTP(cfg.host, cfg.port, timeout=30)
    )
    if cfg.starttls and not cfg.ssl:
        smtp.starttls()
    if cfg.user:
        smtp.login(cfg.user, cfg.password or "")
    return smtp


def run(home: Home, portal_url: str = "") -> dict[str, int]:
    """Sweep, then deliver when SMTP is configured (``shuyu notify run``)."""
    added = sweep(home)
    cfg = smtp_config()
    counts = deliver(home, cfg, portal_url) if cfg else {}
    record(home, "notify.sweep", "notification_outbox", "ok", {"queued": added, **counts})
    return {"queued": added, **counts}
