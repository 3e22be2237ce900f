"""`shuyu ops check`: each check can fail, and the command is gated and audited."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from accounts_testkit import seed
from sqlalchemy import text

from governance import audit
from pipelines.ops_health import FAIL, OK, WARN, run_checks
from pipelines.ops_stack import free_port
from shuyu_core import keys
from shuyu_core.home import Home, state_engine


def _by_name(home: Home) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in run_checks(home)}


def test_checks_pass_on_a_prepared_domain_and_name_what_is_missing(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for name in ("PSEUDONYM", "SM4"):
        monkeypatch.delenv(f"SHUYU_{name}_KEY", raising=False)
        monkeypatch.delenv(f"SHUYU_{name}_KEY_FILE", raising=False)
    got = _by_name(home)
    assert got["keys"][0] == FAIL and "pseudonym key missing" in got["keys"][1]
    for name in ("home", "state database", "audit chain", "catalog", "domain policy"):
        assert got[name][0] == OK, (name, got[name])
    assert got["prefect api"][0] == WARN

    for name in (keys.PSEUDONYM, keys.ENCRYPTION):
        keys.init_key(home, name)
    assert _by_name(home)["keys"][0] == OK
    os.chmod(keys.key_path(home, keys.ENCRYPTION), 0o644)
    status, detail = _by_name(home)["keys"]
    assert status == FAIL and "mode 644" in detail


def test_a_tampered_audit_chain_fails_the_check(home: Home) -> None:
    audit.record(home, "probe", "x", "ok", {"n": 1})
    engine = state_engine(home)
    with engine.begin() as conn:  # a database owner drops the guards, then edits a row
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_guard ON audit_log"))
        conn.execute(text("UPDATE audit_log SET object = 'y' WHERE action = 'probe'"))
    status, detail = _by_name(home)["audit chain"]
    assert status == FAIL and "broken" in detail


def test_an_unreachable_prefect_api_and_a_broken_home_fail(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    assert _by_name(home)["prefect api"][0] == FAIL
    # A zone replaced by a file (a broken mount, a stray copy): not writable, whoever runs.
    shutil.rmtree(home.published)
    home.published.write_text("not a zone", encoding="utf-8")
    status, detail = _by_name(home)["home"]
    assert status == FAIL and "published" in detail


def _without_keys(env: os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not (k.startswith("SHUYU_") and "_KEY" in k)}


def _shuyu(home: Home, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        env={**_without_keys(os.environ), "SHUYU_HOME": str(home.root), "COLUMNS": "200", **env},
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_ops_check_command_exits_nonzero_on_failure_and_is_gated(home: Home) -> None:
    done = _shuyu(home, "ops", "check", PREFECT_API_URL="")
    assert done.returncode == 1, done.stderr
    assert "keys" in done.stdout and "fail" in done.stdout
    entries = [e for e in audit.tail(home, 100) if e["action"] == "ops.check"]
    assert entries[-1]["outcome"] == "error" and "keys" in entries[-1]["details"]["failed"]

    seed(home, {"rita": ["reviewer"]})
    refused = _shuyu(home, "ops", "check", SHUYU_ACTOR="rita", SHUYU_ROLE="reviewer")
    assert refused.returncode == 5 and "ops.check" in refused.stderr
    last = audit.tail(home, 1)[0]
    assert last["actor"] == "rita" and last["outcome"] == "refused"


def test_doctor_with_health_runs_the_ops_checks_too(home: Home) -> None:
    import json

    plain = _shuyu(home, "doctor", "--format", "json", PREFECT_API_URL="")
    assert plain.returncode == 0, plain.stderr
    assert "health" not in json.loads(plain.stdout)  # recovery scan only

    done = _shuyu(home, "doctor", "--health", "--format", "json", PREFECT_API_URL="")
    assert done.returncode == 1, done.stderr  # no keys yet
    doc = json.loads(done.stdout)
    assert doc["recorded"] == []
    assert {r["name"]: r["status"] for r in doc["health"]}["keys"] == FAIL
    assert "health check failed: keys" in done.stderr
    entries = [e for e in audit.tail(home, 100) if e["action"] == "ops.check"]
    assert entries[-1]["outcome"] == "error" and entries[-1]["details"]["failed"] == ["keys"]

    for name in (keys.PSEUDONYM, keys.ENCRYPTION):
        keys.init_key(home, name)
    fine = _shuyu(home, "doctor", "--health", PREFECT_API_URL="")
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "nothing left by interrupted runs" in fine.stdout and "keys" in fine.stdout
