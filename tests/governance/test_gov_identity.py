"""Identity from accounts: no self-declared actor or role gets through, and edited accounts or
policies are caught (trust model I, items 1 and 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accounts_testkit import TEST_ADMIN, seed
from sqlalchemy import text

from governance import accounts, audit, domain_policy
from governance.actors import Actor
from governance.identity import login_name, resolve
from shuyu_core.errors import IntegrityError, PermissionDenied, ValidationError
from shuyu_core.home import Home, state_engine

LOGIN = login_name()


def _shuyu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def _policy_without_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "strict_policy.yaml"
    path.write_text("service_accounts: []\n", encoding="utf-8")
    monkeypatch.setenv("SHUYU_DOMAIN_POLICY", str(path))


def _last(home: Home) -> dict[str, object]:
    return audit.tail(home, 1)[0]


def test_the_login_account_acts_and_a_role_must_be_granted(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _policy_without_services(tmp_path, monkeypatch)
    monkeypatch.delenv("SHUYU_ACTOR")
    monkeypatch.delenv("SHUYU_ROLE")
    with pytest.raises(PermissionDenied, match="has no account") as info:
        resolve(home)
    assert info.value.audited and _last(home)["outcome"] == "refused"
    seed(home, {LOGIN: ["operator", "admin"], "other-admin": ["admin"]})
    assert resolve(home) == Actor(LOGIN, "operator")  # operator is the default among several
    assert resolve(home, role_flag="admin") == Actor(LOGIN, "admin")
    with pytest.raises(PermissionDenied, match="does not hold role reviewer"):
        resolve(home, role_flag="reviewer")
    entry = _last(home)
    assert (entry["action"], entry["actor"], entry["outcome"]) == (
        "identity.resolve",
        LOGIN,
        "refused",
    )
    accounts.set_status(home, LOGIN, False, TEST_ADMIN)
    with pytest.raises(PermissionDenied, match="is disabled"):
        resolve(home)


def test_actor_flag_is_refused_unless_the_login_is_a_service_account(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(home, {"li.reviewer": ["reviewer"]})
    _policy_without_services(tmp_path, monkeypatch)
    with pytest.raises(PermissionDenied, match="not a service account") as info:
        resolve(home, "li.reviewer", "reviewer")
    assert info.value.exit_code == 5 and _last(home)["actor"] == LOGIN
    monkeypatch.delenv("SHUYU_DOMAIN_POLICY")
    monkeypatch.setenv("SHUYU_DOMAIN_POLICY", str(domain_policy.PACKAGED_POLICY))
    with pytest.raises(PermissionDenied, match="not a service account"):
        resolve(home)  # SHUYU_ACTOR=test-operator from the fixture is refused the same way


def test_a_service_account_acts_for_an_account_holding_the_role(home: Home) -> None:
    seed(home, {"li.reviewer": ["reviewer"]})
    who = resolve(home, "li.reviewer", "reviewer")
    assert who == Actor("li.reviewer", "reviewer", via=LOGIN)
    audit.record(home, "test.action", "x", actor=who)
    entry = _last(home)
    assert entry["actor"] == "li.reviewer" and entry["details"]["via"] == LOGIN
    with pytest.raises(PermissionDenied, match="does not hold role operator"):
        resolve(home, "li.reviewer", "operator")
    with pytest.raises(PermissionDenied, match="no account"):
        resolve(home, "nobody", "operator")


def test_cli_actor_and_role_come_from_accounts(home: Home) -> None:
    """Through the real entry point: a self-declared role and a stranger are refused (exit 5)."""
    denied = _shuyu("--role", "reviewer", "budget", "show", env={"SHUYU_ROLE": ""})
    assert denied.returncode == 5, denied.stderr
    assert "does not hold role reviewer" in denied.stderr
    stranger = _shuyu("budget", "show", env={"SHUYU_ACTOR": "eve", "SHUYU_ROLE": ""})
    assert stranger.returncode == 5 and "'eve' has no account" in stranger.stderr
    me = _shuyu("whoami", "--format", "json", env={"SHUYU_ROLE": ""})
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout) == {
        "account": "test-operator",
        "role": "operator",
        "via": LOGIN,
        "roles": ["operator"],
    }


def test_only_an_admin_manages_accounts_and_changes_are_audited(home: Home, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery\n", encoding="utf-8")
    refused = _shuyu("users", "add", "mallory", "--role", "reviewer")
    assert refused.returncode == 5 and "may not accounts.manage" in refused.stderr
    assert accounts.get(home, "mallory") is None
    seed(home, {"root-admin": ["admin"]})
    as_admin = {"SHUYU_ACTOR": "root-admin", "SHUYU_ROLE": "admin"}
    ok = _shuyu(
        "users", "add", "carol", "--role", "reviewer", "--password-file", str(pw), env=as_admin
    )
    assert ok.returncode == 0, ok.stderr
    carol = accounts.require_account(home, "carol")
    assert carol.roles == ("reviewer",) and accounts.check_password(carol, "correct horse battery")
    assert not accounts.check_password(carol, "wrong password!")
    assert carol.password_hash is not None and carol.password_hash.startswith("$argon2id$")
    entry = _last(home)
    assert (entry["action"], entry["object"], entry["actor"]) == (
        "account.add",
        "carol",
        "root-admin",
    )
    assert "password_hash" not in json.dumps(entry["details"])
    conflict = _shuyu("users", "grant", "carol", "operator", env=as_admin)
    assert conflict.returncode == 5 and "四眼原则" in conflict.stderr
    assert accounts.require_account(home, "carol").roles == ("reviewer",)
    scoped = _shuyu("users", "add", "su", "--role", "source_unit", env=as_admin)
    assert scoped.returncode == 4 and "--unit" in scoped.stderr
    listed = _shuyu("users", "list", "--format", "json", env=as_admin)
    assert {a["name"] for a in json.loads(listed.stdout)} >= {"carol", "root-admin"}
    assert "argon2" not in listed.stdout


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE accounts SET roles = '[\"operator\", \"reviewer\"]' WHERE name = 'dave'",
        "UPDATE accounts SET status = 'active' WHERE name = 'dave'",
        "INSERT INTO accounts SELECT 'eve', display_name, roles, status, password_hash, "
        "created_at, updated_at, state_sm3, audit_hash, email FROM accounts WHERE name = 'dave'",
    ],
    ids=["self-granted-role", "re-enabled", "copied-row"],
)
def test_an_account_edited_in_the_database_is_refused(home: Home, tamper: str) -> None:
    seed(home, {"dave": ["operator"]})
    accounts.set_status(home, "dave", False, TEST_ADMIN)
    with state_engine(home).begin() as conn:
        conn.execute(text(tamper))
    name = "eve" if "INSERT" in tamper else "dave"
    with pytest.raises(IntegrityError) as info:
        accounts.get(home, name)
    assert info.value.exit_code == 8


def test_an_older_account_state_restored_in_the_database_is_refused(home: Home) -> None:
    seed(home, {"frank": ["reviewer"]})
    with state_engine(home).connect() as conn:
        old = conn.execute(text("SELECT * FROM accounts WHERE name = 'frank'")).mappings().one()
    accounts.revoke(home, "frank", "reviewer", TEST_ADMIN)
    with state_engine(home).begin() as conn:
        conn.execute(
            text(
                "UPDATE accounts SET roles = :roles, state_sm3 = :s, audit_hash = :h "
                "WHERE name = 'frank'"
            ),
            {"roles": old["roles"], "s": old["state_sm3"], "h": old["audit_hash"]},
        )
    with pytest.raises(IntegrityError, match="older state"):
        accounts.get(home, "frank")


def test_init_creates_the_first_admin_once_and_stores_the_policy(bare_home: Home) -> None:
    first = _shuyu("init", "--admin", "alice")
    assert first.returncode == 0, first.stderr
    alice = accounts.require_account(bare_home, "alice")
    assert alice.roles == ("admin",)
    policy, source = domain_policy.effective_with_source(bare_home)
    assert source.version == 1 and policy.is_service_account(LOGIN)  # the test policy file
    again = _shuyu("init", "--admin", "mallory")
    assert again.returncode == 5 and "already initialized" in again.stderr
    assert accounts.get(bare_home, "mallory") is None
    assert _last(bare_home)["outcome"] == "refused"


def test_the_policy_changes_only_by_an_admin_and_an_edit_in_the_database_stops_gates(
    home: Home, tmp_path: Path
) -> None:
    seed(home, {"root-admin": ["admin"]})
    domain_policy.apply(
        home, domain_policy.load_file(domain_policy.bootstrap_path()), "initial", "root-admin"
    )
    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text(
        f"service_accounts: [{{name: {LOGIN}}}]\nseparation_of_duties: {{enabled: false}}\n",
        encoding="utf-8",
    )
    by_operator = _shuyu("policy", "apply", str(relaxed), "--reason", "faster")
    assert by_operator.returncode == 5 and "may not policy.apply" in by_operator.stderr
    as_admin = {"SHUYU_ACTOR": "root-admin", "SHUYU_ROLE": "admin"}
    no_reason = _shuyu("policy", "apply", str(relaxed), "--reason", "x", env=as_admin)
    assert no_reason.returncode == 4 and "needs a reason" in no_reason.stderr
    relaxed.write_text(
        f"service_accounts: [{{name: {LOGIN}}}]\n"
        "separation_of_duties: {enabled: false, reason: 单人值守试点}\n",
        encoding="utf-8",
    )
    ok = _shuyu("policy", "apply", str(relaxed), "--reason", "pilot", env=as_admin)
    assert ok.returncode == 0, ok.stderr
    assert not domain_policy.effective(home).separation_of_duties.enabled
    entry = _last(home)
    assert entry["action"] == "policy.apply" and "separation_of_duties.enabled" in str(
        entry["details"]["changes"]
    )
    with state_engine(home).begin() as conn:
        conn.execute(
            text(
                "UPDATE domain_policy_versions SET content = replace(content, "
                "'单人值守试点', 'x') WHERE version = 2"
            )
        )
    with pytest.raises(IntegrityError, match="version 2"):
        domain_policy.effective(home)
    stopped = _shuyu("whoami")
    assert stopped.returncode == 8


def test_a_relaxed_policy_without_reason_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("separation_of_duties: {enabled: false}\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="needs a reason"):
        domain_policy.load_file(path)


def test_audit_verify_covers_accounts_and_policy_versions(home: Home) -> None:
    seed(home, {"gina": ["operator"], "root-admin": ["admin"]})
    domain_policy.apply(
        home, domain_policy.load_file(domain_policy.bootstrap_path()), "initial", "root-admin"
    )
    clean = _shuyu("audit", "verify", "--format", "json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["identity_and_policy"] == []
    with state_engine(home).begin() as conn:
        conn.execute(text("UPDATE accounts SET roles = '[\"admin\"]' WHERE name = 'gina'"))
    broken = _shuyu("audit", "verify")
    assert broken.returncode == 8
    assert "account gina was edited in the database" in broken.stderr
    assert _last(home)["outcome"] == "error"
