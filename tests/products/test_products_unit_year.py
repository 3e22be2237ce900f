"""The domain policy's ρ ceiling per privacy unit and year binds across every resource that
shares the unit, and is checked under the ledger lock, so concurrent charges cannot pass it
together (trust model II: floors no spec can lower)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from privacy.dp import ledger
from shuyu_core.errors import BudgetExceeded
from shuyu_core.home import Home, state_engine

UNIT = "公民身份号码"


def _req(release: str, rho: float, code: str, ceiling: float) -> ledger.ChargeRequest:
    return ledger.ChargeRequest(
        release_id=release,
        product_id="p",
        version="1.0.0",
        rho=rho,
        delta=1e-7,
        units={code: UNIT},
        snapshots={code: "S1"},
        unit_year_ceiling=ceiling,
    )


def test_the_ceiling_binds_across_resources_sharing_the_unit(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    # Each resource's own budget would allow 3 × 0.5; the person-level ceiling allows 1.0.
    budgets_file({"SBCBJF": 5.0, "RKJBXX": 5.0, "YBJS": 5.0})
    ledger.charge(home, _req("a", 0.5, "SBCBJF", 1.0))
    ledger.charge(home, _req("b", 0.5, "RKJBXX", 1.0))
    with pytest.raises(BudgetExceeded, match="ceiling 1") as info:
        ledger.charge(home, _req("c", 0.5, "YBJS", 1.0))
    assert "every resource sharing the unit" in info.value.message
    assert ledger.entries_for_release(home, "c") == []


def test_a_void_charge_spends_nothing_against_the_ceiling(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 5.0})
    ledger.charge(home, _req("a", 0.8, "SBCBJF", 1.0))
    ledger.void(home, "a", "test: stopped before its draw")
    with state_engine(home).connect() as conn:
        assert ledger.unit_year_spent(conn, {UNIT}, ledger.dt.datetime.now(ledger.dt.UTC).year) == {
            UNIT: 0.0
        }
    assert not ledger.charge(home, _req("b", 0.9, "SBCBJF", 1.0)).reused


def test_concurrent_charges_never_pass_the_ceiling_together(
    home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 10.0, "RKJBXX": 10.0})
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        barrier.wait()
        code = "SBCBJF" if i % 2 else "RKJBXX"
        try:
            ledger.charge(home, _req(f"r{i}", 0.3, code, 1.0))
            result = "ok"
        except BudgetExceeded:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes.count("ok") == 3 and outcomes.count("refused") == 5
    with state_engine(home).connect() as conn:
        year = ledger.dt.datetime.now(ledger.dt.UTC).year
        assert ledger.unit_year_spent(conn, {UNIT}, year)[UNIT] == pytest.approx(0.9)
