"""Operator build from the portal: the core call, or the Prefect deployment when configured."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from portal_testkit import SI, login, post

from governance.audit import entries_for
from shuyu_core.home import Home


def test_build_goes_to_the_prefect_deployment_for_the_logged_in_account(
    client: TestClient, domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal import routes_ops

    home, _ = domain
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_submit(name: str, parameters: dict[str, Any]) -> str:
        calls.append((name, parameters))
        return "0a1b2c3d-run"

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(routes_ops, "submit_deployment", fake_submit)
    login(client, "ops-zhao")
    r = post(client, "/ops/build", "/ops", {"product": SI})
    assert r.status_code == 200 and "0a1b2c3d-run" in r.text
    assert calls == [
        ("shuyu-build-product/build-product", {"product": SI, "requested_by": "ops-zhao"})
    ]
    entry = entries_for(home, SI, ("portal.build",), "ok")[-1]
    assert entry["actor"] == "ops-zhao" and entry["details"]["flow_run"] == "0a1b2c3d-run"
    assert entry["details"]["via"]


def test_a_reviewer_cannot_submit_a_build(
    client: TestClient, domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal import routes_ops

    home, _ = domain
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(routes_ops, "submit_deployment", lambda *_a: pytest.fail("submitted"))
    login(client, "reviewer-li")
    token_page = client.get("/review")
    assert token_page.status_code == 200
    from portal_testkit import csrf_of

    r = client.post(
        "/ops/build",
        data={"product": SI, "csrf": csrf_of(token_page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert (
        entries_for(home, "/ops/build", ("portal.page",), "refused")[-1]["actor"] == "reviewer-li"
    )


def test_without_prefect_the_portal_builds_with_the_core(
    client: TestClient, domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal import routes_ops

    _home, releases = domain
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(routes_ops, "submit_deployment", lambda *_a: pytest.fail("submitted"))
    login(client, "ops-zhao")
    r = post(client, "/ops/build", "/ops", {"product": SI})
    assert r.status_code == 303 and r.headers["location"] == f"/ops/releases/{releases[SI]}"
