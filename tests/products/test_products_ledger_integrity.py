"""The tamper-evident ledger: rows anchored in the audit chain, charges on verified state,
breaks held until an admin resolves them from the audit record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from accounts_testkit import act_as, seed
from products_testkit import with_changes
from sqlalchemy import text

from governance import audit
from governance.actors import Actor, set_current
from privacy.dp import ledger
from privacy.dp import ledger_integrity as integrity
from privacy.dp.ledger_integrity import LedgerTampered
from products import engine, specs
from shuyu_core.errors import BudgetExceeded, PermissionDenied
from shuyu_core.home import Home, state_engine

ADMIN = Actor("sec-admin", "admin")
SI = "si_enrolment_report"


def _req(release: str, rho: float, codes: tuple[str, ...] = ("SBCBJF",)) -> ledger.ChargeRequest:
    return ledger.ChargeRequest(
        release_id=release,
        product_id="p",
        version="1.0.0",
        rho=rho,
        delta=1e-7,
        units=dict.fromkeys(codes, "公民身份号码"),
        snapshots={c: "S1" for c in codes},
    )


def _sql(home: Home, *statements: str) -> None:
    """Someone with database rights edits the ledger directly."""
    with state_engine(home).begin() as conn:
        for s in statements:
            conn.execute(text(s))


def _entries(home: Home, action: str) -> list[dict[str, Any]]:
    return [e for e in audit.entries(home) if e["action"] == action]


def _spent(home: Home, code: str = "SBCBJF") -> float:
    doc = ledger.show(home, code)["budgets"][0]
    return float(doc["spent"]["rho"])


def _resolve(home: Home, reason: str = "investigated: direct UPDATE by a DBA") -> dict[str, Any]:
    act_as(home, ADMIN.name, ADMIN.role)
    try:
        return ledger.resolve(home, reason)
    finally:
        set_current(None)


def test_every_row_change_is_anchored_in_the_audit_chain(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0, "RKJBXX": 1.0})
    ledger.charge(home, _req("r1", 0.3, ("SBCBJF", "RKJBXX")))
    ledger.mark(home, "r1", "drawn", drew=True)
    ledger.mark(home, "r1", "stored", release_sm3="ab" * 32)
    anchors = _entries(home, integrity.ANCHOR)
    ops = [(a["object"], a["details"]["op"]) for a in anchors]
    assert ops == [
        ("r1/RKJBXX", "charge"),
        ("r1/SBCBJF", "charge"),
        ("r1/RKJBXX", "state"),
        ("r1/SBCBJF", "state"),
        ("r1/RKJBXX", "state"),
        ("r1/SBCBJF", "state"),
    ]
    # The last anchor of each row is its current canonical content and SM3.
    last = anchors[-1]["details"]
    assert last["row"]["state"] == "stored" and last["row"]["release_sm3"] == "ab" * 32
    assert last["sm3"] == integrity.row_digest(last["row"])
    result = integrity.verify(home)
    assert result.ok and (result.rows, result.anchors) == (2, 6)
    assert audit.verify(home).ok


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("UPDATE dp_ledger SET rho = 0 WHERE entry_id = 'r1/SBCBJF'", "edited"),
        ("DELETE FROM dp_ledger WHERE entry_id = 'r1/SBCBJF'", "deleted"),
        (
            "INSERT INTO dp_ledger SELECT 'x/SBCBJF', 'x', product_id, version, resource, unit,"
            " period, rho, epsilon, delta, snapshots, actor, charged_at, state, draws,"
            " updated_at, release_sm3 FROM dp_ledger WHERE entry_id = 'r1/SBCBJF'",
            "inserted",
        ),
    ],
)
def test_edited_ledger_refuses_the_charge_and_holds_until_resolved(
    home: Home, budgets_file: Callable[..., Path], statement: str, kind: str
) -> None:
    budgets_file({"SBCBJF": 1.0})
    ledger.charge(home, _req("r1", 0.6))
    _sql(home, statement)

    with pytest.raises(LedgerTampered) as info:
        ledger.charge(home, _req("r2", 0.6))
    assert info.value.exit_code == 8 and info.value.audited
    assert kind in info.value.message
    brk = _entries(home, integrity.BREAK)[-1]
    assert brk["object"] == "r2" and brk["outcome"] == "error"
    assert [f["kind"] for f in brk["details"]["findings"]] == [kind]
    assert ledger.entries_for_release(home, "r2") == []  # nothing charged

    # Putting the value back does not lift the hold: an admin must look at it.
    if kind == "edited":
        _sql(home, "UPDATE dp_ledger SET rho = 0.6 WHERE entry_id = 'r1/SBCBJF'")
        assert integrity.verify(home).ok
    with pytest.raises(LedgerTampered, match="unresolved"):
        ledger.charge(home, _req("r2", 0.1))
    refused = _entries(home, "budget.charge")[-1]
    assert (refused["object"], refused["outcome"]) == ("r2", "refused")

    # Only an admin resolves; the operator's attempt is refused and audited.
    with pytest.raises(PermissionDenied):
        ledger.resolve(home, "looks fine to me")
    assert _entries(home, "ledger.resolve")[-1]["outcome"] == "refused"

    doc = _resolve(home)
    line = next(s for s in doc["spent"] if s["resource"] == "SBCBJF")
    assert line["rho_from_audit"] == pytest.approx(0.6)  # the audited charge, never the edit
    assert line["rho_after"] == pytest.approx(0.6)
    entry = _entries(home, integrity.RESOLVE)[-1]
    assert entry["actor"] == "sec-admin" and entry["details"]["reason"].startswith("investigated")
    assert integrity.verify(home).ok and audit.verify(home).ok
    assert [e.entry_id for e in ledger.all_entries(home)] == ["r1/SBCBJF"]
    assert ledger.all_entries(home)[0].rho == pytest.approx(0.6)

    # Charges proceed again, on the restored (audited) spend: 0.6 of 1.0 is gone.
    with pytest.raises(BudgetExceeded, match=r"remaining ρ=0\.4"):
        ledger.charge(home, _req("r2", 0.6))
    ledger.charge(home, _req("r3", 0.4))
    assert _spent(home) == pytest.approx(1.0)


def test_rho_set_to_zero_cannot_buy_an_overspend(
    data_home: Home, budgets_file: Callable[..., Path]
) -> None:
    """The reviewed attack: UPDATE dp_ledger SET rho=0, then build again."""
    budgets_file({"SBCBJF": 0.8, "RKJBXX": 2.0})
    spec = specs.get(SI)
    engine.build(data_home, spec)
    _sql(data_home, "UPDATE dp_ledger SET rho = 0")
    with pytest.raises(LedgerTampered) as info:
        engine.build(data_home, with_changes(spec, version="1.1.9"))
    assert info.value.exit_code == 8
    assert "rho 0.5→0.0" in info.value.message
    assert len(ledger.all_entries(data_home)) == 2  # the second build charged nothing
    brk = _entries(data_home, integrity.BREAK)[-1]
    assert brk["object"].startswith("si_enrolment_report-v1.1.9-")  # the refusal, audited
    _resolve(data_home)
    with pytest.raises(BudgetExceeded):
        engine.build(data_home, with_changes(spec, version="1.1.9"))


def test_a_state_change_never_launders_an_edited_row(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0})
    ledger.charge(home, _req("r1", 0.5))
    _sql(home, "UPDATE dp_ledger SET rho = 0.01 WHERE entry_id = 'r1/SBCBJF'")
    with pytest.raises(LedgerTampered):
        ledger.mark(home, "r1", "drawn", drew=True)
    with pytest.raises(LedgerTampered):
        ledger.void(home, "r1", "test")
    [row] = ledger.all_entries(home)
    assert row.state == "charged"  # not advanced, and the edit was not anchored
    found = integrity.verify(home)
    assert [f.kind for f in found.findings] == ["edited"]


def test_edited_anchor_is_found(home: Home, budgets_file: Callable[..., Path]) -> None:
    budgets_file({"SBCBJF": 1.0})
    ledger.charge(home, _req("r1", 0.5))
    audit.record(home, "after", "x")
    engine_ = state_engine(home)
    with engine_.begin() as conn:
        if engine_.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_guard ON audit_log"))
        conn.exec_driver_sql(
            "UPDATE audit_log SET details = replace(details, '\"rho\":0.5', '\"rho\":0.0')"
            " WHERE action = 'budget.ledger'"
        )
        conn.execute(text("UPDATE dp_ledger SET rho = 0.0"))
    found = integrity.verify(home)
    assert "anchor_edited" in {f.kind for f in found.findings}
    with pytest.raises(LedgerTampered):
        ledger.charge(home, _req("r2", 0.6))
    # The audit record itself is broken: a resolution cannot recompute from it.
    act_as(home, ADMIN.name, ADMIN.role)
    with pytest.raises(LedgerTampered, match="audit chain itself is broken"):
        ledger.resolve(home, "restore")
    set_current(None)


def test_break_in_one_resource_is_scoped_by_the_check_but_held_for_all(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0, "RKJBXX": 1.0})
    ledger.charge(home, _req("a", 0.2, ("RKJBXX",)))
    ledger.charge(home, _req("b", 0.2, ("SBCBJF",)))
    _sql(home, "UPDATE dp_ledger SET rho = 0 WHERE entry_id = 'a/RKJBXX'")
    # A charge of SBCBJF verifies SBCBJF's rows only: it is not the one that finds the edit.
    ledger.charge(home, _req("c", 0.2, ("SBCBJF",)))
    with pytest.raises(LedgerTampered, match="a/RKJBXX edited"):
        ledger.charge(home, _req("d", 0.2, ("RKJBXX",)))
    # Once found, the break holds every charge until resolved.
    with pytest.raises(LedgerTampered, match="unresolved"):
        ledger.charge(home, _req("e", 0.2, ("SBCBJF",)))
    _resolve(home)
    ledger.charge(home, _req("e", 0.2, ("SBCBJF",)))


def test_concurrent_charges_leave_every_row_anchored(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0})
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            ledger.charge(home, _req(f"t{i}", 0.3))
            ledger.mark(home, f"t{i}", "drawn", drew=True)
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    result = integrity.verify(home)
    assert result.ok and (result.rows, result.anchors) == (3, 6)
    assert audit.verify(home).ok


_MAIN = (
    "import sys\n"
    "from pipelines import cli, cli_governance, cli_products\n"
    "cli._register = lambda: (cli_governance.register(cli.app), cli_products.register(cli.app))\n"
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


def test_audit_verify_reports_a_ledger_break_with_exit_8(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0})
    ledger.charge(home, _req("r1", 0.5))
    ok = _shuyu("audit", "verify", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ledger"]["ok"]
    _sql(home, "UPDATE dp_ledger SET rho = 0")
    broken = _shuyu("audit", "verify", "--format", "json")
    assert broken.returncode == 8, broken.stderr
    doc = json.loads(broken.stdout)
    assert doc["ok"] and not doc["ledger"]["ok"]  # the chain is intact, the ledger is not
    assert doc["ledger"]["findings"][0]["kind"] == "edited"
    assert "ledger broken" in broken.stderr
    assert _entries(home, integrity.BREAK)[-1]["details"]["during"] == "audit.verify"
    # The operator cannot resolve it from the command line; an admin account can.
    refused = _shuyu("budget", "resolve", "--reason", "nothing to see")
    assert refused.returncode == 5
    with pytest.raises(LedgerTampered, match="unresolved"):
        ledger.charge(home, _req("r2", 0.1))
    seed(home, {ADMIN.name: [ADMIN.role]})
    done = _shuyu(
        "--actor", ADMIN.name, "--role", "admin", "budget", "resolve", "--reason", "DBA edit"
    )
    assert done.returncode == 0, done.stderr
    assert "restored from the audit record" in done.stdout
    ledger.charge(home, _req("r2", 0.1))
    assert _spent(home) == pytest.approx(0.6)


def test_budget_resolve_command_states_the_audited_spend(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    import typer
    from typer.testing import CliRunner

    from pipelines import cli_products

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        set_current(ADMIN)  # accounts with granted roles arrive separately; act as an admin

    cli_products.register(app)
    seed(home, {ADMIN.name: [ADMIN.role]})
    budgets_file({"SBCBJF": 1.0})
    ledger.charge(home, _req("r1", 0.4))
    _sql(home, "UPDATE dp_ledger SET rho = 0.05")
    with pytest.raises(LedgerTampered):
        ledger.charge(home, _req("r2", 0.4))
    res = CliRunner().invoke(app, ["budget", "resolve", "--reason", "DBA edit", "--format", "json"])
    set_current(None)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [f["kind"] for f in doc["findings"]] == ["edited"]
    assert doc["findings"][0]["found"]["rho"] == pytest.approx(0.05)
    [line] = doc["spent"]
    assert line["rho_from_audit"] == pytest.approx(0.4)
    assert line["rho_in_table_before"] == pytest.approx(0.05)
    assert line["rho_after"] == pytest.approx(0.4)
    assert _spent(home) == pytest.approx(0.4)
