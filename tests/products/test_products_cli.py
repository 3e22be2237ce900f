"""CLI: build prints the release id, budget show JSON contract, products list, releases show."""

from __future__ import annotations

import json

import pytest
import typer
from accounts_testkit import act_as
from typer.testing import CliRunner

from governance.actors import set_current, set_request
from pipelines import cli_products
from shuyu_core.home import Home


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        set_request(None)  # resolved from the accounts, as the real CLI does

    cli_products.register(app)
    return app


def test_build_budget_and_release_commands(data_home: Home) -> None:
    runner = CliRunner()
    app = _app()
    res = runner.invoke(app, ["build", "si_enrolment_report"])
    assert res.exit_code == 0, res.output
    release_id = res.stdout.strip().splitlines()[-1]
    assert release_id.startswith("si_enrolment_report-v1.1.0-")

    res = runner.invoke(app, ["build", "si_enrolment_report", "--format", "json"])
    doc = json.loads(res.stdout)
    assert doc["release"] == release_id and doc["reused"] is True

    res = runner.invoke(app, ["budget", "show", "--format", "json", "--period", "2025"])
    assert res.exit_code == 0, res.output
    budgets = json.loads(res.stdout)
    assert set(budgets) == {"budgets"}
    sb = next(b for b in budgets["budgets"] if b["resource"] == "SBCBJF")
    assert set(sb) == {"resource", "unit", "total", "spent", "remaining", "releases"}
    assert sb["releases"] == 1 and sb["spent"]["rho"] == 0.5

    res = runner.invoke(app, ["budget", "show", "SCZTDJ", "--format", "json"])
    assert [b["resource"] for b in json.loads(res.stdout)["budgets"]] == ["SCZTDJ"]

    res = runner.invoke(app, ["releases", "show", release_id, "--format", "json"])
    manifest = json.loads(res.stdout)
    assert manifest["release_id"] == release_id and manifest["budget"]["rho"] == 0.5

    res = runner.invoke(app, ["releases", "show", release_id])
    assert res.exit_code == 0 and "inputs" in res.stdout

    res = runner.invoke(app, ["products", "list", "--format", "json"])
    listed = {p["id"]: p for p in json.loads(res.stdout)["products"]}
    assert listed["si_enrolment_report"]["latest_release"] == release_id
    assert listed["identity_verification"]["releases"] == 0


def test_developer_may_not_read_budgets(data_home: Home) -> None:
    runner = CliRunner()
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        act_as(data_home, "dev", "developer:dev-001")

    cli_products.register(app)
    try:
        res = runner.invoke(app, ["budget", "show"])
    finally:
        set_current(None)  # the actor is a context variable: restore it
    assert res.exit_code != 0
    assert "may not budget.read" in str(res.exception)


class _Tty:
    def isatty(self) -> bool:
        return True


def test_build_prints_the_charge_and_asks_only_at_a_terminal(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privacy.dp import ledger

    runner = CliRunner()
    app = _app()
    # At a terminal, answering no: nothing is charged, nothing built.
    asked: list[str] = []

    def no(text: str, default: bool = False) -> bool:
        asked.append(text)
        return False

    with monkeypatch.context() as mp:  # undo only these (the fixtures' env stays)
        mp.setattr(cli_products.typer, "confirm", no)
        mp.setattr("sys.stdin", _Tty())
        mp.setattr("sys.stdout", _Tty())
        assert cli_products._confirm_charge("si_enrolment_report", yes=False, quiet=True) is False
        assert asked and ledger.all_entries(data_home) == []
        assert cli_products._confirm_charge("si_enrolment_report", yes=True, quiet=True) is True
    # Without a terminal (CI, scripts) it never waits: it prints the charge and builds.
    res = runner.invoke(app, ["build", "si_enrolment_report"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the console wraps long lines
    assert "will charge ρ=0.5" in text and "period 2025" in text
    assert "remaining ρ=2 → 1.5" in text
    assert len(ledger.all_entries(data_home)) == 2


def test_products_plan_prints_half_widths_and_charges_nothing(data_home: Home) -> None:
    from privacy.dp import ledger

    res = CliRunner().invoke(
        _app(),
        ["products", "plan", "si_enrolment_report", "--target", "insured=5", "--format", "json"],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    rows = {(m["table"], m["measure"]): m for m in doc["measures"]}
    insured = rows[("contribution_base_by_district", "insured")]
    assert insured["half_width"] > 0 and 0.95 <= insured["level"] < 1
    assert insured["target"] == 5 and insured["rho_needed"] > 0
    assert {b["resource"] for b in doc["budget"]} == {"SBCBJF", "RKJBXX"}
    assert ledger.all_entries(data_home) == []
    bad = CliRunner().invoke(_app(), ["products", "plan", "si_enrolment_report", "--target", "x"])
    assert bad.exit_code != 0
