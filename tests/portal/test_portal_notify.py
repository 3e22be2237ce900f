"""Notifications: the outbox sweep, 待办 in the portal, e-mail over SMTP to a local sink."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from portal_testkit import login
from sqlalchemy import select, update

from governance import accounts
from governance.actors import Actor, set_current
from governance.audit import entries_for
from portal import outbox
from shuyu_core.errors import IntegrityError, ValidationError
from shuyu_core.home import Home, state_engine

ADMIN = Actor("admin-sun", "admin")


class _Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Sink]:
    sink = _Sink()
    port = _free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    monkeypatch.setenv("SHUYU_SMTP_URL", f"smtp://127.0.0.1:{port}?from=shuyu@test.local")
    try:
        yield sink
    finally:
        ctl.stop()


def _subject(m: Message) -> str:
    return str(make_header(decode_header(m["Subject"])))


def _to(sink: _Sink, address: str) -> list[str]:
    return [_subject(m) for m in sink.messages if address in m["To"]]


def test_sweep_queues_once_and_mails_each_role(
    domain: tuple[Home, dict[str, str]], smtp: _Sink
) -> None:
    home, releases = domain
    accounts.set_email(home, "yb-clerk", "yb@unit.test", ADMIN)
    accounts.set_email(home, "reviewer-li", "li@review.test", ADMIN)
    accounts.set_email(home, "ops-zhao", "zhao@ops.test", ADMIN)
    set_current(Actor("ops-zhao", "operator"))
    first = outbox.run(home, "https://portal.test")
    assert first["queued"] > 0 and first["sent"] > 0 and first["failed"] == 0
    unit_mail = _to(smtp, "yb@unit.test")
    assert unit_mail and all("工单" in s for s in unit_mail)
    assert any("新工单" in s for s in unit_mail)
    rid = next(iter(releases.values()))
    assert f"[数域] 待评审：{rid}" in _to(smtp, "li@review.test")
    # SU-SCJG's clerk gave no address: its rows are kept, marked sent to nobody.
    with state_engine(home).connect() as conn:
        scjg = conn.execute(
            select(outbox.outbox).where(outbox.outbox.c.recipient == "source_unit:SU-SCJG")
        ).all()
    assert scjg and all(r.sent_at is not None and r.sent_to == 0 for r in scjg)
    # No message carries data: only the title and a portal link.
    body = smtp.messages[0].get_payload(decode=True).decode("utf-8")
    assert "https://portal.test/" in body
    n = len(smtp.messages)
    # A second run finds nothing new and sends nothing again.
    again = outbox.run(home)
    assert again["queued"] == 0 and again["sent"] == 0 and len(smtp.messages) == n
    sends = entries_for(home, "notification_outbox", ("notify.send",), "ok")
    assert sends[0]["actor"] == "ops-zhao" and sends[0]["details"]["sent"] == first["sent"]


def test_a_decision_is_queued_for_the_operator(
    domain: tuple[Home, dict[str, str]], smtp: _Sink
) -> None:
    from assessment import review

    home, releases = domain
    accounts.set_email(home, "ops-zhao", "zhao@ops.test", ADMIN)
    rid = next(iter(releases.values()))
    set_current(Actor("ops-zhao", "operator"))
    outbox.run(home)
    set_current(Actor("reviewer-li", "reviewer"))
    review.decide(home, rid, "reject", "指标口径说明不足，请补充后重新提交。")
    set_current(Actor("ops-zhao", "operator"))
    outbox.run(home)
    assert any(f"评审结论（未通过）：{rid}" in s for s in _to(smtp, "zhao@ops.test"))


def test_the_notices_page_shows_the_units_own_outbox(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, _ = domain
    login(client, "yb-clerk")
    page = client.get("/notices").text
    assert "通知记录" in page and "新工单" in page
    with state_engine(home).connect() as conn:
        recipients = set(conn.execute(select(outbox.outbox.c.recipient)).scalars())
    assert "source_unit:SU-SCJG" in recipients  # queued for the other unit …
    assert "/unit/tickets/" in page
    scjg_titles = [r["title"] for r in outbox.for_roles(home, ["source_unit:SU-SCJG"])]
    assert scjg_titles and not any(t in page for t in scjg_titles)  # … never shown to this one


def test_smtp_failure_is_retried_and_recorded(
    domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _ = domain
    accounts.set_email(home, "yb-clerk", "yb@unit.test", ADMIN)
    monkeypatch.setenv("SHUYU_SMTP_URL", f"smtp://127.0.0.1:{_free_port()}")  # nobody listens
    set_current(Actor("ops-zhao", "operator"))
    out = outbox.run(home)
    assert out["failed"] > 0
    with state_engine(home).connect() as conn:
        failed = conn.execute(
            select(outbox.outbox).where(outbox.outbox.c.recipient == "source_unit:SU-YB")
        ).all()
    assert all(r.sent_at is None and r.attempts == 1 and r.last_error for r in failed)


def test_email_field_is_admin_set_validated_and_audit_anchored(
    domain: tuple[Home, dict[str, str]],
) -> None:
    home, _ = domain
    with pytest.raises(ValidationError):
        accounts.set_email(home, "yb-clerk", "not an address", ADMIN)
    assert entries_for(home, "yb-clerk", ("account.email",), "error")
    acc = accounts.set_email(home, "yb-clerk", "yb@unit.test", ADMIN)
    assert acc.email == "yb@unit.test"
    got = accounts.get(home, "yb-clerk")
    assert got is not None and got.email == "yb@unit.test" and got.holds("source_unit:SU-YB")
    # Other changes keep the address.
    accounts.grant(home, "yb-clerk", "source_unit:SU-SCJG", ADMIN)
    again = accounts.get(home, "yb-clerk")
    assert again is not None and again.email == "yb@unit.test"
    # The address is part of the audited state: redirecting mail in the database is caught.
    with state_engine(home).begin() as conn:
        conn.execute(
            update(accounts.accounts)
            .where(accounts.accounts.c.name == "yb-clerk")
            .values(email="eve@evil.test")
        )
    with pytest.raises(IntegrityError):
        accounts.get(home, "yb-clerk")


def test_notify_run_needs_the_permission(
    domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import _register, app

    _register()
    home, _ = domain
    monkeypatch.setenv("SHUYU_ACTOR", "reviewer-li")
    monkeypatch.setenv("SHUYU_ROLE", "reviewer")
    out = CliRunner().invoke(app, ["notify", "run"])
    assert out.exit_code != 0
    refused = entries_for(home, "notification_outbox", ("notify.run",), "refused")
    assert refused and refused[-1]["actor"] == "reviewer-li"
    monkeypatch.setenv("SHUYU_ACTOR", "ops-zhao")
    monkeypatch.setenv("SHUYU_ROLE", "operator")
    ok = CliRunner().invoke(app, ["notify", "run"])
    assert ok.exit_code == 0, ok.output
    assert "queued=" in ok.output
