"""HTML reports of statistical products (jinja2 templates, inline SVG charts, one file)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
from markupsafe import Markup

from catalogs.product_models import ProductSpec, TableSpec, epsilon_from_rho
from products import charts
from products.engine import BuildContext
from products.release import AccuracyCell
from products.specs import dimension_keys, dimension_labels
from products.tables import TableResult

TEMPLATES = Path(__file__).resolve().parent / "templates"
PURPOSE_LABELS = {"public_good": "公益 public good (free)", "industry": "产业 industry (priced)"}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)


def _common(ctx: BuildContext, accuracy: list[AccuracyCell], notes: list[str]) -> dict[str, Any]:
    spec = ctx.spec
    assert spec.budget is not None and spec.privacy_unit is not None
    rho = spec.budget.zcdp_rho
    period = (
        f"{spec.reference_period[0]} – {spec.reference_period[1]}" if spec.reference_period else ""
    )
    return {
        "spec": spec,
        "release_id": ctx.release_id,
        "purpose_label": PURPOSE_LABELS[spec.purpose_category],
        "period": period,
        "built": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "inputs": [
            {
                "resource": i.resource,
                "snapshot_id": ctx.inputs[i.resource].snapshot_id,
                "fields": i.fields,
                "rows": ctx.inputs[i.resource].rows,
            }
            for i in spec.inputs
        ],
        "privacy_unit": f"{spec.privacy_unit.resource}.{spec.privacy_unit.field} "
        f"(≤ {spec.privacy_unit.contributions} row per unit after bounding)",
        "rho": rho,
        "epsilon": epsilon_from_rho(rho, spec.budget.delta),
        "delta": spec.budget.delta,
        "mechanism": "OpenDP polars (opendp.extras.polars): discrete Gaussian noise on counts "
        "and on clipped integer sums over public key sets",
        "accuracy": accuracy,
        "notes": notes,
    }


def _cell(v: Any) -> dict[str, Any]:
    if v is None:
        return {"text": "", "num": False}
    if isinstance(v, bool):
        return {"text": "是 yes" if v else "", "num": False}
    if isinstance(v, int):
        return {"text": f"{v:,}", "num": True}
    if isinstance(v, float):
        return {"text": "" if math.isnan(v) else f"{v:,.2f}", "num": True}
    return {"text": str(v), "num": False}


def _table_view(t: TableSpec, frame: pl.DataFrame) -> dict[str, Any]:
    rows = [
        {"suppressed": bool(r.get("suppressed")), "cells": [_cell(v) for v in r.values()]}
        for r in frame.iter_rows(named=True)
    ]
    return {"title": t.title, "title_en": t.title_en, "columns": frame.columns, "rows": rows}


def _charts_for(spec: ProductSpec, t: TableSpec, res: TableResult) -> list[str]:
    """One chart per table: a single dimension as bars with CIs; several dimensions as the
    last two dimensions, summed over the others (released cells only, CI widened by √k)."""
    out: list[str] = []
    frame = res.frame
    labels0 = dimension_labels(spec.dimension(t.by[0]))
    if len(t.by) == 1:
        cats = [labels0.get(k, k) for k in frame[t.by[0]].to_list()]
        for name in [*(m.name for m in t.measures), *(d.name for d in t.derived)]:
            titles = {m.name: m.title for m in t.measures} | {d.name: d.title for d in t.derived}
            title = titles.get(name, name)
            out.append(
                charts.bar_chart(
                    cats,
                    {title: frame[name].cast(pl.Float64).to_list()},
                    {title: frame[f"{name}_ci95"].to_list()},
                    title=f"{t.title} — {title}",
                )
            )
        return out
    count = next((m for m in t.measures if m.aggregate == "count"), None)
    if count is None:
        return out
    x_dim, s_dim = t.by[-2], t.by[-1]
    # Only released cells are summed: adding withheld cells back would let a reader recover
    # them by differencing with the published cells.
    summed = frame.group_by([x_dim, s_dim]).agg(
        pl.col(count.name).cast(pl.Float64).fill_null(0).sum(),
        pl.col(count.name).is_not_null().sum().alias("cells"),
    )
    hw_cell = float(frame[f"{count.name}_ci95"][0] or 0.0)
    x_keys = dimension_keys(spec.dimension(x_dim))
    s_keys = dimension_keys(spec.dimension(s_dim))
    lookup = {(r[x_dim], r[s_dim]): r for r in summed.iter_rows(named=True)}
    series: dict[str, list[float | None]] = {}
    errors: dict[str, list[float | None]] = {}
    s_labels = dimension_labels(spec.dimension(s_dim))
    for s in s_keys:
        label = s_labels.get(s, s)
        series[label] = [lookup[(x, s)][count.name] if (x, s) in lookup else None for x in x_keys]
        errors[label] = [
            hw_cell * math.sqrt(lookup[(x, s)]["cells"]) if (x, s) in lookup else None
            for x in x_keys
        ]
    x_labels = dimension_labels(spec.dimension(x_dim))
    out.append(
        charts.bar_chart(
            [x_labels.get(x, x) for x in x_keys],
            series,
            errors,
            title=f"{count.title} by {spec.dimension(x_dim).title} × {spec.dimension(s_dim).title}",
        )
    )
    return out


def render_stat_report(
    ctx: BuildContext,
    results: list[TableResult],
    accuracy: list[AccuracyCell],
    meta: dict[str, Any],
    notes: list[str] | None = None,
) -> str:
    spec = ctx.spec
    charts_svg: list[str] = []
    tables = []
    for t in spec.tables:
        res = next(r for r in results if r.name == t.name)
        charts_svg += _charts_for(spec, t, res)
        tables.append(_table_view(t, res.frame))
    doc = _common(ctx, accuracy, notes or [])
    doc.update({"charts": [Markup(c) for c in charts_svg], "tables": tables})
    return _env.get_template("stat_report.html.j2").render(**doc)


def render_index(
    ctx: BuildContext,
    results: list[TableResult],
    index_frame: pl.DataFrame,
    accuracy: list[AccuracyCell],
    notes: list[str],
) -> str:
    spec = ctx.spec
    assert spec.index is not None
    quarters = sorted(index_frame["quarter"].unique().to_list())
    districts = index_frame["district"].unique(maintain_order=True).to_list()
    labels = dimension_labels(spec.dimension("district"))
    series: dict[str, list[float | None]] = {}
    bands: dict[str, tuple[list[float | None], list[float | None]]] = {}
    for d in districts:
        sub = index_frame.filter(pl.col("district") == d).sort("quarter")
        name = labels.get(d, d)
        series[name] = sub["score"].to_list()
        bands[name] = (sub["score_lower"].to_list(), sub["score_upper"].to_list())
    svg = [
        charts.line_chart(
            quarters, series, bands, title="区域营商活力指数 Business vitality index (0–100)"
        )
    ]
    weights = ", ".join(
        f"{c.title} {c.weight:g}{' (−)' if c.direction == 'negative' else ''}"
        for c in spec.index.components
    )
    tables = [
        _table_view(t, next(r for r in results if r.name == t.name).frame) for t in spec.tables
    ]
    index_view = {
        "title": "区域营商活力指数",
        "title_en": f"Business vitality index — weights: {weights}",
        "columns": index_frame.columns,
        "rows": [
            {"suppressed": bool(r.get("suppressed")), "cells": [_cell(v) for v in r.values()]}
            for r in index_frame.iter_rows(named=True)
        ],
    }
    doc = _common(ctx, accuracy, notes)
    doc.update({"charts": [Markup(c) for c in svg], "tables": [index_view, *tables]})
    return _env.get_template("index.html.j2").render(**doc)
