"""Accounts for tests: created through the core API, as an admin would with 'shuyu users add'."""

from __future__ import annotations

from pathlib import Path

from governance import accounts
from governance.actors import Actor, set_current
from governance.identity import login_name
from shuyu_core.home import Home

TEST_ADMIN = Actor("test-admin", "admin")


def test_policy(directory: Path) -> Path:
    """A domain policy naming this process's login as a service account, so tests may act
    for named accounts with SHUYU_ACTOR / --actor as the Prefect worker or portal do."""
    path = directory / "domain_policy.yaml"
    path.write_text(
        "service_accounts:\n"
        f"  - {{name: {login_name()}, purpose: test runner}}\n"
        "separation_of_duties: {enabled: true}\n",
        encoding="utf-8",
    )
    return path


def seed(home: Home, wanted: dict[str, list[str]]) -> None:
    """Make sure each named account exists and holds the roles given."""
    for name, roles in wanted.items():
        accounts.ensure(home, name, roles, TEST_ADMIN)


def act_as(home: Home, name: str, role: str) -> Actor:
    """Create the account if needed and act as it in this context."""
    seed(home, {name: [role]})
    actor = Actor(name, role)
    set_current(actor)
    return actor
