"""Core changes the portal needed: approval after rectify, the review queue and release list
commands (full ids), and the assessment report's output values."""

from __future__ import annotations

import json
import re

import pytest
from portal_testkit import SI
from test_portal_auth import audit
from typer.testing import CliRunner

from assessment import engine, review, status
from governance.actors import Actor, set_current
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

LEAKS = re.compile(r"<built-in|object at 0x|<bound method|<function ")


def _cli(args: list[str]) -> object:
    from pipelines.cli import _register, app

    _register()
    return CliRunner().invoke(app, args)


def test_core_refuses_approval_of_the_assessment_it_ordered_rectified(
    domain: tuple[Home, dict[str, str]],
) -> None:
    home, releases = domain
    rid = releases[SI]
    set_current(Actor("reviewer-li", "reviewer"))
    review.decide(home, rid, "rectify", "补充口径说明")
    with pytest.raises(PermissionDenied, match="rectification was ordered"):
        review.decide(home, rid, "approve", "同意")
    refused = [e for e in audit(home, "review.approve") if e["outcome"] == "refused"]
    assert refused[-1]["actor"] == "reviewer-li"
    # another reviewer cannot get around it either
    set_current(Actor("reviewer-wang", "reviewer"))
    with pytest.raises(PermissionDenied, match="rectification was ordered"):
        review.decide(home, rid, "approve", "同意")
    set_current(Actor("test-operator", "operator"))
    engine.assess(home, rid)
    set_current(Actor("reviewer-wang", "reviewer"))
    assert review.decide(home, rid, "approve", "整改后同意").decision == "approve"


def test_status_and_queue(domain: tuple[Home, dict[str, str]]) -> None:
    home, releases = domain
    rid = releases[SI]
    [s] = status.all_statuses(home)
    assert s.release == rid and s.stage == "assessed" and s.awaiting_review
    assert [q.release for q in status.awaiting_review(home)] == [rid]
    set_current(Actor("reviewer-li", "reviewer"))
    review.decide(home, rid, "reject", "口径不符")
    assert status.awaiting_review(home) == []
    assert status.of(home, status.rel.load(home, rid)).stage == "rejected"


def test_review_list_and_releases_list_print_full_ids(
    domain: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _home, releases = domain
    rid = releases[SI]
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal must not cut the ids
    res = _cli(["releases", "list"])
    assert res.exit_code == 0, res.output
    assert rid in res.output
    res = _cli(["releases", "list", "--format", "json"])
    doc = json.loads(res.stdout)
    assert [r["release"] for r in doc["releases"]] == [rid]
    res = _cli(["products", "list"])
    assert res.exit_code == 0 and rid in res.output
    monkeypatch.setenv("SHUYU_ACTOR", "reviewer-li")
    monkeypatch.setenv("SHUYU_ROLE", "reviewer")
    res = _cli(["review", "list", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [r["release"] for r in json.loads(res.stdout)["releases"]] == [rid]
    res = _cli(["review", "list"])
    assert res.exit_code == 0 and rid in res.output
    # a source unit may not read the queue
    monkeypatch.setenv("SHUYU_ACTOR", "yb-clerk")
    monkeypatch.setenv("SHUYU_ROLE", "source_unit")
    res = _cli(["review", "list"])
    assert isinstance(res.exception, PermissionDenied) and rid not in res.output


def test_assessment_report_shows_output_values_not_python_reprs(
    domain: tuple[Home, dict[str, str]],
) -> None:
    home, releases = domain
    a = engine.require_latest(home, releases[SI])
    html = engine.report_paths(home, a)["html"].read_text(encoding="utf-8")
    # the template bug: {{ o.values }} on a dict printed the dict's method
    from assessment.report import render_html

    rendered = render_html(a)
    for text in (html, rendered):
        assert not LEAKS.search(text), LEAKS.search(text)
    assert "内容 Values" in rendered


def test_serve_refuses_a_login_that_is_not_a_service_account(
    users: Home, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    policy = Path(str(tmp_path)) / "policy.yaml"
    policy.write_text("service_accounts: []\n", encoding="utf-8")
    monkeypatch.setenv("SHUYU_DOMAIN_POLICY", str(policy))
    res = _cli(["serve", "--port", "1"])
    assert isinstance(res.exception, PermissionDenied)
    assert "not a service account" in str(res.exception)
