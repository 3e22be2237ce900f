"""Read models for the portal pages, assembled from the core's stores (no role checks here:
each route makes its core permission call before reading)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from governance.audit import entries_for
from portal.web import DIM_ZH, cn_time
from products.charts import bar_chart, line_chart
from quality import report, store, tickets
from quality.dimensions import Dimension
from quality.models import RuleResult
from shuyu_core.home import Home, state_engine

_WORD = re.compile(r"[\w\u4e00-\u9fff]", re.UNICODE)


def substantive_length(text: str) -> int:
    """Letters, digits and Chinese characters in ``text`` (punctuation and spaces do not count)."""
    return len(_WORD.findall(text))


def unit_quality(home: Home, catalog: Catalog, unit: str) -> list[dict[str, Any]]:
    """Per resource of ``unit``: the latest scores and a chart of the scores over time."""
    out = []
    with state_engine(home).connect() as conn:
        for res in report.unit_resources(catalog, unit):
            hist = store.history(conn, res.code, limit=12)
            labels = [cn_time(h.checked_at)[5:16] for h in hist]
            series: dict[str, list[float | None]] = {}
            for d in Dimension:
                vals = [h.dimensions().get(d.value) for h in hist]
                if any(v is not None for v in vals):
                    series[DIM_ZH.get(d.value, d.value)] = [
                        None if v is None else round(100 * v, 2) for v in vals
                    ]
            chart = (
                line_chart(labels, series, title=f"{res.name} 质量得分（%）", width=680, height=280)
                if hist
                else ""
            )
            latest = hist[-1] if hist else None
            out.append(
                {
                    "code": res.code,
                    "name": res.name,
                    "checks": len(hist),
                    "latest": latest,
                    "scores": {DIM_ZH.get(k, k): v for k, v in latest.dimensions().items()}
                    if latest
                    else {},
                    "chart": chart,
                }
            )
    return out


def failing_rule(home: Home, t: tickets.Ticket) -> RuleResult | None:
    """The ticket's rule in the check of the snapshot the ticket last saw (masked samples)."""
    with state_engine(home).connect() as conn:
        res = store.latest_check(conn, t.resource, snapshot=t.snapshot)
    if res is None:
        return None
    return next((r for r in res.rules if r.rule == t.rule), None)


def receipts(home: Home, ticket_id: int) -> list[dict[str, Any]]:
    """回执: each acknowledgement or answer with the audit entry that records it."""
    audit = entries_for(home, f"ticket/{ticket_id}", ("ticket.ack", "ticket.answer"), "ok")
    manual = [
        e
        for e in tickets.events(home, ticket_id)
        if e["to_state"] in (tickets.ACKNOWLEDGED, tickets.ANSWERED)
        and e["from_state"] != e["to_state"]
    ]
    out = []
    for a, e in zip(audit, manual, strict=False):
        out.append(
            {
                "seq": a["seq"],
                "hash": a["hash"],
                "ts": a["ts"],
                "actor": a["actor"],
                "role": a["role"],
                "action": "确认收到" if a["action"] == "ticket.ack" else "答复",
                "from": tickets.STATE_ZH.get(e["from_state"] or "", e["from_state"]),
                "to": tickets.STATE_ZH.get(e["to_state"], e["to_state"]),
                "note": e["note"],
            }
        )
    return out


def preview(path: Path, rows: int = 20) -> tuple[list[str], list[list[Any]]]:
    """The first rows of a released table (CSV or Parquet) for the reviewer's preview."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path, n_rows=rows)
    elif path.suffix == ".csv":
        df = pl.read_csv(path, n_rows=rows, infer_schema_length=rows)
    else:
        return [], []
    return df.columns, [list(r) for r in df.rows()]


def budget_view(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Budgets with spent share, and a bar chart of spent vs remaining ρ per resource/unit."""
    rows = []
    for b in doc.get("budgets", []):
        total = float(b["total"]["rho"]) or 0.0
        spent = float(b["spent"]["rho"])
        rows.append({**b, "share": spent / total if total else 0.0})
    labels = [f"{b['resource']}/{b['unit']}" for b in rows]
    chart = (
        bar_chart(
            labels,
            {
                "已用 ρ": [float(b["spent"]["rho"]) for b in rows],
                "剩余 ρ": [float(b["remaining"]["rho"]) for b in rows],
            },
            title="隐私预算（zCDP ρ）：已用与剩余",
        )
        if rows
        else ""
    )
    return rows, chart


def day(value: dt.datetime | None) -> str:
    return cn_time(value)[:10] if value else ""
