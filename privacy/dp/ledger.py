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

Tamper evidence (``privacy.dp.ledger_integrity``): every row change is anchored in the
audit chain in the same transaction, and every write first verifies the rows it relies on
against their anchors; an edited ledger refuses with exit 8 and holds charges until an admin
runs ``resolve``. Entries go ``charged`` → ``drawn`` → ``stored``, or ``charged`` → ``void``
when the build stopped before drawing; a void entry spends nothing.

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
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from catalogs.loading import load_model
from catalogs.product_models import epsilon_from_rho
from governance import audit, roles
from governance.actors import current_actor
from governance.audit import record
from privacy.dp import ledger_integrity as integrity
from privacy.dp.ledger_integrity import LedgerTampered
from privacy.dp.ledger_tables import dp_budget, dp_ledger
from shuyu_core.errors import BudgetExceeded, NotFoundError, ValidationError
from shuyu_core.home import Home, state_engine

PACKAGED_BUDGETS = Path(__file__).resolve().parents[2] / "catalogs" / "budgets.yaml"
# Float sums of ρ: allow the rounding of a few hundred additions, nothing more.
_SLACK = 1e-9

# charged → drawn (noise drawn and kept) → stored; charged → void (released before any draw).
LedgerState = Literal["charged", "drawn", "stored", "void"]
__all__ = ["LedgerTampered", "dp_budget", "dp_ledger"]


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
    release_sm3: str | None = None


@dataclass(frozen=True)
class ChargeRequest:
    release_id: str
    product_id: str
    version: str
    rho: float
    delta: float
    units: dict[str, str]  # resource code -> privacy unit field
    snapshots: dict[str, str]  # resource code -> snapshot id
    # The domain policy's ρ ceiling per privacy unit and calendar year, over every resource
    # sharing the unit (a person is one person across tables); checked under the ledger lock.
    unit_year_ceiling: float | None = None
    # The day the data describes (the end of the spec's reference period): the budget period
    # paid is the data's, not the build's (a 2025 report built in 2026 spends 2025's budget).
    data_at: dt.date | None = None


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
        release_sm3=m["release_sm3"],
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
            dp_ledger.c.state != "void",
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


def _verified(
    conn: Connection, pairs: set[tuple[str, str]] | None, what: str, release: str | None = None
) -> LedgerTampered | None:
    """Under the write lock: the reason ``what`` may not touch the ledger, or None.

    A recorded, unresolved break holds everything; otherwise the rows of ``pairs`` must match
    their audit anchors. Never anchor a row before this passed: anchoring an edited row
    would make the edit the truth.
    """
    brk = integrity.open_break(conn)
    if brk is not None:
        return integrity.held(brk, what)
    result = integrity.check(conn, pairs, release)
    return None if result.ok else integrity.tampered(result, what)


def _raise_tampered(home: Home, exc: LedgerTampered, obj: str, during: str) -> None:
    """Audit the refusal (a new break holds later charges), then raise it."""
    if exc.found is not None:
        integrity.record_break(home, obj, exc.found, during)
    else:
        record(home, during, obj, "refused", {"error": exc.one_line()})
    exc.audited = True
    raise exc


def unit_year_spent(
    conn: Connection, units: set[str], year: int, exclude_release: str | None = None
) -> dict[str, float]:
    """ρ charged per privacy unit for calendar ``year`` of the period paid (the data's
    reference period), over every resource sharing the unit: each release counted once per
    unit (its largest entry), void charges not at all; a "total" budget's single period
    counts in every year."""
    rows = conn.execute(
        select(dp_ledger.c.unit, dp_ledger.c.release_id, dp_ledger.c.rho, dp_ledger.c.period).where(
            dp_ledger.c.unit.in_(sorted(units)),
            dp_ledger.c.state != "void",
        )
    ).all()
    per_release: dict[tuple[str, str], float] = {}
    for unit, release_id, rho, period in rows:
        paid = str(period)[:4] if period != "all" else str(year)
        if release_id == exclude_release or paid != str(year):
            continue
        per_release[(unit, release_id)] = max(per_release.get((unit, release_id), 0.0), rho)
    spent = dict.fromkeys(units, 0.0)
    for (unit, _release), rho in per_release.items():
        spent[unit] += rho
    return spent


def _unit_year_refusal(conn: Connection, req: ChargeRequest, year: int) -> BudgetExceeded | None:
    ceiling = req.unit_year_ceiling
    assert ceiling is not None
    units = set(req.units.values())
    for unit, spent in sorted(unit_year_spent(conn, units, year, req.release_id).items()):
        if spent + req.rho > ceiling + _SLACK:
            return BudgetExceeded(
                f"release {req.release_id} would bring ρ per {unit} in {year} to "
                f"{spent + req.rho:.6g} ({spent:.6g} spent over every resource sharing the unit + "
                f"{req.rho:g}), above the domain policy's ceiling {ceiling:g}",
                hint="lower the spec's budget or wait for the next year; the ceiling is the "
                "domain policy's (an admin changes it with 'shuyu policy apply')",
            )
    return None


def data_time(day: dt.date) -> dt.datetime:
    """A data date as the instant the budget period is computed from."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def charge(home: Home, req: ChargeRequest, now: dt.datetime | None = None) -> ChargeResult:
    """Check every input resource's remaining budget and charge ``req.rho`` to each, atomically.

    Idempotent per release id: if live entries for ``req.release_id`` exist they are returned
    and nothing is charged; entries voided earlier are charged again (the same rows). Refuses
    (BudgetExceeded, audited) when any resource lacks room; then nothing is charged at all.
    The ledger rows of the charged resources are verified against the audit chain first
    (LedgerTampered, exit 8, audited); every row written is anchored in the same transaction.
    """
    if req.rho <= 0:
        raise ValidationError(
            f"release {req.release_id}: ρ must be positive", hint="fix the spec's budget"
        )
    policy = load_policy()
    at = now or dt.datetime.now(dt.UTC)
    period = policy.period_key(data_time(req.data_at) if req.data_at else at)
    actor = current_actor()
    engine = state_engine(home)
    refusal: BudgetExceeded | None = None
    broken: LedgerTampered | None = None
    reused = False
    with engine.connect() as conn:
        _begin_exclusive(conn)
        try:
            broken = _verified(conn, set(req.units.items()), f"charge of release {req.release_id}")
            rows = (
                []
                if broken
                else conn.execute(
                    select(dp_ledger).where(dp_ledger.c.release_id == req.release_id)
                ).all()
            )
            live = [r for r in rows if r._mapping["state"] != "void"]
            voided = {r._mapping["resource"] for r in rows if r._mapping["state"] == "void"}
            if broken is not None:
                conn.rollback()
            elif live:
                reused = True
                entries = [_entry(r) for r in live]
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
                if refusal is None and req.unit_year_ceiling is not None:
                    paid_year = (req.data_at or at.date()).year
                    refusal = _unit_year_refusal(conn, req, paid_year)
                if refusal is not None:
                    conn.rollback()
                else:
                    snaps = json.dumps(req.snapshots, ensure_ascii=False, sort_keys=True)
                    for line in lines:
                        entry_id = f"{req.release_id}/{line.resource}"
                        values = {
                            "release_id": req.release_id,
                            "product_id": req.product_id,
                            "version": req.version,
                            "resource": line.resource,
                            "unit": line.unit,
                            "period": period,
                            "rho": req.rho,
                            "epsilon": epsilon_from_rho(req.rho, line.delta),
                            "delta": line.delta,
                            "snapshots": snaps,
                            "actor": str(actor),
                            "charged_at": at,
                            "state": "charged",
                            "draws": 0,
                            "updated_at": at,
                            "release_sm3": None,
                        }
                        if line.resource in voided:
                            conn.execute(
                                dp_ledger.update()
                                .where(dp_ledger.c.entry_id == entry_id)
                                .values(**values)
                            )
                            integrity.anchor(conn, entry_id, "recharge")
                        else:
                            conn.execute(dp_ledger.insert().values(entry_id=entry_id, **values))
                            integrity.anchor(conn, entry_id, "charge")
                    rows = conn.execute(
                        select(dp_ledger).where(
                            dp_ledger.c.release_id == req.release_id,
                            dp_ledger.c.state != "void",
                        )
                    ).all()
                    entries = [_entry(r) for r in rows]
                    conn.commit()
        except BaseException:
            conn.rollback()
            raise
    # Audit after the ledger transaction: the audit log takes its own write lock.
    if broken is not None:
        _raise_tampered(home, broken, req.release_id, "budget.charge")
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


def _change(
    home: Home,
    release_id: str,
    what: str,
    values: dict[str, Any],
    op: str,
    only: Any = None,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Verify, update and anchor the entries of ``release_id`` in one transaction."""
    engine = state_engine(home)
    broken: LedgerTampered | None = None
    changed: list[str] = []
    with engine.connect() as conn:
        _begin_exclusive(conn)
        try:
            # The rows this change rewrites (and any of the release's rows since deleted)
            # must match their anchors: anchoring an edited row would launder the edit.
            broken = _verified(conn, None, f"{what} of release {release_id}", release_id)
            if broken is not None:
                conn.rollback()
            else:
                where = dp_ledger.c.release_id == release_id
                if only is not None:
                    where = where & only
                targets = conn.execute(select(dp_ledger.c.entry_id).where(where)).all()
                conn.execute(dp_ledger.update().where(where).values(**values))
                for (entry_id,) in targets:
                    integrity.anchor(conn, entry_id, op, extra)
                    changed.append(entry_id)
                conn.commit()
        except BaseException:
            conn.rollback()
            raise
    if broken is not None:
        _raise_tampered(home, broken, release_id, f"budget.{op}")
    return changed


def mark(
    home: Home,
    release_id: str,
    state: LedgerState,
    drew: bool = False,
    release_sm3: str | None = None,
) -> None:
    """Advance a release's entries: charged → drawn (noise drawn and kept) → stored.

    ``release_sm3``: the digest of the stored release's ``release.json``, kept on the rows.
    """
    values: dict[str, Any] = {"state": state, "updated_at": dt.datetime.now(dt.UTC)}
    if drew:
        values["draws"] = dp_ledger.c.draws + 1
    if release_sm3 is not None:
        values["release_sm3"] = release_sm3
    _change(home, release_id, f"mark {state}", values, "state", dp_ledger.c.state != "void")


def void(home: Home, release_id: str, reason: str) -> list[str]:
    """Release a charge whose noise was never drawn (state ``void``, audited).

    Only entries still ``charged`` with no draw are voided: a charge whose noise was drawn
    stays spent whatever fails later. Returns the voided entry ids.
    """
    voided = _change(
        home,
        release_id,
        "void",
        {"state": "void", "updated_at": dt.datetime.now(dt.UTC)},
        "void",
        (dp_ledger.c.state == "charged") & (dp_ledger.c.draws == 0),
        {"reason": reason[:500]},
    )
    if voided:
        record(home, "budget.void", release_id, "ok", {"entries": voided, "reason": reason[:500]})
    return voided


def resolve(home: Home, reason: str) -> dict[str, Any]:
    """An admin's resolution of a ledger break (``shuyu budget resolve``).

    Verifies the audit chain (the record the ledger is rebuilt from), then under the ledger's
    write lock restores every edited row to its last audited values, re-inserts deleted rows,
    removes rows no anchor knows, anchors each restored row and records one ``budget.resolve``
    entry with what was found, the reason and the spent budget per resource, unit and period
    recomputed from the anchors — all in one transaction.
    """
    roles.require(home, "ledger.resolve", "dp_ledger")
    text_reason = reason.strip()
    if not text_reason:
        raise ValidationError("budget resolve needs a reason", hint="pass --reason TEXT")
    chain = audit.verify(home)
    if not chain.ok:
        exc = LedgerTampered(
            f"budget resolve refused: the audit chain itself is broken ({chain.one_line()}); "
            "the ledger cannot be recomputed from it",
            hint="investigate with 'shuyu audit verify' and restore the state database",
        )
        record(home, integrity.RESOLVE, "dp_ledger", "refused", {"error": exc.one_line()})
        exc.audited = True
        raise exc
    engine = state_engine(home)
    with engine.connect() as conn:
        _begin_exclusive(conn)
        try:
            found = integrity.check(conn)
            brk = integrity.open_break(conn)
            unfixable = [f for f in found.findings if f.kind.startswith("anchor_")]
            if unfixable:
                conn.rollback()
                exc = integrity.tampered(found, "budget resolve")
                record(home, integrity.RESOLVE, "dp_ledger", "refused", {"error": exc.one_line()})
                exc.audited = True
                raise exc
            table_before = integrity.table_spent(conn)
            audited = integrity.spent_by_line(f for f, _seq in found.audited.values())
            actions = integrity.restore(conn, found)
            after = integrity.table_spent(conn)
            spent = [
                {
                    "resource": k[0],
                    "unit": k[1],
                    "period": k[2],
                    "rho_from_audit": audited.get(k, 0.0),
                    "rho_in_table_before": table_before.get(k, 0.0),
                    "rho_after": after.get(k, 0.0),
                }
                for k in sorted(set(audited) | set(table_before) | set(after))
            ]
            doc = {
                "reason": text_reason[:2000],
                "break_seq": None if brk is None else brk["seq"],
                "findings": [f.to_dict() for f in found.findings],
                "actions": actions,
                "spent": spent,
            }
            audit.append(conn, integrity.RESOLVE, "dp_ledger", "ok", doc)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return doc


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


def show(
    home: Home,
    code: str | None = None,
    now: dt.datetime | None = None,
    period: str | None = None,
) -> dict[str, Any]:
    """The ``shuyu budget show`` JSON document for ``period`` (default: the current one).

    Charges are booked in the period of the data's reference period, so a report on 2025
    built in 2026 shows under ``period="2025"``.

    ``{"budgets": [{"resource", "unit", "total", "spent", "remaining", "releases"}]}``; the
    amounts are ``{"rho", "epsilon", "delta"}`` (ε at the budget's δ; only ρ is additive) and
    ``total`` also names the ``period``.
    """
    policy = load_policy()
    at = now or dt.datetime.now(dt.UTC)
    period = period or policy.period_key(at)
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
                    dp_ledger.c.state != "void",
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
