"""Red team on identity paths outside the core gates: in-process actors reachable from the CLI.

Each abuse is tried and must be refused with its audit entry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from accounts_testkit import act_as, seed
from sqlalchemy import delete

from catalogs.catalog import Catalog
from governance import accounts as governance_accounts
from governance import audit
from governance.actors import set_current
from pipelines import demo_accounts
from shuyu_core import ids
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home, state_engine


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


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    from pipelines import cli

    monkeypatch.setattr(sys, "argv", ["shuyu", *argv])
    try:
        cli.main()
    except SystemExit as ex:
        return int(ex.code or 0)
    return 0


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_out_cannot_replace_the_state_database_or_its_wal(
    home: Home, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suffix: str
) -> None:
    """Replacing state.db-wal drops the last committed transactions, audit head included."""
    link = tmp_path / "db-link"
    link.symlink_to(home.root, target_is_directory=True)
    for out in (home.root / f"state.db{suffix}", link / f"state.db{suffix}"):
        assert _run(monkeypatch, "audit", "export", "--out", str(out)) == 5, out
        entry = audit.tail(home, 1)[0]
        assert (entry["action"], entry["outcome"]) == ("audit.export.out", "refused")
    assert audit.verify(home).ok


def test_ids_take_ascii_digits_only() -> None:
    arabic = "si_enrolment_report-v\u0661.0.0-0123456789abcdef"
    with pytest.raises(ids.InvalidIdentifier):
        ids.release_id(arabic)
    with pytest.raises(ids.InvalidIdentifier):
        ids.snapshot_id("20260101T120000123456Z".replace("1", "\u0661"))


def test_emptying_the_accounts_table_does_not_make_a_fresh_domain(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the state database deletes every account (and policy row) and runs
    'shuyu init --admin me' or 'shuyu demo' to become the first admin of a domain with a
    history."""
    from governance.accounts import accounts as accounts_table
    from governance.domain_policy import domain_policy_versions

    with state_engine(home).begin() as conn:
        conn.execute(delete(accounts_table))
        conn.execute(delete(domain_policy_versions))
    assert _run(monkeypatch, "init", "--admin", "mallory") == 5
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"]) == ("domain.init", "refused")
    assert "records accounts made before" in entry["details"]["reason"]
    assert governance_accounts.get(home, "mallory") is None
    monkeypatch.delenv("SHUYU_ACTOR")
    monkeypatch.delenv("SHUYU_ROLE", raising=False)
    set_current(None)
    with pytest.raises(PermissionDenied):
        demo_accounts.prepare(home)
    assert governance_accounts.count(home) == 0
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"]) == ("demo", "refused")


def test_an_admin_cannot_grant_itself_reviewer(home: Home) -> None:
    """The security admin grants itself reviewer to approve what it administers."""
    seed(home, {"adm-one": ["admin"], "adm-two": ["admin"]})
    me = act_as(home, "adm-one", "admin")
    with pytest.raises(PermissionDenied, match="may not grant itself"):
        governance_accounts.grant(home, "adm-one", "reviewer", me)
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"], entry["actor"]) == (
        "account.grant",
        "refused",
        "adm-one",
    )
    assert not governance_accounts.require_account(home, "adm-one").holds("reviewer")
    other = act_as(home, "adm-two", "admin")
    assert governance_accounts.grant(home, "adm-one", "reviewer", other).holds("reviewer")
