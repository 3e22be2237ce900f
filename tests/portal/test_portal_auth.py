"""Portal sessions: login, lockout, CSRF, idle timeout, logout, role choice, revoked access.

Each gate is tried from the outside (a wrong password, a stolen form, an old session, a
revoked role) and must refuse and leave an audit entry under the right name."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi.testclient import TestClient
from portal_testkit import ADMIN, PASSWORD, csrf_of, login
from sqlalchemy import select, update

from governance import accounts
from governance.audit import audit_log
from governance.identity import login_name
from portal.sessions import portal_sessions
from shuyu_core.home import Home, state_engine


def audit(home: Home, action: str) -> list[dict[str, Any]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.action == action)).all()
    return [{**r._mapping, "details": json.loads(r.details)} for r in rows]


def test_healthz(auth_client: TestClient) -> None:
    r = auth_client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_login_sets_a_strict_httponly_cookie_and_audits(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    r = login(auth_client, "scjg-clerk", follow=False)
    assert r.status_code == 303 and r.headers["location"] == "/unit"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("shuyu_session="))
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "secure" not in low
    token = cookie.split(";")[0].split("=", 1)[1]
    # only the SM3 of the token is stored
    with state_engine(home).connect() as conn:
        stored = [r.token_sm3 for r in conn.execute(select(portal_sessions))]
    assert token not in stored and len(stored) == 1
    ok = [e for e in audit(home, "portal.login") if e["outcome"] == "ok"]
    assert ok[-1]["actor"] == "scjg-clerk" and ok[-1]["details"]["via"] == login_name()


def test_cookie_is_secure_under_tls(users: Home) -> None:
    from portal.app import create_app

    with TestClient(create_app(users), base_url="https://testserver") as c:
        r = login(c, "scjg-clerk", follow=False)
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("shuyu_session="))
    assert "secure" in cookie.lower()


def test_wrong_password_and_unknown_account_are_refused_alike(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    a = login(auth_client, "scjg-clerk", "wrong-password-1")
    b = login(auth_client, "nobody-here", "wrong-password-1")
    assert a.status_code == b.status_code == 401
    assert "用户名或密码错误" in a.text and "用户名或密码错误" in b.text
    assert auth_client.get("/unit", follow_redirects=False).headers["location"].startswith("/login")
    refused = [e for e in audit(home, "portal.login") if e["outcome"] == "refused"]
    assert {e["object"] for e in refused} == {"account/scjg-clerk", "account/nobody-here"}


def test_lockout_engages_even_against_the_right_password(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    for _ in range(5):  # the shipped policy: 5 failures lock for 15 minutes
        login(auth_client, "scjg-clerk", "wrong-password-1")
    r = login(auth_client, "scjg-clerk", PASSWORD, follow=False)
    assert r.status_code == 403 and "已锁定" in r.text
    assert "shuyu_session" not in r.headers.get("set-cookie", "")
    locks = audit(home, "portal.lockout")
    assert len(locks) == 1 and locks[0]["object"] == "account/scjg-clerk"
    assert audit(home, "portal.login")[-1]["details"]["reason"] == "locked"
    # another account is not affected
    assert login(auth_client, "yb-clerk").url.path == "/unit"


def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    # the login form itself
    r = auth_client.post("/login", data={"username": "scjg-clerk", "password": PASSWORD})
    assert r.status_code == 403
    login(auth_client, "scjg-clerk")
    r = auth_client.post("/unit/tickets/1/reply", data={"action": "ack", "note": "收到"})
    assert r.status_code == 403
    r = auth_client.post(
        "/unit/tickets/1/reply", data={"action": "ack", "note": "收到", "csrf": "x" * 43}
    )
    assert r.status_code == 403
    r = auth_client.post("/logout", data={})
    assert r.status_code == 403
    refused = audit(home, "portal.csrf")
    assert len(refused) == 4
    assert [e["actor"] for e in refused[1:]] == ["scjg-clerk"] * 3
    assert not audit(home, "ticket.ack")  # nothing reached the core


def test_idle_session_expires(auth_client: TestClient, users: Home) -> None:
    home = users
    login(auth_client, "scjg-clerk")
    assert auth_client.get("/unit").status_code == 200
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=31)
    with state_engine(home).begin() as conn:
        conn.execute(update(portal_sessions).values(last_seen=old))
    r = auth_client.get("/unit", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?expired=1"
    assert auth_client.get("/unit", follow_redirects=False).headers["location"].startswith("/login")
    with state_engine(home).connect() as conn:
        assert conn.execute(select(portal_sessions)).first() is None
    assert audit(home, "portal.session.expire")[0]["actor"] == "scjg-clerk"


def test_logout_ends_the_session_for_good(auth_client: TestClient, users: Home) -> None:
    home = users
    login(auth_client, "scjg-clerk")
    token = auth_client.cookies.get("shuyu_session")
    page = auth_client.get("/unit")
    r = auth_client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert audit(home, "portal.logout")[0]["actor"] == "scjg-clerk"
    # replaying the old cookie does not get back in
    auth_client.cookies.set("shuyu_session", token or "")
    assert auth_client.get("/unit", follow_redirects=False).headers["location"].startswith("/login")


def test_an_account_with_several_roles_picks_one(auth_client: TestClient, users: Home) -> None:
    home = users
    r = login(auth_client, "multi-role", follow=False)
    assert r.headers["location"] == "/role"
    assert auth_client.get("/ops", follow_redirects=False).headers["location"] == "/role"
    form = auth_client.get("/role")
    # a role the account does not hold is refused
    bad = auth_client.post("/role", data={"role": "reviewer", "csrf": csrf_of(form.text)})
    assert bad.status_code == 403
    r = auth_client.post(
        "/role", data={"role": "admin", "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert r.headers["location"] == "/admin"
    assert auth_client.get("/admin").status_code == 200
    assert auth_client.get("/ops").status_code == 403  # acting as admin now, not as operator
    assert [e["outcome"] for e in audit(home, "portal.role")] == ["refused", "ok"]


def test_revoked_role_or_disabled_account_ends_the_session(
    auth_client: TestClient, users: Home
) -> None:
    home = users
    login(auth_client, "scjg-clerk")
    assert auth_client.get("/unit").status_code == 200
    accounts.set_status(home, "scjg-clerk", False, ADMIN)
    r = auth_client.get("/unit", follow_redirects=False)
    assert r.headers["location"] == "/login?ended=1"
    assert login(auth_client, "scjg-clerk").status_code == 401  # disabled: refused at login too


def test_open_redirect_is_not_followed(auth_client: TestClient) -> None:
    page = auth_client.get("/login")
    r = auth_client.post(
        "/login",
        data={
            "username": "scjg-clerk",
            "password": PASSWORD,
            "csrf": csrf_of(page.text),
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/unit"
