"""The privacy-budget ledger: atomic check-and-charge, refusal, idempotence, concurrency."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from accounts_testkit import seed
from products_testkit import child_charge, process_context
from sqlalchemy import select

from catalogs.product_models import epsilon_from_rho, rho_from_epsilon
from governance.audit import audit_log
from privacy.dp import ledger
from shuyu_core.db import reset_engines
from shuyu_core.errors import BudgetExceeded, ValidationError
from shuyu_core.home import Home, state_engine


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


def test_charge_records_one_entry_per_resource_and_is_idempotent(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0, "RKJBXX": 1.0})
    first = ledger.charge(home, _req("r1", 0.3, ("SBCBJF", "RKJBXX")))
    assert not first.reused
    assert sorted(e.resource for e in first.entries) == ["RKJBXX", "SBCBJF"]
    again = ledger.charge(home, _req("r1", 0.3, ("SBCBJF", "RKJBXX")))
    assert again.reused
    assert [e.entry_id for e in again.entries] == [e.entry_id for e in first.entries]
    doc = ledger.show(home)
    spent = {b["resource"]: b["spent"]["rho"] for b in doc["budgets"]}
    assert spent == {"RKJBXX": pytest.approx(0.3), "SBCBJF": pytest.approx(0.3)}
    assert [e.release_id for e in ledger.entries_for_release(home, "r1")] == ["r1", "r1"]
    assert ledger.entries_for_release(home, "unknown") == []


def test_refusal_says_what_remains_and_charges_nothing(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0, "RKJBXX": 0.5})
    ledger.charge(home, _req("r1", 0.4, ("SBCBJF", "RKJBXX")))
    with pytest.raises(BudgetExceeded) as err:
        ledger.charge(home, _req("r2", 0.2, ("SBCBJF", "RKJBXX")))
    msg = err.value.message
    assert "RKJBXX" in msg and "remaining ρ=0.1" in msg and "asks ρ=0.2" in msg
    assert err.value.audited
    # All or nothing: SBCBJF had room but was not charged either.
    doc = {b["resource"]: b for b in ledger.show(home)["budgets"]}
    assert doc["SBCBJF"]["spent"]["rho"] == pytest.approx(0.4)
    assert doc["SBCBJF"]["releases"] == 1
    with state_engine(home).connect() as conn:
        refused = conn.execute(
            select(audit_log.c.object).where(
                audit_log.c.action == "budget.charge", audit_log.c.outcome == "refused"
            )
        ).all()
    assert [r[0] for r in refused] == ["r2"]


def test_unbudgeted_resource_is_a_clear_error(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.0})
    with pytest.raises(ValidationError, match="no privacy budget declared for YBJS"):
        ledger.charge(home, _req("r1", 0.1, ("YBJS",)))


def test_show_json_contract(home: Home, budgets_file: Callable[..., Path]) -> None:
    budgets_file({"SBCBJF": 2.0, "SCZTDJ": 1.0})
    ledger.charge(home, _req("a", 0.5))
    ledger.charge(home, _req("b", 0.25))
    doc = json.loads(json.dumps(ledger.show(home)))
    assert set(doc) == {"budgets"}
    for b in doc["budgets"]:
        assert set(b) == {"resource", "unit", "total", "spent", "remaining", "releases"}
        assert {"rho", "epsilon", "delta"} <= set(b["total"])
    sb = next(b for b in doc["budgets"] if b["resource"] == "SBCBJF")
    assert sb["unit"] == "公民身份号码"
    assert sb["releases"] == 2
    assert sb["spent"]["rho"] == pytest.approx(0.75)
    assert sb["remaining"]["rho"] == pytest.approx(1.25)
    assert sb["remaining"]["epsilon"] == pytest.approx(epsilon_from_rho(1.25, 1e-6))
    only = ledger.show(home, "SCZTDJ")["budgets"]
    assert [b["resource"] for b in only] == ["SCZTDJ"] and only[0]["releases"] == 0


def test_zcdp_conversion_round_trip() -> None:
    for eps, delta in ((1.0, 1e-6), (5.0, 1e-9), (0.1, 1e-5)):
        rho = rho_from_epsilon(eps, delta)
        assert epsilon_from_rho(rho, delta) == pytest.approx(eps, rel=1e-12)
    # Bun & Steinke: ε = ρ + 2·sqrt(ρ·ln(1/δ))
    assert epsilon_from_rho(0.5, 1e-6) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)))


def test_eight_threads_never_overspend(home: Home, budgets_file: Callable[..., Path]) -> None:
    budgets_file({"SBCBJF": 1.0})
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            ledger.charge(home, _req(f"t{i}", 0.3))
            result = "ok"
        except BudgetExceeded:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 3 and outcomes.count("refused") == 5
    spent = ledger.show(home)["budgets"][0]["spent"]["rho"]
    assert spent == pytest.approx(0.9) and spent <= 1.0


def test_eight_processes_never_overspend(home: Home, budgets_file: Callable[..., Path]) -> None:
    path = budgets_file({"SBCBJF": 1.1})
    seed(home, {f"proc-{i}": ["operator"] for i in range(8)})
    ledger.show(home)  # tables exist before the children start
    reset_engines()
    ctx = process_context()
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=child_charge, args=(str(home.root), str(path), i, 0.25, barrier, out))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in range(8))
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * 8
    assert sorted(results.values()) == ["ok"] * 4 + ["refused"] * 4
    entries = ledger.all_entries(home, "SBCBJF")
    assert sorted(e.release_id for e in entries) == sorted(
        f"p{i}" for i, r in results.items() if r == "ok"
    )
    assert sum(e.rho for e in entries) == pytest.approx(1.0)
    assert len({e.actor for e in entries}) == 4  # written by four different processes
