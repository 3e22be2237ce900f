"""Quality reports per source unit (质量反馈报告): JSON plus HTML a non-engineer reads.

Built only from stored check results (the source unit never needs to touch data): for each
of the unit's resources the latest checked snapshot, compared with the previous checked
snapshot. Offending rows appear as row numbers and masked values (``quality.masking``).
Written to ``<SHUYU_HOME>/work/quality/<unit>/report.{json,html}`` — inside the domain; the
source unit reads it through ``shuyu quality report`` under its own role.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from catalogs.catalog import Catalog
from catalogs.models import Resource
from quality import store
from quality.charts import problem_bars
from quality.dimensions import ORDER, Dimension, Ratio
from quality.models import CheckResult
from quality.tickets import STATE_ZH, Ticket, list_tickets
from quality.workdays import today_cn
from shuyu_core import atomic, snapshots
from shuyu_core.errors import NotFoundError
from shuyu_core.home import Home, state_engine

TEMPLATES = Path(__file__).parent / "templates"

KIND_ZH = {
    "required": "必填项缺失 missing value",
    "pattern": "格式不符 format",
    "allowed": "取值不在允许范围 not an allowed value",
    "codelist": "代码不在代码表 unknown code",
    "check_digit": "校验位错误 bad check digit",
    "range": "数值越界 out of range",
    "not_future": "未来日期 date in the future",
    "max_age": "记录过期 stale record",
    "consistent_with_id": "与身份号码不一致 disagrees with ID number",
    "references": "关联记录不存在 reference not found",
    "unique": "重复值 repeated value",
    "primary_key": "主键重复 repeated key",
    "duplicate_record": "重复记录 duplicate record",
    "snapshot_age": "数据未按期更新 snapshot out of date",
    "fields_present": "字段缺失 field not delivered",
    "files_readable": "文件不可读 file unreadable",
}


def report_dir(home: Home, unit: str) -> Path:
    return home.work / "quality" / unit


def unit_resources(catalog: Catalog, unit: str) -> list[Resource]:
    found = [r for r in catalog if r.source_unit.code == unit]
    if not found:
        units = sorted({r.source_unit.code for r in catalog})
        raise NotFoundError(
            f"source unit {unit!r} has no resource in the catalog",
            hint=f"use one of: {', '.join(units)}",
        )
    return found


def _ratio_view(now: Ratio | None, prev: Ratio | None) -> dict[str, Any]:
    score = now.score if now else None
    before = prev.score if prev else None
    delta = score - before if score is not None and before is not None else None
    return {
        "score": score,
        "passed": now.passed if now else 0,
        "total": now.total if now else 0,
        "previous": before,
        "delta": delta,
    }


def _dims(now: dict[Dimension, Ratio], prev: dict[Dimension, Ratio]) -> dict[str, Any]:
    return {
        d.value: {"label": d.label, **_ratio_view(now.get(d), prev.get(d))}
        for d in ORDER
        if d in now or d in prev
    }


def _pool(results: list[CheckResult]) -> dict[Dimension, Ratio]:
    acc: dict[Dimension, list[int]] = {}
    for res in results:
        for d, r in res.ratios().items():
            a = acc.setdefault(d, [0, 0])
            a[0] += r.passed
            a[1] += r.total
    return {d: Ratio(a[0], a[1]) for d, a in acc.items()}


def _ticket_view(t: Ticket, today: dt.date) -> dict[str, Any]:
    return {
        "id": t.id,
        "resource": t.resource,
        "rule": t.rule,
        "field": t.field,
        "dimension": t.dimension,
        "state": t.state,
        "state_zh": STATE_ZH[t.state],
        "opened_on": t.opened_on.isoformat(),
        "due_on": t.due_on.isoformat(),
        "overdue": t.overdue(today),
        "failed": t.failed,
        "total": t.total,
    }


def _resource_section(
    home: Home, res: Resource, cur: CheckResult | None, prev: CheckResult | None
) -> dict[str, Any]:
    try:
        latest_snapshot: str | None = snapshots.latest(home, res.code).snapshot_id
    except NotFoundError:
        latest_snapshot = None
    section: dict[str, Any] = {
        "code": res.code,
        "name": res.name,
        "name_en": res.name_en,
        "update_frequency": res.update_frequency.value,
        "latest_snapshot": latest_snapshot,
        "checked": cur is not None,
        "latest_checked": cur is not None and cur.snapshot == latest_snapshot,
    }
    if cur is None:
        return section
    prev_rules = {r.rule: r for r in prev.rules} if prev else {}
    rules = []
    for r in cur.rules:
        p = prev_rules.get(r.rule)
        rules.append(
            {
                "rule": r.rule,
                "field": r.field,
                "kind": r.kind,
                "kind_label": KIND_ZH.get(r.kind, r.kind),
                "dimension": r.dimension.value,
                "dimension_label": r.dimension.label,
                "description": r.description,
                "failed": r.failed,
                "total": r.total,
                "share": r.share,
                "previous_failed": p.failed if p else None,
                "delta_failed": r.failed - p.failed if p else None,
                "samples": [s.model_dump() for s in r.samples],
                "note": r.note,
            }
        )
    section.update(
        snapshot=cur.snapshot,
        previous_snapshot=prev.snapshot if prev else None,
        rows=cur.rows,
        previous_rows=prev.rows if prev else None,
        checked_at=cur.checked_at.isoformat(),
        dimensions=_dims(cur.ratios(), prev.ratios() if prev else {}),
        rules=rules,
        failing=sum(1 for r in rules if r["failed"]),
    )
    return section


def build(
    home: Home, unit: str, catalog: Catalog | None = None, today: dt.date | None = None
) -> dict[str, Any]:
    """The report document (what report.json holds and the HTML renders)."""
    cat = catalog or Catalog.load()
    day = today or today_cn()
    resources = unit_resources(cat, unit)
    current: list[CheckResult] = []
    previous: list[CheckResult] = []
    sections = []
    with state_engine(home).connect() as conn:
        for res in resources:
            cur = store.latest_check(conn, res.code)
            prev = store.latest_check(conn, res.code, before=cur.snapshot) if cur else None
            if cur:
                current.append(cur)
            if prev:
                previous.append(prev)
            sections.append(_resource_section(home, res, cur, prev))
    tickets = [_ticket_view(t, day) for t in list_tickets(home, unit=unit)]
    by_res: dict[str, list[dict[str, Any]]] = {}
    for t in tickets:
        by_res.setdefault(t["resource"], []).append(t)
    for s in sections:
        s["tickets"] = by_res.get(s["code"], [])
    waiting = [t for t in tickets if t["state"] in ("open", "acknowledged", "reopened")]
    overdue = [t for t in tickets if t["overdue"]]
    with_problems = sum(1 for s in sections if s.get("failing"))
    dims = _dims(_pool(current), _pool(previous))
    headline_zh = (
        f"{len(resources)} 项数据资源中 {len(current)} 项已完成质量检查，"
        f"{with_problems} 项存在问题；"
        f"待处理校核工单 {len(waiting)} 个，其中逾期 {len(overdue)} 个。"
    )
    headline_en = (
        f"{len(current)} of {len(resources)} resources checked, {with_problems} with problems; "
        f"{len(waiting)} correction tickets awaiting your answer, {len(overdue)} overdue."
    )
    return {
        "unit": {"code": unit, "name": resources[0].source_unit.name},
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "as_of": day.isoformat(),
        "summary": {
            "headline_zh": headline_zh,
            "headline_en": headline_en,
            "resources": len(resources),
            "checked": len(current),
            "with_problems": with_problems,
            "rows": sum(r.rows for r in current),
            "dimensions": dims,
            "tickets_waiting": len(waiting),
            "tickets_overdue": len(overdue),
            "tickets_total": len(tickets),
        },
        "resources": sections,
        "tickets": tickets,
    }


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v * 100:.2f}%"

    def pp(v: float | None) -> str:
        if v is None:
            return "—"
        arrow = "↑" if v > 1e-9 else ("↓" if v < -1e-9 else "→")
        return f"{arrow} {v * 100:+.2f} pp"

    env.filters["pct"] = pct
    env.filters["pp"] = pp
    return env


def render_html(doc: dict[str, Any]) -> str:
    dims = doc["summary"]["dimensions"]
    chart = problem_bars(
        [(v["label"], v["score"], v["previous"]) for v in dims.values()],
        title=f"{doc['unit']['name']} 各维度问题比例 share of checked values with problems",
    )
    res_charts = {
        s["code"]: problem_bars(
            [(v["label"], v["score"], v["previous"]) for v in s["dimensions"].values()],
            title=f"{s['name']} {s['code']}",
        )
        for s in doc["resources"]
        if s.get("dimensions")
    }
    return (
        _env()
        .get_template("unit_report.html.j2")
        .render(doc=doc, chart=chart, res_charts=res_charts)
    )


def write(home: Home, doc: dict[str, Any]) -> tuple[Path, Path]:
    out = report_dir(home, doc["unit"]["code"])
    html_path = out / "report.html"
    json_path = out / "report.json"
    atomic.write_text(json_path, json.dumps(doc, ensure_ascii=False, indent=2))
    atomic.write_text(html_path, render_html(doc))
    return html_path, json_path
