"""Separation of duties (四眼原则) on one release: whoever built, assessed or publishes it cannot
approve it, an operator cannot approve, and a relaxed policy needs and records a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from accounts_testkit import TEST_ADMIN, act_as, seed

from assessment import engine, publish, review
from governance import accounts, audit, domain_policy
from governance.identity import login_name
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

SI = "si_enrolment_report"


def _refused(home: Home, match: str) -> None:
    entry = audit.tail(home, 1)[0]
    assert entry["outcome"] == "refused" and match in entry["details"]["reason"]


def test_the_builder_or_assessor_cannot_approve_even_holding_a_reviewer_grant(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases[SI]
    # A second person assesses; then the builder (test-operator) tries to approve as reviewer
    # through an account whose operator grant was swapped for a reviewer grant.
    act_as(home, "op-two", "operator")
    engine.assess(home, rid)
    accounts.revoke(home, "test-operator", "operator", TEST_ADMIN)
    accounts.grant(home, "test-operator", "reviewer", TEST_ADMIN)
    act_as(home, "test-operator", "reviewer")
    with pytest.raises(PermissionDenied, match="四眼原则") as info:
        review.decide(home, rid, "approve", "同意")
    assert "test-operator built" in info.value.message and info.value.audited
    _refused(home, "built")
    accounts.grant(home, "op-two", "operator", TEST_ADMIN)
    seed(home, {"rev-two": ["reviewer"]})
    act_as(home, "rev-two", "reviewer")
    assert review.decide(home, rid, "approve", "同意发布").decision == "approve"


def test_an_account_holding_operator_cannot_approve(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases[SI]
    engine.assess(home, rid)
    # Conflicting grants are refused at grant time; an account created while the policy was
    # relaxed (sod=False) still cannot approve once the policy is on.
    accounts.add(home, "dual", ["operator", "reviewer"], TEST_ADMIN, sod=False)
    act_as(home, "dual", "reviewer")
    with pytest.raises(PermissionDenied, match="holds an operator or developer role"):
        review.decide(home, rid, "approve", "同意")


def test_the_approver_cannot_publish(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases[SI]
    engine.assess(home, rid)
    act_as(home, "test-reviewer", "reviewer")
    review.decide(home, rid, "approve", "同意发布")
    # The same person later given an operator account name cannot exist (one account per
    # name), so the attack is one account holding both grants, made while four-eyes was off.
    accounts.grant(home, "test-reviewer", "operator", TEST_ADMIN, sod=False)
    act_as(home, "test-reviewer", "operator")
    with pytest.raises(PermissionDenied, match="approved this release and may not also publish"):
        publish.publish(home, rid)
    _refused(home, "may not also publish")
    assert not (home.published / "products" / rid).exists()
    act_as(home, "test-operator", "operator")
    assert publish.publish(home, rid)["release"] == rid


def test_a_relaxed_policy_allows_one_person_and_records_its_reason(
    demo: tuple[Home, dict[str, str]], tmp_path: Path
) -> None:
    home, releases = demo
    rid = releases[SI]
    engine.assess(home, rid)
    path = tmp_path / "relaxed.yaml"
    path.write_text(
        f"service_accounts: [{{name: {login_name()}}}]\n"
        "separation_of_duties: {enabled: false, reason: 单人值守试点}\n",
        encoding="utf-8",
    )
    domain_policy.apply(home, domain_policy.load_file(path), "pilot", "test-admin", TEST_ADMIN)
    accounts.add(home, "solo", ["operator", "reviewer"], TEST_ADMIN, sod=False)
    act_as(home, "solo", "reviewer")
    review.decide(home, rid, "approve", "同意")
    entry = audit.tail(home, 1)[0]
    assert entry["action"] == "review.approve"
    assert entry["details"]["separation_of_duties_relaxed"] == "单人值守试点"
