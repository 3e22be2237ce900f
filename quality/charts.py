"""Inline SVG charts for the quality reports (no script, no CDN, no network)."""

from __future__ import annotations

import math
from html import escape

BAR_NOW = "#c05621"
BAR_PREV = "#a0aec0"


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above ``value`` (at least 0.01%)."""
    value = max(value, 0.0001)
    exp = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        top = step * 10.0**exp
        if top >= value - 1e-15:
            return top
    return 10.0 ** (exp + 1)


def _fmt_pct(v: float) -> str:
    pct = v * 100
    return f"{pct:.3f}%" if pct < 0.1 else f"{pct:.2f}%"


def problem_bars(
    rows: list[tuple[str, float | None, float | None]], width: int = 680, title: str = ""
) -> str:
    """Horizontal bars of the problem share (1 − score) per dimension, this period over the
    previous one.

    Scores near 100% all look alike on a 0–100% axis, so the chart shows what is wrong
    instead, on an axis that ends just above the largest share; every bar carries its value
    so the chart reads without colour. ``rows`` are (label, score now, score before).
    """
    label_w, value_w, bar_h, gap, top = 170, 80, 12, 14, 44
    plot_w = width - label_w - value_w
    shares = [1 - s for _, now, prev in rows for s in (now, prev) if s is not None]
    axis = _nice_max(max(shares, default=0.0))
    height = top + len(rows) * (2 * bar_h + gap) + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{label_w}" y="4" width="10" height="10" fill="{BAR_NOW}"/>'
        f'<text x="{label_w + 14}" y="13">本期 current</text>'
        f'<rect x="{label_w + 110}" y="4" width="10" height="10" fill="{BAR_PREV}"/>'
        f'<text x="{label_w + 124}" y="13">上期 previous</text>'
        f'<text x="{label_w + 240}" y="13" fill="#4a5568">越低越好 lower is better</text>',
    ]
    for i in range(5):
        frac = i / 4
        x = label_w + plot_w * frac
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 4}" '
            'stroke="#e2e8f0"/>'
            f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" fill="#718096" '
            f'font-size="10">{_fmt_pct(axis * frac)}</text>'
        )
    y = top
    for label, now, prev in rows:
        out.append(f'<text x="0" y="{y + bar_h + 4}">{escape(label)}</text>')
        for i, (score, color) in enumerate(((now, BAR_NOW), (prev, BAR_PREV))):
            yy = y + i * bar_h
            if score is None:
                out.append(
                    f'<text x="{label_w + 4}" y="{yy + bar_h - 2}" fill="#718096">'
                    f"{'无数据 n/a' if i == 0 else '无上期 none'}</text>"
                )
                continue
            share = 1 - score
            w = plot_w * min(share / axis, 1.0)
            out.append(
                f'<rect x="{label_w}" y="{yy}" width="{max(w, 0.5):.1f}" '
                f'height="{bar_h - 1}" fill="{color}"/>'
                f'<text x="{label_w + plot_w + 6}" y="{yy + bar_h - 2}">{_fmt_pct(share)}</text>'
            )
        y += 2 * bar_h + gap
    out.append("</svg>")
    return "".join(out)
