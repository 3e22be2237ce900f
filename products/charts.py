"""Small inline-SVG charts for the HTML reports (no JavaScript, no CDN: the report is one file)."""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030", "#2c7a7b", "#4a5568"]


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= value:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}"


def bar_chart(
    categories: list[str],
    series: dict[str, list[float | None]],
    errors: dict[str, list[float | None]] | None = None,
    title: str = "",
    unit: str = "",
    width: int = 720,
    height: int = 300,
) -> str:
    """Grouped vertical bars; ``errors`` draws ± whiskers (CI half-widths). None = withheld."""
    left, right, top, bottom = 70, 20, 36, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = 0.0
    for name, vals in series.items():
        errs = (errors or {}).get(name, [None] * len(vals))
        for v, e in zip(vals, errs, strict=True):
            if v is not None:
                peak = max(peak, v + (e or 0.0))
    ymax = _nice_max(peak)
    n_cat, n_ser = max(len(categories), 1), max(len(series), 1)
    group_w = plot_w / n_cat
    bar_w = group_w * 0.8 / n_ser
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e2e8f0"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
            f"{_fmt(ymax * i / 4)}</text>"
        )
    for s_idx, (name, vals) in enumerate(series.items()):
        color = PALETTE[s_idx % len(PALETTE)]
        errs = (errors or {}).get(name, [None] * len(vals))
        for c_idx, (v, e) in enumerate(zip(vals, errs, strict=True)):
            x = left + c_idx * group_w + group_w * 0.1 + s_idx * bar_w
            if v is None:
                parts.append(
                    f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - 4}" font-size="9" '
                    f'text-anchor="middle" fill="#a0aec0">–</text>'
                )
                continue
            h = max(v, 0.0) / ymax * plot_h
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w * 0.95:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{escape(name)} {escape(categories[c_idx])}'
                f": {_fmt(v)}{escape(unit)}</title></rect>"
            )
            if e:
                cx = x + bar_w * 0.475
                y1 = top + plot_h - min(v + e, ymax) / ymax * plot_h
                y2 = top + plot_h - max(v - e, 0.0) / ymax * plot_h
                parts.append(
                    f'<line x1="{cx:.1f}" y1="{y1:.1f}" x2="{cx:.1f}" y2="{y2:.1f}" '
                    f'stroke="#1a202c" stroke-width="1"/>'
                )
    for c_idx, cat in enumerate(categories):
        x = left + c_idx * group_w + group_w / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">'
            f"{escape(cat)}</text>"
        )
    parts.append(_legend(list(series), left, height - 24))
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: list[str], x0: float, y: float) -> str:
    parts = []
    x = x0
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14:.1f}" y="{y:.1f}" font-size="11">{escape(name)}</text>'
        )
        x += 24 + 8 * len(name) + 6 * sum(1 for ch in name if ord(ch) > 0x2E80)
    return "".join(parts)


def line_chart(
    x_labels: list[str],
    series: dict[str, list[float | None]],
    bands: dict[str, tuple[list[float | None], list[float | None]]] | None = None,
    title: str = "",
    y_range: tuple[float, float] = (0.0, 100.0),
    width: int = 720,
    height: int = 320,
) -> str:
    """Lines with shaded uncertainty bands (e.g. index scores with their 95% band)."""
    left, right, top, bottom = 50, 20, 36, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    lo_y, hi_y = y_range
    n = max(len(x_labels) - 1, 1)

    def px(i: int) -> float:
        return left + plot_w * i / n

    def py(v: float) -> float:
        v = min(max(v, lo_y), hi_y)
        return top + plot_h - (v - lo_y) / (hi_y - lo_y) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):
        tick = lo_y + (hi_y - lo_y) * i / 4
        parts.append(
            f'<line x1="{left}" y1="{py(tick):.1f}" x2="{width - right}" y2="{py(tick):.1f}" '
            f'stroke="#e2e8f0"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" '
            f'font-size="10">{_fmt(tick)}</text>'
        )
    for s_idx, (name, vals) in enumerate(series.items()):
        color = PALETTE[s_idx % len(PALETTE)]
        if bands and name in bands:
            lows, highs = bands[name]
            pts_hi = [(px(i), py(h)) for i, h in enumerate(highs) if h is not None]
            pts_lo = [(px(i), py(b)) for i, b in enumerate(lows) if b is not None]
            if pts_hi and pts_lo:
                poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in [*pts_hi, *reversed(pts_lo)])
                parts.append(f'<polygon points="{poly}" fill="{color}" fill-opacity="0.12"/>')
        segment: list[str] = []
        for i, v in enumerate(vals):
            if v is None:
                if len(segment) > 1:
                    parts.append(
                        f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" '
                        'stroke-width="2"/>'
                    )
                segment = []
                continue
            segment.append(f"{px(i):.1f},{py(v):.1f}")
            parts.append(
                f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="2.5" fill="{color}">'
                f"<title>{escape(name)} {escape(x_labels[i])}: {v:.1f}</title></circle>"
            )
        if len(segment) > 1:
            parts.append(
                f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" '
                'stroke-width="2"/>'
            )
    for i, label in enumerate(x_labels):
        parts.append(
            f'<text x="{px(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f'font-size="10">{escape(label)}</text>'
        )
    parts.append(_legend(list(series), left, height - 24))
    parts.append("</svg>")
    return "".join(parts)
