"""Rendering an assessment: HTML for reviewers (verdict and reasons first) and Markdown.

Both come from the stored ``Assessment`` only, so they hold exactly the evidence the checks
wrote: counts, shares, column names and public keys, never a raw value.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from assessment.models import (
    DIMENSIONS,
    STATUS_LABELS,
    VERDICT_LABELS,
    Assessment,
    Check,
    dimension_label,
)

_TEMPLATES = Path(__file__).parent / "templates"


def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _by_dimension(checks: list[Check]) -> list[tuple[str, str, list[Check]]]:
    order = list(DIMENSIONS)
    dims = sorted({c.dimension for c in checks}, key=lambda d: order.index(d) if d in order else 99)
    return [(d, dimension_label(d), [c for c in checks if c.dimension == d]) for d in dims]


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}"


def hbar_chart(rows: list[tuple[str, float, str]], title: str, width: int = 760) -> str:
    """Horizontal bars of shares in [0, 1] (inline SVG: the report is one file)."""
    if not rows:
        return ""
    bar_h, gap, left, top = 18, 8, 300, 30
    height = top + len(rows) * (bar_h + gap) + 20
    plot_w = width - left - 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, share, color) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(0.0, min(1.0, share)) * plot_w
        parts.append(
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end" font-size="11">'
            f"{escape(label)}</text>"
            f'<rect x="{left}" y="{y}" width="{plot_w}" height="{bar_h}" fill="#edf2f7"/>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            f'<text x="{left + plot_w + 6}" y="{y + 13}" font-size="11">{share:.1%}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def accuracy_chart(a: Assessment) -> str:
    try:
        per = a.check("accuracy_target").data.get("per_measure", [])
    except KeyError:
        return ""
    rows = [
        (
            f"{p['output']}.{p['measure']} ({p['cells']})",
            float(p["share"]),
            "#2f855a" if p["share"] >= 0.95 else "#c05621",
        )
        for p in per
    ]
    return hbar_chart(rows, "达到精度目标的单元格比例 share of released cells meeting the target")


def budget_chart(a: Assessment) -> str:
    rows = []
    for b in a.context.get("budget", []):
        if b.get("total_rho"):
            rows.append(
                (
                    f"{b['resource']} {b['period']} spent ρ {b['spent_rho']:.3g} / "
                    f"{b['total_rho']:g}",
                    b["spent_rho"] / b["total_rho"],
                    "#2b6cb0",
                )
            )
    return hbar_chart(rows, "隐私预算已用比例 share of the period's budget spent")


def render_html(a: Assessment) -> str:
    counts = {s: sum(1 for c in a.checks if c.status == s) for s in ("pass", "warn", "fail")}
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            a=a,
            ctx=a.context,
            verdict_label=VERDICT_LABELS[a.verdict],
            status_labels=STATUS_LABELS,
            dimensions=_by_dimension(a.checks),
            counts=counts,
            accuracy_chart=accuracy_chart(a),
            budget_chart=budget_chart(a),
            fmt=_fmt,
        )
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(a: Assessment) -> str:
    lines = [
        f"# 发布前评估报告 Pre-release assessment — {a.product_name} ({a.product_name_en})",
        "",
        f"- release `{a.release}` · version {a.version} · assessment `{a.assessment_id}`",
        f"- **结论 Verdict: {VERDICT_LABELS[a.verdict]}**"
        + (f" — rectify by {a.due_date}" if a.due_date else ""),
        f"- assessed {a.assessed_at:%Y-%m-%d %H:%M} UTC by {a.actor}",
        "",
    ]
    if a.reasons:
        lines += ["## 原因 Reasons", ""] + [f"1. {_md_cell(r)}" for r in a.reasons] + [""]
    for _dim, label, rows in _by_dimension(a.checks):
        lines += [f"## {label}", "", "| check | status | evidence |", "|---|---|---|"]
        lines += [
            f"| {_md_cell(c.title)} (`{c.name}`) | {STATUS_LABELS[c.status]} | "
            f"{_md_cell(c.evidence)} |"
            for c in rows
        ]
        lines.append("")
    budget = a.context.get("budget", [])
    lines += ["## 隐私预算 Privacy budget", ""]
    if budget:
        lines += [
            "| resource | period | ρ charged | ρ spent | ρ total | ρ remaining |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {b['resource']} | {b['period']} | {b['charged_rho']:.4g} | {_fmt(b['spent_rho'])} "
            f"| {_fmt(b['total_rho'])} | {_fmt(b['remaining_rho'])} |"
            for b in budget
        ]
    else:
        lines.append("No noise drawn, no budget spent.")
    lines += [
        "",
        "## 血缘 Lineage",
        "",
        "| input | snapshot | rows | fields |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {i['resource']} {i['name']} | `{i['snapshot']}` | {i['rows']} | "
        f"{', '.join(i['fields'])} |"
        for i in a.context.get("inputs", [])
    ]
    return "\n".join(lines) + "\n"
