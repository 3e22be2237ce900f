"""The permission table and audited refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from accounts_testkit import TEST_ADMIN, act_as

from governance import accounts, audit, roles
from governance.actors import Actor, parse_actor, set_current
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

DOCS = Path(__file__).resolve().parents[2] / "docs" / "governance.md"


def _as(home: Home, name: str, role: str) -> Actor:
    return act_as(home, name, role)


@pytest.fixture(autouse=True)
def _reset_actor() -> Iterator[None]:
    yield
    set_current(None)


@pytest.mark.parametrize(
    ("role", "action", "kwargs"),
    [
        ("operator", "build", {}),
        ("operator", "publish", {}),
        ("operator", "ingest", {}),
        ("operator", "budget.set", {}),
        ("reviewer", "review.approve", {}),
        ("reviewer", "review.rectify", {}),
        ("reviewer", "assessment.read", {}),
        ("source_unit:SU-GA", "ticket.answer", {"resource_unit": "SU-GA"}),
        ("source_unit:SU-GA", "quality.report.read", {"resource_unit": "SU-GA"}),
        ("developer:dev-001", "build", {"developer": "dev-001"}),
        ("developer:dev-001", "release.read", {"developer": "dev-001"}),
    ],
)
def test_allowed(home: Home, role: str, action: str, kwargs: dict[str, str]) -> None:
    actor = _as(home, "alice", role)
    before = audit.tail(home, 1)
    allowed = roles.require(
        home,
        action,
        "obj-1",
        kwargs.get("resource_unit"),
        developer=kwargs.get("developer"),
    )
    assert allowed == actor
    # an allowed check writes nothing; the action itself does
    assert audit.tail(home, 1) == before


@pytest.mark.parametrize(
    ("role", "action", "kwargs", "reason"),
    [
        ("reviewer", "build", {}, "role reviewer may not build"),
        ("reviewer", "publish", {}, "role reviewer may not publish"),
        ("operator", "review.approve", {}, "role operator may not review.approve"),
        ("developer:dev-001", "publish", {"developer": "dev-001"}, "may not publish"),
        (
            "source_unit:SU-GA",
            "quality.report.read",
            {"resource_unit": "SU-RS"},
            "may not quality.report.read data of source unit SU-RS",
        ),
        ("source_unit:SU-GA", "ticket.answer", {}, "only on its own unit's data; no unit given"),
        ("source_unit:SU-GA", "build", {"resource_unit": "SU-GA"}, "may not build"),
        ("developer:dev-001", "build", {"developer": "dev-002"}, "may not build for developer"),
        ("developer:dev-001", "release.read", {}, "only under its own agreements"),
    ],
)
def test_refused_with_message_and_audit(
    home: Home, role: str, action: str, kwargs: dict[str, str], reason: str
) -> None:
    _as(home, "mallory", role)
    with pytest.raises(PermissionDenied) as info:
        roles.require(
            home,
            action,
            "release-42",
            kwargs.get("resource_unit"),
            developer=kwargs.get("developer"),
        )
    exc = info.value
    assert reason in exc.message and "release-42" in exc.message and "mallory" in exc.message
    assert exc.audited and exc.exit_code == 5 and exc.hint
    [entry] = audit.tail(home, 1)
    assert (entry["actor"], entry["role"], entry["action"], entry["object"], entry["outcome"]) == (
        "mallory",
        role,
        action,
        "release-42",
        "refused",
    )
    assert reason in entry["details"]["reason"]


def test_unknown_action_is_a_programming_error(home: Home) -> None:
    with pytest.raises(ValueError, match="unknown action 'biuld'"):
        roles.require(home, "biuld", "x")


def test_unknown_role_refused() -> None:
    with pytest.raises(PermissionDenied, match="unknown role 'superuser'"):
        parse_actor("eve", "superuser")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("none", "mallory has no account in this domain"),
        ("disabled", "account mallory is disabled"),
        ("revoked", "account mallory does not hold role operator"),
    ],
)
def test_an_actor_set_in_process_is_rechecked_against_the_accounts(
    home: Home, setup: str, reason: str
) -> None:
    """A context actor is only a claim: the gate re-derives it from the accounts table."""
    if setup != "none":
        act_as(home, "mallory", "operator")
        if setup == "disabled":
            accounts.set_status(home, "mallory", False, TEST_ADMIN)
        else:
            accounts.revoke(home, "mallory", "operator", TEST_ADMIN)
    set_current(Actor("mallory", "operator"))
    with pytest.raises(PermissionDenied, match=reason) as info:
        roles.require(home, "build", "p-1")
    assert info.value.audited
    entry = audit.tail(home, 1)[0]
    assert (entry["actor"], entry["outcome"]) == ("mallory", "refused")
    assert reason in entry["details"]["reason"]


def test_table_covers_every_role_and_docs_show_it() -> None:
    kinds = {k for p in roles.PERMISSIONS.values() for k in p.roles}
    assert kinds == {"operator", "reviewer", "source_unit", "developer", "admin"}
    assert roles.table_markdown() in DOCS.read_text(encoding="utf-8")
