"""Red team: a portal session is only as good as the login that made it.

The session table lives in the state database, which an operator's login can write; a row
re-pointed at another account (or inserted with a token its writer knows) must not make the
portal act as that account. Each try is refused and audited."""

from __future__ import annotations

import datetime as dt
import json

from fastapi.testclient import TestClient
from portal_testkit import SI, login
from sqlalchemy import select, update

from governance.audit import audit_log
from portal.sessions import portal_sessions
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine


def _session_refusals(home: Home) -> list[dict[str, object]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log).where(
                audit_log.c.action == "portal.session", audit_log.c.outcome == "refused"
            )
        ).all()
    return [{**r._mapping, "details": json.loads(r.details)} for r in rows]


def test_a_session_row_re_pointed_at_a_reviewer_is_refused(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    assert login(auth_client, "ops-zhao").status_code == 200
    assert auth_client.get("/ops", follow_redirects=False).status_code == 200
    with state_engine(home).begin() as conn:
        conn.execute(update(portal_sessions).values(account="reviewer-li", role="reviewer"))
    r = auth_client.get("/review", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login")
    refusals = _session_refusals(home)
    assert refusals and refusals[-1]["object"] == "account/reviewer-li"
    with state_engine(home).connect() as conn:
        assert conn.execute(select(portal_sessions)).first() is None  # the row is gone


def test_a_session_row_inserted_with_a_known_token_is_refused(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    token = "planted-token-known-to-its-writer"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with state_engine(home).begin() as conn:
        conn.execute(
            portal_sessions.insert().values(
                token_sm3=sm3_hex(token.encode()),
                account="reviewer-wang",
                role="reviewer",
                csrf="x" * 43,
                created_at=now,
                last_seen=now,
            )
        )
    auth_client.cookies.set("shuyu_session", token)
    r = auth_client.get("/review", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login")
    assert _session_refusals(home)[-1]["object"] == "account/reviewer-wang"


def test_a_real_login_still_works(auth_client: TestClient, users: Home) -> None:
    assert login(auth_client, "reviewer-li").status_code == 200
    assert auth_client.get("/review", follow_redirects=False).status_code == 200
    assert _session_refusals(users) == []


def test_the_reviewer_reads_the_audited_assessment_not_an_edited_report_file(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    """An operator rewrites report.html under work/ (findings removed, a forged remark)."""
    from assessment import engine

    home, releases = domain
    rid = releases[SI]
    a = engine.require_latest(home, rid)
    html = engine.report_paths(home, a)["html"]
    html.write_text("<html><body>全部通过，无任何问题 FORGED</body></html>", encoding="utf-8")
    login(client, "reviewer-li")
    r = client.get(f"/review/{rid}/report")
    assert r.status_code == 200
    assert "FORGED" not in r.text and a.assessment_id in r.text
