"""数据核验接口 POST /api/v1/verify: tokens, roles, consent, quota, rate limit, audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from governance import accounts, api_tokens
from governance.actors import Actor
from governance.audit import entries_for
from governance.consent import ConsentLedger
from governance.domain_policy import PortalPolicy
from shuyu_core import snapshots
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

PRODUCT = "identity_verification"
ADMIN = Actor("admin-sun", "admin")
DEV = "dev-api"


@pytest.fixture()
def api(domain: tuple[Home, dict[str, str]]) -> Iterator[tuple[Home, TestClient, str, str]]:
    """The template domain, a developer account of dev-001 with a token, and a client."""
    from portal.app import create_app

    home = domain[0]
    accounts.add(home, DEV, ["developer:dev-001"], ADMIN)
    token_id, token = api_tokens.issue(home, DEV, ADMIN, note="tests")
    with TestClient(create_app(home), base_url="http://testserver") as c:
        yield home, c, token_id, token


def _people(home: Home, n: int) -> pl.DataFrame:
    snap = snapshots.latest(home, "RKJBXX")
    return (
        snapshots.scan(home, "RKJBXX", snap.snapshot_id, columns=["公民身份号码", "姓名"])
        .collect()
        .unique(subset=["公民身份号码"], keep="none")
        .sort("公民身份号码")
        .head(n)
    )


def _grant(home: Home, ids: list[str]) -> None:
    ConsentLedger(home).import_frame(
        pl.DataFrame(
            {
                "subject_id": ids,
                "purpose": ["identity-verification"] * len(ids),
                "granted_at": ["2025-01-01"] * len(ids),
                "expires_at": ["2099-12-31"] * len(ids),
                "evidence_ref": [f"EV-{i}" for i in range(len(ids))],
            }
        ),
        source="test",
    )


def _q(i: int, name: str, pid: str) -> dict[str, Any]:
    return {
        "query_id": f"REQ-{i:04d}",
        "kind": "person",
        "name": name,
        "id_number": pid,
        "consent_ref": f"EV-{i}",
    }


def _post(c: TestClient, token: str | None, body: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return c.post("/api/v1/verify", json=body, headers=headers)


def _refusals(home: Home, obj: str, action: str) -> list[dict[str, Any]]:
    return entries_for(home, obj, (action,), "refused")


def test_single_and_batch_answers_match_the_registry_and_are_audited(
    api: tuple[Home, TestClient, str, str],
) -> None:
    home, c, token_id, token = api
    people = _people(home, 3)
    ids, names = people["公民身份号码"].to_list(), people["姓名"].to_list()
    fake = "11010119900307999X"
    _grant(home, [ids[0], ids[1], fake])  # consent under EV-0, EV-1, EV-2
    r = _post(c, token, {"product": PRODUCT, "query": _q(0, f" {names[0]} ", ids[0].lower())})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["result"] == "match"
    batch = [
        _q(0, names[0], ids[0]),
        _q(1, names[0] + "某", ids[1]),  # a wrong name: mismatch
        _q(2, names[2], fake),  # unknown id: not_found
    ]
    r = _post(c, token, {"product": PRODUCT, "queries": batch})
    assert r.status_code == 200, r.text
    got = [(a["query_id"], a["result"], a["reason"]) for a in r.json()["results"]]
    assert got == [
        ("REQ-0000", "match", None),
        ("REQ-0001", "mismatch", None),
        ("REQ-0002", "not_found", None),
    ]
    # Only the flags answer: no name, no identifier, nothing else about anybody.
    assert set(r.json()["results"][0]) == {"query_id", "kind", "result", "reason"}
    assert ids[1] not in r.text and names[1] not in r.text
    batches = entries_for(home, f"api/{PRODUCT}", ("verify.batch",), "ok")
    assert len(batches) == 2
    last = batches[-1]
    assert last["actor"] == DEV and last["role"] == "developer:dev-001"
    assert last["details"]["via"] and last["details"]["channel"] == "api"
    assert last["details"]["token"] == token_id
    assert last["details"]["answers"] == [[q, res] for q, res, _ in got]
    # The answers go to the requester only: nothing is released or published.
    assert not any((home.root / "published").glob("**/*.parquet"))
    assert not list((home.root / "releases").glob(f"{PRODUCT}*"))


def test_missing_wrong_malformed_and_revoked_tokens_get_401_and_are_audited(
    api: tuple[Home, TestClient, str, str],
) -> None:
    home, c, token_id, token = api
    body = {"product": PRODUCT, "query": _q(0, "张三", "110101199003070000")}
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for presented in (None, "", "not-a-token", wrong, f"shuyu_{'0' * 12}_{token[-43:]}"):
        r = _post(c, presented, body)
        assert r.status_code == 401, presented
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized"  # one answer whatever the reason
    reasons = [e["details"]["reason"] for e in _refusals(home, "/api/v1/verify", "api.auth")]
    assert len(reasons) == 5
    assert any("wrong secret" in r for r in reasons)
    assert any("unknown token id" in r for r in reasons)
    api_tokens.revoke(home, token_id, ADMIN, reason="rotated")
    assert _post(c, token, body).status_code == 401
    assert "revoked" in _refusals(home, "/api/v1/verify", "api.auth")[-1]["details"]["reason"]
    assert entries_for(home, token_id, ("token.revoke",), "ok")[0]["actor"] == "admin-sun"


def test_a_token_row_edited_in_the_database_is_refused(
    api: tuple[Home, TestClient, str, str],
) -> None:
    from shuyu_core.home import state_engine

    home, c, token_id, token = api
    api_tokens.revoke(home, token_id, ADMIN)
    with state_engine(home).begin() as conn:  # "un-revoke" behind the audit chain's back
        conn.execute(
            api_tokens.api_tokens.update()
            .where(api_tokens.api_tokens.c.token_id == token_id)
            .values(revoked_at=None)
        )
    r = _post(c, token, {"product": PRODUCT, "query": _q(0, "张三", "110101199003070000")})
    assert r.status_code == 401
    assert (
        "row was edited" in _refusals(home, "/api/v1/verify", "api.auth")[-1]["details"]["reason"]
    )


def test_tokens_are_for_developers_and_roles_are_checked_at_each_request(
    api: tuple[Home, TestClient, str, str],
) -> None:
    home, c, _token_id, token = api
    # Issuing to a non-developer is refused and audited.
    with pytest.raises(PermissionDenied, match="no developer role"):
        api_tokens.issue(home, "reviewer-li", ADMIN)
    assert _refusals(home, "account/reviewer-li", "token.issue")
    # Only an admin issues tokens.
    with pytest.raises(PermissionDenied, match=r"may not tokens\.manage"):
        api_tokens.issue(home, DEV, Actor("ops-zhao", "operator"))
    # Another developer's product: 403.
    accounts.add(home, "dev-other", ["developer:dev-999"], ADMIN)
    _, other = api_tokens.issue(home, "dev-other", ADMIN)
    body = {"product": PRODUCT, "query": _q(0, "张三", "110101199003070000")}
    r = _post(c, other, body)
    assert r.status_code == 403
    refused = _refusals(home, PRODUCT, "verify.query")
    assert refused[-1]["actor"] == "dev-other" and "dev-001" in refused[-1]["details"]["reason"]
    # The developer role revoked after issue: the token no longer verifies (403).
    accounts.revoke(home, DEV, "developer:dev-001", ADMIN)
    r = _post(c, token, body)
    assert r.status_code == 403
    assert _refusals(home, PRODUCT, "verify.query")[-1]["actor"] == DEV
    # A disabled account: 403 as well (roles.require re-checks the account).
    accounts.grant(home, DEV, "developer:dev-001", ADMIN)
    assert _post(c, token, body).status_code == 200
    accounts.set_status(home, DEV, False, ADMIN)
    assert _post(c, token, body).status_code == 403


def test_consent_refusal_says_only_consent_not_verified(
    api: tuple[Home, TestClient, str, str],
) -> None:
    home, c, _token_id, token = api
    people = _people(home, 3)
    ids, names = people["公民身份号码"].to_list(), people["姓名"].to_list()
    _grant(home, ids[:1])  # only the first subject consented (under EV-0)
    batch = [
        _q(0, names[0], ids[0]),
        _q(1, names[1], ids[1]),  # no consent at all
        {**_q(2, names[0], ids[0]), "consent_ref": "EV-7"},  # another reference
    ]
    r = _post(c, token, {"product": PRODUCT, "queries": batch})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [a["result"] for a in res] == ["match", "refused", "refused"]
    assert [a["reason"] for a in res[1:]] == ["consent_not_verified"] * 2
    detail = entries_for(home, f"api/{PRODUCT}", ("verify.refused",), "refused")[-1]
    assert detail["actor"] == DEV
    assert dict(detail["details"]["refused"]) == {
        "REQ-0001": "consent_missing",
        "REQ-0002": "consent_ref_mismatch",
    }


def test_daily_quota_is_shared_with_the_cli_and_refuses_per_query(
    api: tuple[Home, TestClient, str, str],
) -> None:
    from products.verification import take_quota

    home, c, _token_id, token = api
    people = _people(home, 3)
    ids, names = people["公民身份号码"].to_list(), people["姓名"].to_list()
    _grant(home, ids)
    # The account already asked 4 998 of its 5 000 queries today (e.g. by CLI batches).
    assert take_quota(home, DEV, 4998, 5000, dt.datetime.now(dt.UTC).date()) == 4998
    batch = [_q(i, names[i], ids[i]) for i in range(3)]
    res = _post(c, token, {"product": PRODUCT, "queries": batch}).json()["results"]
    assert [a["result"] for a in res] == ["match", "match", "refused"]
    assert res[2]["reason"] == "quota_exceeded"


def test_rate_limit_gives_429_and_is_audited(
    api: tuple[Home, TestClient, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal import routes_api

    home, c, token_id, token = api
    monkeypatch.setattr(routes_api, "policy", lambda _home: PortalPolicy(api_requests_per_minute=2))
    body = {"product": PRODUCT, "query": _q(0, "张三", "110101199003070000")}
    codes = [_post(c, token, body).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    last = _refusals(home, PRODUCT, "verify.query")[-1]
    assert last["actor"] == DEV and last["details"]["reason"] == "rate_limited"
    assert last["details"]["token"] == token_id and last["details"]["via"]
    # The window slides: a minute later the token may ask again.
    assert routes_api.allow("x" * 12, 1, now=0.0) and not routes_api.allow("x" * 12, 1, now=59.0)
    assert routes_api.allow("x" * 12, 1, now=60.5)


def test_malformed_batches_and_identifier_query_ids_are_refused(
    api: tuple[Home, TestClient, str, str],
) -> None:
    home, c, _token_id, token = api
    assert _post(c, token, {"queries": []}).status_code == 400
    assert _post(c, token, {"product": PRODUCT, "queries": []}).status_code == 400
    dup = [_q(0, "a", "1"), _q(0, "b", "2")]
    assert _post(c, token, {"product": PRODUCT, "queries": dup}).status_code == 400
    assert (
        _post(c, token, {"product": "no_such_product", "query": _q(0, "a", "1")}).status_code == 404
    )
    pid = _people(home, 1)["公民身份号码"][0]
    r = _post(c, token, {"product": PRODUCT, "query": {**_q(0, "a", pid), "query_id": pid}})
    assert r.status_code == 400 and pid not in r.text
    assert entries_for(home, PRODUCT, ("verify.refused",), "refused")[-1]["actor"] == DEV


def test_tokens_cli_issue_list_revoke(
    domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import _register, app

    _register()

    home = domain[0]
    accounts.add(home, DEV, ["developer:dev-001"], ADMIN)
    monkeypatch.setenv("SHUYU_ACTOR", "admin-sun")
    monkeypatch.setenv("SHUYU_ROLE", "admin")
    runner = CliRunner()
    out = runner.invoke(app, ["tokens", "issue", DEV, "--note", "ERP"])
    assert out.exit_code == 0, out.output
    token = out.output.strip().splitlines()[-1]
    assert api_tokens.authenticate(home, token)[0] == DEV
    listed = runner.invoke(app, ["tokens", "list", "--format", "json"])
    assert listed.exit_code == 0 and token not in listed.output and "ERP" in listed.output
    token_id = token.split("_")[1]
    assert runner.invoke(app, ["tokens", "revoke", token_id]).exit_code == 0
    assert api_tokens.authenticate(home, token)[0] is None
    monkeypatch.setenv("SHUYU_ACTOR", "ops-zhao")
    monkeypatch.setenv("SHUYU_ROLE", "operator")
    assert runner.invoke(app, ["tokens", "issue", DEV]).exit_code != 0


def test_admin_issues_and_revokes_tokens_on_the_portal(
    api: tuple[Home, TestClient, str, str],
) -> None:
    import re

    from portal_testkit import login, post

    home, c, _token_id, _token = api
    login(c, "admin-sun")
    page = post(c, "/admin/tokens/issue", "/admin", {"account": DEV, "note": "ERP 对接"})
    assert page.status_code == 200
    found = re.search(r"<code>(shuyu_[0-9a-f]{12}_[A-Za-z0-9_-]{43})</code>", page.text)
    assert found, "the new token is shown once"
    token = found.group(1)
    assert token not in c.get("/admin").text  # only once
    body = {"product": PRODUCT, "query": _q(0, "张三", "110101199003070000")}
    assert _post(c, token, body).status_code == 200
    token_id = token.split("_")[1]
    issued = entries_for(home, token_id, ("token.issue",), "ok")[0]
    assert issued["actor"] == "admin-sun" and issued["details"]["via"]
    assert post(c, f"/admin/tokens/{token_id}/revoke", "/admin", {}).status_code == 303
    assert _post(c, token, body).status_code == 401
    # Without the CSRF token nothing is issued.
    r = c.post("/admin/tokens/issue", data={"account": DEV}, follow_redirects=False)
    assert r.status_code == 403
