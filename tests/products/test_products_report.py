"""Product reports as a reader sees them: Chinese labels, a plain ± sentence, values within
their valid range, small charts where bands overlap, and no Python reprs."""

from __future__ import annotations

import re

import polars as pl
from products_testkit import frames, ingest_frames

from products import engine
from products import release as rel
from products.report import bands_overlap, clamp_for_display, column_labels
from products.specs import dimension_keys, get
from shuyu_core.home import Home

LEAKS = re.compile(r"<built-in|object at 0x|<bound method|<function ")
JARGON = re.compile(r"_ci95|insured_|\(zCDP\)|-DP<")


def _html(home: Home, product: str) -> str:
    out = engine.build(home, product)
    return (rel.release_dir(home, out.release_id) / "report.html").read_text(encoding="utf-8")


def test_statistical_report_reads_in_chinese_with_a_plain_uncertainty_sentence(
    data_home: Home,
) -> None:
    html = _html(data_home, "si_enrolment_report")
    assert not LEAKS.search(html), LEAKS.search(html)
    headers = " ".join(re.findall(r"<th>([^<]*)</th>", html))
    assert not JARGON.search(headers), headers
    assert "误差范围（±，95%）" in headers
    sentences = re.findall(r"相差不超过 ±([\d,]+) 人。", html)
    assert sentences and all(int(n.replace(",", "")) > 0 for n in sentences)
    assert "ε 越小，保护越强" in html and ")-DP<" not in html


def test_a_published_report_states_no_exact_count_of_its_input_snapshots(
    data_home: Home,
) -> None:
    """A snapshot's row count is an exact registry count: it stays in release.json."""
    out = engine.build(data_home, "si_enrolment_report")
    html = (rel.release_dir(data_home, out.release_id) / "report.html").read_text(encoding="utf-8")
    manifest = rel.load(data_home, out.release_id)
    numbers = {n.replace(",", "") for n in re.findall(r"\d[\d,]*", html)}
    for i in manifest.inputs:
        assert i.rows > 1000
        assert str(i.rows) not in numbers, (i.resource, i.rows)


def test_index_report_clamps_values_and_draws_a_chart_per_district_when_bands_overlap(
    home: Home,
) -> None:
    ingest_frames(home, frames(20000), ["SCZTDJ"])
    html = _html(home, "business_vitality_index")
    assert not LEAKS.search(html), LEAKS.search(html)
    headers = re.findall(r"<th>([^<]*)</th>", html)
    assert "区域营商活力指数" in headers and "新设率" in headers and "score_ci95" not in headers
    spec = get("business_vitality_index")
    districts = len(dimension_keys(spec.dimension("district")))
    # The combined chart, plus one small chart per district when bands overlap (with 6
    # districts and noisy scores they nearly always do; which case it is depends on the noise).
    small = districts if "置信带相互重叠" in html else 0
    assert html.count("<svg") == 1 + small


def test_clamp_for_display_keeps_each_index_column_in_its_range() -> None:
    frame = pl.DataFrame(
        {
            "score": [-3.0, 50.0, 104.0],
            "score_lower": [-9.0, 40.0, 99.0],
            "score_upper": [2.0, 60.0, 110.0],
            "new_rate": [-0.02, 0.1, 1.3],
            "dereg_rate": [-0.01, None, 0.2],
            "capital_per_new": [-5.0, 3.0, 9.0],
            "growth": [-1.4, 0.0, 2.0],
        }
    )
    shown = clamp_for_display(frame)
    assert shown["score"].to_list() == [0.0, 50.0, 100.0]
    assert shown["score_lower"].min() == 0.0 and shown["score_upper"].max() == 100.0
    assert shown["new_rate"].to_list() == [0.0, 0.1, 1.0]
    assert shown["dereg_rate"].to_list() == [0.0, None, 0.2]
    assert shown["capital_per_new"].to_list() == [0.0, 3.0, 9.0]
    assert shown["growth"].to_list() == [-1.0, 0.0, 2.0]
    assert column_labels(get("business_vitality_index"), None, ["new_rate", "score_ci95"]) == [
        "新设率",
        "置信带半宽（覆盖率≥95%）",
    ]


def test_bands_overlap() -> None:
    apart = {"A": ([10.0, 12.0], [20.0, 22.0]), "B": ([30.0, 31.0], [40.0, 41.0])}
    touching = {"A": ([10.0, 12.0], [20.0, 32.0]), "B": ([30.0, 31.0], [40.0, 41.0])}
    hidden = {"A": ([None, 12.0], [None, 20.0]), "B": ([5.0, 30.0], [50.0, 40.0])}
    assert not bands_overlap(apart) and bands_overlap(touching) and not bands_overlap(hidden)
