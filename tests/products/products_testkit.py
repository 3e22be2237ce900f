"""Helpers shared by the products tests (imported by conftest.py and the test files)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import polars as pl

from catalogs.product_models import ProductSpec
from pipelines.ingest import ingest_path
from products import specs
from shuyu_core.home import Home

AS_OF = dt.date(2026, 1, 15)


@functools.cache
def frames(persons: int = 3000, seed: int = 7) -> dict[str, pl.DataFrame]:
    from synthetic_data.generate import generate_frames

    out, _defects = generate_frames(persons=persons, seed=seed, defect_rate=0.0, as_of=AS_OF)
    return out


def ingest_frames(home: Home, data: dict[str, pl.DataFrame], codes: list[str]) -> None:
    src = home.root / "sources"
    src.mkdir(parents=True, exist_ok=True)
    for code in codes:
        path = src / f"{code}.parquet"
        data[code].write_parquet(path)
        ingest_path(home, code, path)


def with_changes(spec: ProductSpec, **changes: Any) -> ProductSpec:
    """A validated copy of ``spec`` with top-level fields replaced."""
    data = spec.model_dump(mode="json")
    data.update(changes)
    return specs.parse(data, "test")


# --- child processes ----------------------------------------------------------------------
# Concurrency tests run their workers in separate processes from a forkserver that has
# imported these modules once (a spawn per worker would re-import SQLAlchemy, polars and
# OpenDP: seconds each on a shared 2-core machine). The forkserver forks before polars has
# started any thread, unlike a plain fork of the pytest process.
PRELOAD = [
    "products_testkit",
    "privacy.dp.ledger",
    "products.engine",
    "products.language.builder",
    "opendp.prelude",
]


def process_context() -> Any:
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _child_env(root: str, budgets: str, actor: str) -> Home:
    import os

    from shuyu_core.db import reset_engines

    os.environ["SHUYU_HOME"] = root
    os.environ["SHUYU_BUDGETS"] = budgets
    # Each child acts for an account the parent seeded, as a Prefect worker (a service
    # account of the test policy) acts for the person who triggered it.
    os.environ["SHUYU_ACTOR"] = actor
    os.environ["SHUYU_ROLE"] = "operator"
    # SHUYU_DATABASE_URL stays as inherited: the parent's state database (SQLite or PostgreSQL).
    reset_engines()
    return Home.from_env()


def child_charge(root: str, budgets: str, i: int, rho: float, barrier: Any, out: Any) -> None:
    """Worker: charge ``rho`` for release ``p<i>``; report ok or refused."""
    from privacy.dp import ledger
    from shuyu_core.errors import BudgetExceeded

    home = _child_env(root, budgets, f"proc-{i}")
    req = ledger.ChargeRequest(
        release_id=f"p{i}",
        product_id="p",
        version="1.0.0",
        rho=rho,
        delta=1e-7,
        units={"SBCBJF": "公民身份号码"},
        snapshots={"SBCBJF": "S1"},
    )
    barrier.wait()
    try:
        ledger.charge(home, req)
        out.put((i, "ok"))
    except BudgetExceeded:
        out.put((i, "refused"))


def child_build(root: str, budgets: str, version: str, barrier: Any, out: Any) -> None:
    """Worker: build the statistical report under spec ``version``; report the outcome."""
    from products import engine
    from shuyu_core.errors import BudgetExceeded

    home = _child_env(root, budgets, f"proc-{version}")
    spec = with_changes(specs.get("si_enrolment_report"), version=version)
    barrier.wait()
    try:
        out.put((version, engine.build(home, spec).release_id))
    except BudgetExceeded:
        out.put((version, "refused"))
