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
METHOD_LABELS = {
    "analytic": "解析（噪声分布）",
    "simulation": "模拟（同一噪声分布）",
    "interval": "区间推算（条件于发布，覆盖率≥95%）",
}
# The index table's columns, and the valid range each is shown within (the released files
# keep the raw post-processed values; noise can push a rate below 0 or a score past 100).
INDEX_LABELS = {
    "district": "区县代码",
    "district_name": "区县",
    "quarter": "季度",
    "score": "活力指数",
    "score_lower": "置信带下限（覆盖率≥95%）",
    "score_upper": "置信带上限（覆盖率≥95%）",
    "score_ci95": "置信带半宽（覆盖率≥95%）",
    "new_rate": "新设率",
    "dereg_rate": "注销率",
    "capital_per_new": "户均新设注册资本",
    "growth": "存量增长率",
    "suppressed": "未公布",
    "suppression_reason": "未公布原因",
}
INDEX_RANGES: dict[str, tuple[float | None, float | None]] = {
    "score": (0.0, 100.0),
    "score_lower": (0.0, 100.0),
    "score_upper": (0.0, 100.0),
    "new_rate": (0.0, 1.0),
    "dereg_rate": (0.0, 1.0),
    "capital_per_new": (0.0, None),
    "growth": (-1.0, None),
}

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
                # No row count: a published report carries only noisy numbers, and a
                # snapshot's exact size is a count of the registry (it stays in release.json).
            }
            for i in spec.inputs
        ],
        "privacy_unit": f"{spec.privacy_unit.resource}.{spec.privacy_unit.field}"
        f"（每个{_unit_word(spec)}最多计入 {spec.privacy_unit.contributions} 条记录）",
        "rho": rho,
        "epsilon": epsilon_from_rho(rho, spec.budget.delta),
        "delta": spec.budget.delta,
        "mechanism": "在每个计数和（截断后的）求和上加入离散高斯随机噪声（OpenDP），"
        "分组取值为事先公开的固定类别",
        "accuracy": [_accuracy_view(spec, c) for c in accuracy],
        "notes": notes,
        "unit_word": _unit_word(spec),
    }


def _unit_word(spec: ProductSpec) -> str:
    """What one privacy unit is called in a sentence: a person (人) or an enterprise (户)."""
    field = spec.privacy_unit.field if spec.privacy_unit else ""
    return "户" if "信用代码" in field else "人"


def column_labels(spec: ProductSpec, t: TableSpec | None, columns: list[str]) -> list[str]:
    """Chinese headers for a released table's columns (the files keep the column names)."""
    names: dict[str, str] = dict(INDEX_LABELS)
    if spec.index is not None:  # the spec's own words win over the generic index labels
        idx = spec.index
        names["score"] = idx.title
        names.update({c.name: c.title.split(" ")[0] for c in idx.components})
        names.update({x.name: (x.title or x.name).split(" ")[0] for x in idx.terms})
        for d in idx.by:
            dim = spec.dimension(d)
            title = dim.title.split(" ")[0]
            names[d] = f"{title}代码" if dim.codelist else title
            names[f"{d}_name"] = title
    if t is not None:
        for d in t.by:
            names[d] = spec.dimension(d).title
        names.update({m.name: m.title for m in t.measures})
        names.update({d.name: d.title for d in t.derived})
    out = []
    for c in columns:
        if c in names:
            out.append(names[c])
        elif c.endswith("_ci95") and c[: -len("_ci95")] in names:
            out.append(f"{names[c[: -len('_ci95')]]} 误差范围（±，95%）")
        else:
            out.append(c)
    return out


def _accuracy_view(spec: ProductSpec, c: AccuracyCell) -> dict[str, Any]:
    titles: dict[str, str] = dict(INDEX_LABELS)
    for t in spec.tables:
        titles.update({m.name: m.title for m in t.measures})
        titles.update({d.name: d.title for d in t.derived})
    return {
        "output": c.output,
        "key": " · ".join(str(v) for v in c.key.values()),
        "measure": titles.get(c.measure, c.measure),
        "estimate": c.estimate,
        "ci_half_width": c.ci_half_width,
        "relative_error": c.relative_error,
        "rank_error": c.rank_error,
        "relative_rank_error": c.relative_rank_error,
        "method": METHOD_LABELS.get(c.method, c.method),
        "suppressed": c.suppressed,
        "reason": c.reason,
    }


def uncertainty_sentences(spec: ProductSpec, t: TableSpec, frame: pl.DataFrame) -> list[str]:
    """One plain sentence per count measure: the published count is within ±N of the truth
    in 95 of 100 cases (N = the largest CI half-width of the released cells, rounded up)."""
    out = []
    word = _unit_word(spec)
    level = round(100 * (1 - spec.alpha))
    for m in t.measures:
        col = f"{m.name}_ci95"
        if m.aggregate != "count" or col not in frame.columns:
            continue
        widest = frame[col].drop_nulls().cast(pl.Float64)
        if widest.is_empty():
            continue
        n = math.ceil(float(widest.max()))  # type: ignore[arg-type]
        out.append(
            f"「{t.title}」中的「{m.title}」：为保护个人信息，每个数字都加入了随机噪声；"
            f"在 {level}% 的情况下，公布的数字与真实数字相差不超过 ±{n:,} {word}。"
        )
    return out


def quantile_name(q: float) -> str:
    return "中位数" if abs(q - 0.5) < 1e-12 else f"第 {100 * q:g} 百分位数"


def quantile_sentences(spec: ProductSpec, t: TableSpec, noise: list[dict[str, Any]]) -> list[str]:
    """One plain sentence per quantile measure: its error is in ranks (秩误差), r units
    either side of the true quantile at the stated level (public: from the spec only)."""
    out = []
    word = _unit_word(spec)
    level = round(100 * (1 - spec.alpha))
    by_column = {n["column"]: n for n in noise}
    for m in t.measures:
        n = by_column.get(m.name)
        if m.aggregate != "quantile" or n is None or n.get("rank_error") is None:
            continue
        what = quantile_name(float(m.quantile or 0.5))
        r = math.ceil(float(n["rank_error"]))
        out.append(
            f"「{t.title}」中的「{m.title}」：{what}从 {n['candidates']} 个事先公开的候选值中"
            f"按差分隐私方法选出，误差以秩（排位）计：在至少 {level}% 的情况下，公布值位于"
            f"真实排位前后 {r:,} {word}之内的两个真实值之间（秩误差 ±{r:,}），另加相邻候选值"
            f"之间的间距；该格人数越多，秩误差占比越小。秩误差超过该格一侧全部人数的{what}不公布。"
        )
    return out


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


def _table_view(spec: ProductSpec, t: TableSpec, frame: pl.DataFrame) -> dict[str, Any]:
    rows = [
        {"suppressed": bool(r.get("suppressed")), "cells": [_cell(v) for v in r.values()]}
        for r in frame.iter_rows(named=True)
    ]
    return {
        "title": t.title,
        "title_en": t.title_en,
        "columns": column_labels(spec, t, frame.columns),
        "rows": rows,
        "uncertainty": uncertainty_sentences(spec, t, frame),
    }


def clamp_for_display(frame: pl.DataFrame) -> pl.DataFrame:
    """Index values within their valid range, for the report only."""
    return frame.with_columns(
        pl.col(c).clip(lo, hi) for c, (lo, hi) in INDEX_RANGES.items() if c in frame.columns
    )


def bands_overlap(bands: dict[str, tuple[list[float | None], list[float | None]]]) -> bool:
    """Whether two districts' bands overlap in some quarter (their ranking is then unsure)."""
    names = list(bands)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for lo_a, hi_a, lo_b, hi_b in zip(*bands[a], *bands[b], strict=True):
                if None in (lo_a, hi_a, lo_b, hi_b):
                    continue
                if lo_a <= hi_b and lo_b <= hi_a:  # type: ignore[operator]
                    return True
    return False


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
        view = _table_view(spec, t, res.frame)
        view["uncertainty"] += quantile_sentences(spec, t, meta.get("noise", {}).get(t.name, []))
        tables.append(view)
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
    idx = spec.index
    assert idx is not None
    # The x axis is the ordered dimension (else the last); one series per key of the first
    # other dimension (one series when the grid has a single dimension).
    x_dim = idx.order or idx.by[-1]
    others = [d for d in idx.by if d != x_dim]
    xs = dimension_keys(spec.dimension(x_dim))
    series: dict[str, list[float | None]] = {}
    bands: dict[str, tuple[list[float | None], list[float | None]]] = {}
    clamped = clamp_for_display(index_frame)
    groups = (
        [
            (k, clamped.filter(pl.col(others[0]) == k))
            for k in dimension_keys(spec.dimension(others[0]))
        ]
        if others
        else [(idx.title, clamped)]
    )
    labels = dimension_labels(spec.dimension(others[0])) if others else {}
    for key, sub in groups:
        name = labels.get(key, key)
        by_x = {r[x_dim]: r for r in sub.iter_rows(named=True)}
        series[name] = [by_x[x]["score"] if x in by_x else None for x in xs]
        bands[name] = (
            [by_x[x]["score_lower"] if x in by_x else None for x in xs],
            [by_x[x]["score_upper"] if x in by_x else None for x in xs],
        )
    svg = [charts.line_chart(xs, series, bands, title=f"{idx.title} {idx.title_en} (0–100)")]
    if len(series) > 1 and bands_overlap(bands):
        # Overlapping bands make the combined chart unreadable and its ranking unsure: each
        # series also gets a small chart of its own.
        notes = [
            *notes,
            "各序列的置信带相互重叠：重叠部分的排名差异不能确定，下方为各序列单独的小图。",
        ]
        svg += [
            charts.line_chart(
                xs,
                {name: series[name]},
                {name: bands[name]},
                title=f"{name} {idx.title}（0–100）",
                width=340,
                height=200,
            )
            for name in series
        ]
    weights = ", ".join(
        f"{c.title} {c.weight:g}{' (−)' if c.direction == 'negative' else ''}"
        for c in idx.components
    )
    tables = [
        _table_view(spec, t, next(r for r in results if r.name == t.name).frame)
        for t in spec.tables
    ]
    shown = clamp_for_display(index_frame)
    index_view = {
        "title": idx.title,
        "title_en": f"{idx.title_en} — weights: {weights}",
        "columns": column_labels(spec, None, shown.columns),
        "rows": [
            {"suppressed": bool(r.get("suppressed")), "cells": [_cell(v) for v in r.values()]}
            for r in shown.iter_rows(named=True)
        ],
        "uncertainty": [
            "各分项已截断到规格声明的有效范围，指数在 0–100 之间；置信带以至少 95% 的概率覆盖"
            "真实指数（保守估计，实际覆盖率更高），是否发布不取决于噪声。",
            "Components are clamped to their declared valid ranges; the band covers the true "
            "score with probability at least 95% (conservative), and whether a score is "
            "released never depends on the noise.",
        ],
    }
    doc = _common(ctx, accuracy, notes)
    doc.update({"charts": [Markup(c) for c in svg], "tables": [index_view, *tables]})
    return _env.get_template("index.html.j2").render(**doc)
