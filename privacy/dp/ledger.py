"""The privacy-budget ledger (隐私预算台账) in the state database.

Budgets: per resource and privacy unit, a total ρ (zCDP) per period, declared in
``catalogs/budgets.yaml`` (or the file named by ``SHUYU_BUDGETS``). The table ``dp_budget``
mirrors the total in force when a charge was made, so the database alone shows what was
allowed.

Entries: one per release and input resource in ``dp_ledger``, keyed by the release id. A
charge is an atomic check-and-charge in one transaction that holds the write lock (SQLite
``BEGIN IMMEDIATE``; PostgreSQL ``LOCK TABLE … IN EXCLUSIVE MODE``), so concurrent builds in
threads or processes serialize and never overspend. Charging the same release id again
returns the existing entries: a retry or a resumed build never pays twice.

Composition: zCDP ρ adds up over the releases of a period (sequential composition). The
equivalent (ε, δ)-DP guarantee at the budget's δ is ε = ρ + 2·sqrt(ρ·ln(1/δ)); ε is shown for
reading but never summed, because ε values of zCDP releases do not add up linearly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection

from catalogs.loading import load_model
from catalogs.product_models import epsilon_from_rho
from governance.actors import current_actor
from governance.audit import record
from shuyu_core.db import METADATA
from shuyu_core.errors import BudgetExceeded, NotFoundError, ValidationError
from shuyu_core.home import Home, state_engine

PACKAGED_BUDGETS = Path(__file__).resolve().parents[2] / "catalogs" / "budgets.yaml"
# Float sums of ρ: allow the rounding of a few hundred additions, nothing more.
_SLACK = 1e-9

LedgerState = Literal["charged", "drawn", "stored"]

dp_budget = Table(
    "dp_budget",
    METADATA,
    Column("resource", String(64), primary_key=True),
    Column("unit", String(200), primary_key=True),
    Column("period", String(32), primary_key=True),
    Column("total_rho", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("source", String(1000), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

dp_ledger = Table(
    "dp_ledger",
    METADATA,
    Column("entry_id", String(300), primary_key=True),
    Column("release_id", String(200), nullable=False, index=True),
    Column("product_id", String(100), nullable=False),
    Column("version", String(40), nullable=False),
    Column("resource", String(64), nullable=False),
    Column("unit", String(200), nullable=False),
    Column("period", String(32), nullable=False),
    Column("rho", Float, nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("snapshots", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("charged_at", DateTime(timezone=True), nullable=False),
    Column("state", String(20), nullable=False),
    Column("draws", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("release_id", "resource", name="uq_dp_ledger_release_resource"),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetLine(_Strict):
    resource: str
    unit: str
    rho: float = Field(gt=0)
    delta: float = Field(default=1e-6, gt=0, lt=1e-3)


class BudgetPolicy(_Strict):
    period: Literal["year", "quarter", "month", "total"] = "year"
    budgets: list[BudgetLine] = Field(default_factory=list)

    def line(self, resource: str, unit: str) -> BudgetLine | None:
        return next((b for b in self.budgets if b.resource == resource and b.unit == unit), None)

    def period_key(self, at: dt.datetime) -> str:
        if self.period == "year":
            return f"{at.year}"
        if self.period == "quarter":
            return f"{at.year}Q{(at.month - 1) // 3 + 1}"
        if self.period == "month":
            return f"{at.year}-{at.month:02d}"
        return "all"


def budgets_path() -> Path:
    env = os.environ.get("SHUYU_BUDGETS")
    return Path(env) if env else PACKAGED_BUDGETS


def load_policy(path: Path | None = None) -> BudgetPolicy:
    target = path or budgets_path()
    if not target.exists():
        raise NotFoundError(
            f"budget file {target} does not exist",
            hint="set SHUYU_BUDGETS to a budgets YAML (see docs/products.md)",
        )
    policy = load_model(BudgetPolicy, target)
    keys = [(b.resource, b.unit) for b in policy.budgets]
    dupes = sorted({f"{r}/{u}" for r, u in keys if keys.count((r, u)) > 1})
    if dupes:
        raise ValidationError(
            f"{target}: budget(s) {', '.join(dupes)} declared twice", hint="keep one line each"
        )
    return policy


class LedgerEntry(_Strict):
    entry_id: str
    release_id: str
    product_id: str
    version: str
    resource: str
    unit: str
    period: str
    rho: float
    epsilon: float
    delta: float
    snapshots: dict[str, str]
    actor: str
    charged_at: dt.datetime
    state: LedgerState
    draws: int


@dataclass(frozen=True)
class ChargeRequest:
    release_id: str
    product_id: str
    version: str
    rho: float
    delta: float
    units: dict[str, str]  # resource code -> privacy unit field
    snapshots: dict[str, str]  # resource code -> snapshot id


@dataclass(frozen=True)
class ChargeResult:
    entries: list[LedgerEntry]
    reused: bool


def _entry(row: Any) -> LedgerEntry:
    m = row._mapping
    charged = m["charged_at"]
    if charged.tzinfo is None:  # SQLite drops the zone; every timestamp here is UTC
        charged = charged.replace(tzinfo=dt.UTC)
    return LedgerEntry(
        entry_id=m["entry_id"],
        release_id=m["release_id"],
        product_id=m["product_id"],
        version=m["version"],
        resource=m["resource"],
        unit=m["unit"],
        period=m["period"],
        rho=m["rho"],
        epsilon=m["epsilon"],
        delta=m["delta"],
        snapshots=json.loads(m["snapshots"]),
        actor=m["actor"],
        charged_at=charged,
        state=m["state"],
        draws=m["draws"],
    )


def _begin_exclusive(conn: Connection) -> None:
    """Take the ledger's write lock before reading what was spent (check-then-charge)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
        conn.execute(text("LOCK TABLE dp_ledger IN EXCLUSIVE MODE"))


def _spent(conn: Connection, resource: str, unit: str, period: str) -> tuple[float, int]:
    row = conn.execute(
        select(func.coalesce(func.sum(dp_ledger.c.rho), 0.0), func.count()).where(
            dp_ledger.c.resource == resource,
            dp_ledger.c.unit == unit,
            dp_ledger.c.period == period,
        )
    ).one()
    return float(row[0]), int(row[1])


def _sync_budget(
    conn: Connection, line: BudgetLine, period: str, source: str, now: dt.datetime
) -> None:
    key = (
        (dp_budget.c.resource == line.resource)
        & (dp_budget.c.unit == line.unit)
        & (dp_budget.c.period == period)
    )
    values = {"total_rho": line.rho, "delta": line.delta, "source": source, "updated_at": now}
    if conn.execute(select(dp_budget.c.resource).where(key)).first() is None:
        conn.execute(
            dp_budget.insert().values(
                resource=line.resource, unit=line.unit, period=period, **values
            )
        )
    else:
        conn.execute(dp_budget.update().where(key).values(**values))


def charge(home: Home, req: ChargeRequest, now: dt.datetime | None = None) -> ChargeResult:
    """Check every input resource's remaining budget and charge ``req.rho`` to each, atomically.

    Idempotent per release id: if entries for ``req.release_id`` exist they are returned and
    nothing is charged. Refuses (BudgetExceeded, audited) when any resource lacks room; then
    nothing is charged at all.
    """
    if req.rho <= 0:
        raise ValidationError(
            f"release {req.release_id}: ρ must be positive", hint="fix the spec's budget"
        )
    policy = load_policy()
    at = now or dt.datetime.now(dt.UTC)
    period = policy.period_key(at)
    actor = current_actor()
    engine = state_engine(home)
    refusal: BudgetExceeded | None = None
    reused = False
    with engine.connect() as conn:
        _begin_exclusive(conn)
        try:
            rows = conn.execute(
                select(dp_ledger).where(dp_ledger.c.release_id == req.release_id)
            ).all()
            if rows:
                reused = True
                entries = [_entry(r) for r in rows]
                conn.commit()
            else:
                lines: list[BudgetLine] = []
                for code, unit in sorted(req.units.items()):
                    line = policy.line(code, unit)
                    if line is None:
                        raise ValidationError(
                            f"no privacy budget declared for {code} (unit {unit}) in "
                            f"{budgets_path()}",
                            hint=f"add a line for {code}/{unit} to the budgets file",
                        )
                    _sync_budget(conn, line, period, str(budgets_path()), at)
                    spent, _n = _spent(conn, code, unit, period)
                    remaining = line.rho - spent
                    if req.rho > remaining + _SLACK:
                        left = max(remaining, 0.0)
                        refusal = BudgetExceeded(
                            f"privacy budget of {code} (unit {unit}, period {period}) is "
                            f"insufficient: release {req.release_id} asks ρ={req.rho:g}, "
                            f"remaining ρ={left:.6g} (ε≈{epsilon_from_rho(left, line.delta):.4g} "
                            f"at δ={line.delta:g}) of ρ={line.rho:g}",
                            hint="lower the spec's budget, wait for the next period, or raise "
                            f"the {code} budget in {budgets_path().name}",
                        )
                        break
                    lines.append(line)
                if refusal is not None:
                    conn.rollback()
                else:
                    snaps = json.dumps(req.snapshots, ensure_ascii=False, sort_keys=True)
                    for line in lines:
                        conn.execute(
                            dp_ledger.insert().values(
                                entry_id=f"{req.release_id}/{line.resource}",
                                release_id=req.release_id,
                                product_id=req.product_id,
                                version=req.version,
                                resource=line.resource,
                                unit=line.unit,
                                period=period,
                                rho=req.rho,
                                epsilon=epsilon_from_rho(req.rho, line.delta),
                                delta=line.delta,
                                snapshots=snaps,
                                actor=str(actor),
                                charged_at=at,
                                state="charged",
                                draws=0,
                                updated_at=at,
                            )
                        )
                    rows = conn.execute(
                        select(dp_ledger).where(dp_ledger.c.release_id == req.release_id)
                    ).all()
                    entries = [_entry(r) for r in rows]
                    conn.commit()
        except BaseException:
            conn.rollback()
            raise
    # Audit after the ledger transaction: the audit log takes its own write lock.
    if refusal is not None:
        record(
            home,
            "budget.charge",
            req.release_id,
            "refused",
            {"rho": req.rho, "resources": sorted(req.units), "error": refusal.one_line()},
        )
        refusal.audited = True
        raise refusal
    record(
        home,
        "budget.charge",
        req.release_id,
        "ok",
        {
            "rho": req.rho,
            "reused": reused,
            "entries": [e.entry_id for e in entries],
            "period": entries[0].period if entries else period,
        },
    )
    return ChargeResult(entries=entries, reused=reused)


def mark(home: Home, release_id: str, state: LedgerState, drew: bool = False) -> None:
    """Advance a release's entries: charged → drawn (noise drawn and kept) → stored."""
    now = dt.datetime.now(dt.UTC)
    engine = state_engine(home)
    with engine.begin() as conn:
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if drew:
            values["draws"] = dp_ledger.c.draws + 1
        conn.execute(
            dp_ledger.update().where(dp_ledger.c.release_id == release_id).values(**values)
        )


def entries_for_release(home: Home, release_id: str) -> list[LedgerEntry]:
    """The ledger entries that paid for ``release_id`` (empty for products without noise)."""
    engine = state_engine(home)
    with engine.connect() as conn:
        rows = conn.execute(
            select(dp_ledger)
            .where(dp_ledger.c.release_id == release_id)
            .order_by(dp_ledger.c.resource)
        ).all()
    return [_entry(r) for r in rows]


def all_entries(home: Home, resource: str | None = None) -> list[LedgerEntry]:
    engine = state_engine(home)
    query = select(dp_ledger).order_by(dp_ledger.c.charged_at, dp_ledger.c.entry_id)
    if resource is not None:
        query = query.where(dp_ledger.c.resource == resource)
    with engine.connect() as conn:
        return [_entry(r) for r in conn.execute(query).all()]


def _amounts(rho: float, delta: float) -> dict[str, float]:
    return {"rho": rho, "epsilon": epsilon_from_rho(rho, delta), "delta": delta}


def show(home: Home, code: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """The ``shuyu budget show`` JSON document for the current period.

    ``{"budgets": [{"resource", "unit", "total", "spent", "remaining", "releases"}]}``; the
    amounts are ``{"rho", "epsilon", "delta"}`` (ε at the budget's δ; only ρ is additive) and
    ``total`` also names the ``period``.
    """
    policy = load_policy()
    at = now or dt.datetime.now(dt.UTC)
    period = policy.period_key(at)
    lines = [b for b in policy.budgets if code is None or b.resource == code]
    if code is not None and not lines:
        raise NotFoundError(
            f"no privacy budget declared for resource {code!r} in {budgets_path()}",
            hint="see 'shuyu budget show' for the resources with a budget",
        )
    engine = state_engine(home)
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for line in sorted(lines, key=lambda b: (b.resource, b.unit)):
            spent, _n = _spent(conn, line.resource, line.unit, period)
            releases = conn.execute(
                select(func.count(func.distinct(dp_ledger.c.release_id))).where(
                    dp_ledger.c.resource == line.resource,
                    dp_ledger.c.unit == line.unit,
                    dp_ledger.c.period == period,
                )
            ).scalar_one()
            total = {**_amounts(line.rho, line.delta), "period": period}
            out.append(
                {
                    "resource": line.resource,
                    "unit": line.unit,
                    "total": total,
                    "spent": _amounts(spent, line.delta),
                    "remaining": _amounts(max(line.rho - spent, 0.0), line.delta),
                    "releases": int(releases),
                }
            )
    return {"budgets": out}
