"""Data-supply evaluation of source units (数据供给评估, Sichuan art. 30).

One row per source unit over three dimensions the draft names:

- quantity (数据提供数量): catalogued resources, resources delivered (with a snapshot), rows in
  the latest snapshots, and freshness — the share of catalogued resources whose latest
  snapshot is within its update frequency's allowed age;
- quality (数据质量): the GB/T 36344 dimension scores pooled over the latest checks of the
  unit's resources, plus its correction tickets (waiting, overdue);
- application (数据应用): releases whose ``release.json`` lists an input from the unit's
  resources, and the distinct products among them.

The composite score weights them 0.3 / 0.5 / 0.2 (quality counts most: the drafts make
quality the source unit's own duty); application is relative to the most-used unit.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from catalogs.catalog import Catalog
from quality import store
from quality.dimensions import ORDER, Ratio
from quality.models import CheckResult
from quality.tickets import WAITING, list_tickets
from quality.workdays import today_cn
from shuyu_core import snapshots
from shuyu_core.errors import NotFoundError
from shuyu_core.home import Home, state_engine

WEIGHTS = {"quantity": 0.3, "quality": 0.5, "application": 0.2}


def release_inputs(home: Home) -> list[tuple[str, str, set[str]]]:
    """(release id, product id, input resource codes) of every stored release."""
    out: list[tuple[str, str, set[str]]] = []
    if not home.releases.is_dir():
        return out
    for path in sorted(home.releases.glob("*/release.json")):
        if path.parent.name.startswith("."):
            continue  # a release still being staged
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        inputs = doc.get("inputs") or []
        codes = {str(i["resource"]) for i in inputs if isinstance(i, dict) and "resource" in i}
        product = str(doc.get("product_id") or doc.get("product") or path.parent.name)
        out.append((path.parent.name, product, codes))
    return out


def evaluate(
    home: Home, catalog: Catalog | None = None, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    cat = catalog or Catalog.load()
    moment = now or dt.datetime.now(dt.UTC)
    today = today_cn()
    units: dict[str, dict[str, Any]] = {}
    latest_checks: dict[str, list[CheckResult]] = {}
    releases = release_inputs(home)
    with state_engine(home).connect() as conn:
        for res in cat:
            u = units.setdefault(
                res.source_unit.code,
                {
                    "unit": res.source_unit.code,
                    "name": res.source_unit.name,
                    "resources": 0,
                    "delivered": 0,
                    "fresh": 0,
                    "rows": 0,
                    "oldest_snapshot_days": None,
                    "codes": [],
                },
            )
            u["resources"] += 1
            u["codes"].append(res.code)
            try:
                m = snapshots.latest(home, res.code)
            except NotFoundError:
                continue
            u["delivered"] += 1
            u["rows"] += m.rows
            age = max((moment - m.ingested_at).total_seconds() / 86400, 0.0)
            u["fresh"] += int(age <= res.update_frequency.max_age_days)
            old = u["oldest_snapshot_days"]
            u["oldest_snapshot_days"] = round(age if old is None else max(old, age), 2)
            check = store.latest_check(
                conn, res.code, snapshot=m.snapshot_id
            ) or store.latest_check(conn, res.code)
            if check is not None:
                latest_checks.setdefault(res.source_unit.code, []).append(check)
    rows: list[dict[str, Any]] = []
    for code, u in sorted(units.items()):
        pooled: dict[str, list[int]] = {}
        for check in latest_checks.get(code, []):
            for d, r in check.ratios().items():
                acc = pooled.setdefault(d.value, [0, 0])
                acc[0] += r.passed
                acc[1] += r.total
        scores = {d.value: Ratio(*pooled[d.value]).score for d in ORDER if d.value in pooled}
        tickets = list_tickets(home, unit=code)
        own = set(u["codes"])
        used = [(rid, pid) for rid, pid, inputs in releases if inputs & own]
        quality_values = [s for s in scores.values() if s is not None]
        out: dict[str, Any] = {
            "unit": code,
            "name": u["name"],
            "resources": u["resources"],
            "resources_delivered": u["delivered"],
            "rows": u["rows"],
            "fresh_resources": u["fresh"],
            "freshness": u["fresh"] / u["resources"] if u["resources"] else 0.0,
            "oldest_snapshot_days": u["oldest_snapshot_days"],
            "checked_resources": len(latest_checks.get(code, [])),
            **{f"score_{d.value}": scores.get(d.value) for d in ORDER},
            "quality": sum(quality_values) / len(quality_values) if quality_values else None,
            "tickets_total": len(tickets),
            "tickets_waiting": sum(t.state in WAITING for t in tickets),
            "tickets_overdue": sum(t.overdue(today) for t in tickets),
            "releases_using": len(used),
            "products_using": len({pid for _rid, pid in used}),
        }
        rows.append(out)
    most_used = max((x["releases_using"] for x in rows), default=0)
    for row in rows:
        application = row["releases_using"] / most_used if most_used else 0.0
        row["application"] = application
        row["score"] = round(
            WEIGHTS["quantity"] * row["freshness"]
            + WEIGHTS["quality"] * (row["quality"] or 0.0)
            + WEIGHTS["application"] * application,
            4,
        )
    return rows


COLUMNS = [
    "unit",
    "name",
    "resources",
    "resources_delivered",
    "rows",
    "fresh_resources",
    "freshness",
    "oldest_snapshot_days",
    "checked_resources",
    *(f"score_{d.value}" for d in ORDER),
    "quality",
    "tickets_total",
    "tickets_waiting",
    "tickets_overdue",
    "releases_using",
    "products_using",
    "application",
    "score",
]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"generated_at": dt.datetime.now(dt.UTC).isoformat(), "weights": WEIGHTS, "units": rows},
        ensure_ascii=False,
        indent=2,
    )


def export_dir(home: Home) -> Path:
    return home.work / "quality" / "evaluation"
