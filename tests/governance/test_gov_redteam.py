"""Red team on identity paths outside the core gates: in-process actors reachable from the CLI.

Each abuse is tried and must be refused with its audit entry."""

from __future__ import annotations

import pytest
from accounts_testkit import act_as, seed

from catalogs.catalog import Catalog
from governance import audit
from pipelines import demo_accounts
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home


def test_the_demo_does_not_approve_as_demo_reviewer_on_a_domain_it_did_not_set_up(
    home: Home,
) -> None:
    """An operator of a real domain whose admin created the demo accounts runs 'shuyu demo':
    it would approve its own builds as demo-reviewer in-process (one person as two)."""
    seed(home, demo_accounts.demo_accounts(Catalog.load()))
    act_as(home, "test-operator", "operator")
    with pytest.raises(PermissionDenied, match="not initialized by the demo") as info:
        demo_accounts.prepare(home)
    assert info.value.audited
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"], entry["actor"]) == (
        "demo",
        "refused",
        "test-operator",
    )
