"""Demo stage: quality checks, source-unit reports and correction tickets (数据质量与校核)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from catalogs.catalog import Catalog
from governance.actors import Actor, current_actor, set_current
from pipelines.demo_accounts import source_unit_account
from quality import api
from quality.tickets import OPEN
from shuyu_core import snapshots
from shuyu_core.home import Home


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f}%"


def stage(home: Home, console: Console) -> dict[str, Any]:
    """Check every ingested resource, open tickets, write one report per source unit."""
    catalog = Catalog.load()
    table = Table(title="quality checks (GB/T 36344)")
    table.add_column("resource")
    table.add_column("rows", justify="right")
    for label in ("规范性", "完整性", "准确性", "一致性", "时效性", "可访问性"):
        table.add_column(label, justify="right")
    table.add_column("failing rules")
    checks: dict[str, Any] = {}
    opened = 0
    for res in catalog:
        if not snapshots.list_snapshots(home, res.code):
            continue
        result, changes = api.run_check(home, res.code, catalog=catalog)
        opened += sum(1 for c in changes if c.to_state == OPEN)
        dims = result.dimensions()
        failing = [r.rule for r in result.rules if r.failed]
        checks[res.code] = {
            "snapshot": result.snapshot,
            "dimensions": dims,
            "failing_rules": len(failing),
            "seconds": round(result.seconds, 2),
        }
        table.add_row(
            res.code,
            f"{result.rows:,}",
            *(
                _pct(dims.get(d))
                for d in (
                    "normativity",
                    "completeness",
                    "accuracy",
                    "consistency",
                    "timeliness",
                    "accessibility",
                )
            ),
            str(len(failing)),
        )
    console.print(table)

    units = sorted({r.source_unit.code for r in catalog if r.code in checks})
    reports: dict[str, str] = {}
    for unit in units:
        html_path, _json_path, doc = api.write_unit_report(home, unit, catalog)
        reports[unit] = str(html_path)
        console.print(f"  {unit}: {doc['summary']['headline_zh']}")
        console.print(f"    report → {html_path} (+ report.json)")

    csv_path, _json, evaluated = api.export_evaluation(home, catalog)
    console.print(
        f"  data-supply evaluation (数据供给评估) of {len(evaluated)} units → {csv_path} (+ .json)"
    )

    # The source unit's view: it sees only its own tickets and acknowledges one.
    acknowledged = None
    operator = current_actor()
    if units:
        unit = units[0]
        set_current(Actor(source_unit_account(unit), f"source_unit:{unit}"))
        try:
            own = api.list_tickets(home, states=(OPEN,))
            if own:
                api.acknowledge(home, own[0].id, "已收到，正在核实 (received, checking)")
                acknowledged = own[0].id
            console.print(
                f"  as source_unit:{unit}: {len(own)} open ticket(s) visible"
                + (f", acknowledged ticket {acknowledged}" if acknowledged else "")
            )
        finally:
            set_current(operator)
    waiting = api.list_tickets(home, states=("open", "acknowledged", "reopened"))
    console.print(
        f"tickets: {opened} opened now, {len(waiting)} awaiting source units "
        "('shuyu tickets list'); reports under "
        f"{home.work / 'quality'}"
    )
    return {
        "checks": checks,
        "tickets_opened": opened,
        "tickets_waiting": len(waiting),
        "acknowledged": acknowledged,
        "reports": reports,
        "evaluation": str(csv_path),
    }
