"""The governance CLI: in-process through typer's CliRunner, exit codes through `main`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from accounts_testkit import seed
from typer.testing import CliRunner

from governance import audit
from governance.actors import Request, set_current, set_request
from pipelines.cli_governance import register
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home, state_engine

# Run the real entry point with only the governance commands registered, so exit codes and
# error lines are those a user sees.
_MAIN = (
    "import sys\n"
    "from pipelines import cli, cli_governance\n"
    "cli._register = lambda: cli_governance.register(cli.app)\n"
    "sys.argv = ['shuyu', *sys.argv[1:]]\n"
    "cli.main()\n"
)


def _shuyu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _global(
        actor: str | None = typer.Option(None, "--actor"),
        role: str | None = typer.Option(None, "--role"),
    ) -> None:
        set_request(Request(actor, role))

    register(app)
    return app


runner = CliRunner()


@pytest.fixture(autouse=True)
def _reset_actor() -> Iterator[None]:
    yield
    set_current(None)  # the callback set an actor for this context; later tests use the env


def test_audit_verify_exit_codes(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = audit.verify(home).entries  # the accounts' own entries
    for i in range(5):
        audit.record(home, "cli.test", f"o{i}")
    ok = _shuyu("audit", "verify", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["entries"] == seeded + 5
    with state_engine(home).begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER audit_log_retention")
        conn.exec_driver_sql("DELETE FROM audit_log WHERE seq = 3")
    broken = _shuyu("audit", "verify")
    assert broken.returncode == 8
    assert "audit chain broken at entry 3 (deleted)" in broken.stderr
    last = audit.tail(home, 1)[0]
    assert (last["action"], last["outcome"]) == ("audit.verify", "error")
    seed(home, {"su-ga": ["source_unit:SU-GA"]})
    monkeypatch.setenv("SHUYU_ACTOR", "su-ga")
    monkeypatch.delenv("SHUYU_ROLE")
    refused = _shuyu("audit", "verify")
    assert refused.returncode == 5 and "may not audit.read" in refused.stderr


def test_agreements_check_and_list(home: Home) -> None:
    app = _app()
    result = runner.invoke(app, ["agreements", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    ids = {a["id"] for a in json.loads(result.stdout)["agreements"]}
    assert {"OA-2025-001", "DA-2025-001"} <= ids
    ok = runner.invoke(
        app,
        [
            "agreements",
            "check",
            "--agreement",
            "DA-2025-001",
            "--scenario",
            "identity-verification",
            "--input",
            "RKJBXX:公民身份号码,姓名",
            "--purpose",
            "industry",
            "--developer",
            "dev-001",
            "--at",
            "2025-06-01",
            "--format",
            "json",
        ],
    )
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    bad = runner.invoke(
        app,
        [
            "agreements",
            "check",
            "--agreement",
            "DA-2025-001",
            "--scenario",
            "identity-verification",
            "--input",
            "RKJBXX:公民身份号码,联系电话",
            "--purpose",
            "industry",
            "--at",
            "2025-06-01",
        ],
    )
    assert isinstance(bad.exception, PermissionDenied)
    assert "field_out_of_scope" in bad.exception.message and "联系电话" in bad.stdout
    assert runner.invoke(app, ["agreements", "validate"]).exit_code == 0
    shown = runner.invoke(app, ["agreements", "show", "OA-2025-001", "--format", "json"])
    assert json.loads(shown.stdout)["term"] == {"start": "2025-01-01", "end": "2029-12-31"}


def test_keys_consent_and_blacklist(home: Home, tmp_path: Path) -> None:
    app = _app()
    result = runner.invoke(app, ["keys", "init"])
    assert result.exit_code == 0 and "created" in result.stdout
    assert (home.root / "keys" / "pseudonym.key").exists()
    assert (home.root / "keys" / "sm4.key").exists()
    assert "exists, kept" in runner.invoke(app, ["keys", "init"]).stdout

    path = tmp_path / "c.csv"
    path.write_text(
        "subject_id,granted_at,expires_at,evidence_ref\n"
        "210802198512010025,2025-01-01,2027-12-31,EV-1\n",
        encoding="utf-8",
    )
    imported = runner.invoke(
        app,
        ["consent", "import", str(path), "--purpose", "identity-verification", "--format", "json"],
    )
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["added"] == 1
    listed = runner.invoke(
        app, ["consent", "list", "--subject", "210802198512010025", "--format", "json"]
    )
    [row] = json.loads(listed.stdout)["consents"]
    assert row["purpose"] == "identity-verification" and "210802198512010025" not in listed.stdout
    assert runner.invoke(app, ["consent", "revoke", "--id", str(row["id"])]).exit_code == 0
    denied = runner.invoke(app, ["--role", "reviewer", "consent", "import", str(path)])
    assert isinstance(denied.exception, PermissionDenied)

    bl = runner.invoke(app, ["blacklist", "list", "--format", "json"])
    assert bl.exit_code == 0 and json.loads(bl.stdout)["entries"][0]["developer"] == "dev-099"


def test_audit_tail_and_export(home: Home, tmp_path: Path) -> None:
    app = _app()
    seeded = audit.verify(home).entries  # the accounts' own entries
    for i in range(3):
        audit.record(home, "cli.test", f"o{i}")
    tail = runner.invoke(app, ["audit", "tail", "-n", "2", "--format", "json"])
    assert [e["object"] for e in json.loads(tail.stdout)] == ["o1", "o2"]
    out = tmp_path / "audit.jsonl"
    result = runner.invoke(app, ["audit", "export", "--since", "2000-01-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert (
        len(lines) == seeded + 3
    )  # reading the tail writes no entry; the export records itself after
    assert audit.verify_lines(iter(lines)) == (True, "ok")
    assert audit.tail(home, 1)[0]["action"] == "audit.export"
    refused = runner.invoke(app, ["audit", "purge", "--before", "2099-01-01"])
    assert isinstance(refused.exception, PermissionDenied)
