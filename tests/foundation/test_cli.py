"""The command line: help everywhere, one-line errors with non-zero exits, audit of failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from shuyu_core.home import Home


def shuyu(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHUYU_HOME": str(home.root), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _all_command_paths() -> list[list[str]]:
    from pipelines import cli

    cli._register()
    root = typer.main.get_command(cli.app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        subcommands = getattr(cmd, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_has_help() -> None:
    from pipelines import cli

    runner = CliRunner()
    paths = _all_command_paths()
    assert ["ingest"] in paths and ["catalog", "list"] in paths
    for path in paths:
        result = runner.invoke(cli.app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_user_error_is_one_line_nonzero_and_audited(home: Home, tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    pl.DataFrame({"公民身份号码": ["x"]}).write_csv(src)
    result = shuyu(home, "ingest", "RKJBXX", "--from", str(src))
    assert result.returncode == 4
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "fix:" in lines[0]
    assert "Traceback" not in result.stderr
    exported = shuyu(home, "catalog", "show", "NOPE")
    assert exported.returncode == 3
    assert "unknown resource 'NOPE'" in exported.stderr


def test_debug_shows_the_traceback(home: Home) -> None:
    result = shuyu(home, "--debug", "catalog", "show", "NOPE")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_catalog_commands(home: Home, tmp_path: Path) -> None:
    listed = shuyu(home, "catalog", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    codes = [r["code"] for r in json.loads(listed.stdout)["resources"]]
    assert codes == ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"]
    out = tmp_path / "datapackage.json"
    exported = shuyu(home, "catalog", "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(json.loads(out.read_text(encoding="utf-8"))["resources"]) == 4
    assert shuyu(home, "catalog", "validate").returncode == 0


def test_a_role_the_account_was_not_granted_is_refused(home: Home) -> None:
    result = shuyu(home, "--role", "admin", "budget", "show")
    assert result.returncode == 5
    assert "does not hold role admin" in result.stderr


@pytest.mark.parametrize("args", [["ingest", "RKJBXX"], ["nonexistent-command"]])
def test_usage_errors_exit_2(home: Home, args: list[str]) -> None:
    assert shuyu(home, *args).returncode == 2


def test_ingest_checks_the_new_snapshot_unless_told_not_to(home: Home, tmp_path: Path) -> None:
    from quality.api import latest_result
    from shuyu_core import snapshots
    from synthetic_data.generate import generate_frames

    frames, _ = generate_frames(persons=300, seed=3, defect_rate=0.05)
    src = tmp_path / "SCZTDJ.parquet"
    frames["SCZTDJ"].write_parquet(src)

    skipped = shuyu(home, "ingest", "SCZTDJ", "--from", str(src), "--no-check")
    assert skipped.returncode == 0, skipped.stderr
    first = snapshots.latest(home, "SCZTDJ")
    assert first is not None and latest_result(home, "SCZTDJ", first.snapshot_id) is None

    checked = shuyu(home, "ingest", "SCZTDJ", "--from", str(src))
    assert checked.returncode == 0, checked.stderr
    second = snapshots.latest(home, "SCZTDJ")
    assert second is not None and second.snapshot_id != first.snapshot_id
    assert latest_result(home, "SCZTDJ", second.snapshot_id) is not None
    assert "quality:" in checked.stdout
