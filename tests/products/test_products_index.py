"""The business vitality index as a built release."""

from __future__ import annotations

import polars as pl
from products_testkit import frames, ingest_frames

from privacy.dp import ledger
from products import engine
from products import release as rel
from shuyu_core.home import Home


def test_index_release(home: Home) -> None:
    ingest_frames(home, frames(20000), ["SCZTDJ"])
    out = engine.build(home, "business_vitality_index")
    m = out.manifest
    root = rel.release_dir(home, m.release_id)
    assert m.kind == "index" and m.purpose_category == "industry"
    assert m.budget is not None and [e.resource for e in m.budget.entries] == ["SCZTDJ"]
    # The data's period pays: the reference period ends in 2025.
    assert ledger.show(home, "SCZTDJ", period="2025")["budgets"][0]["spent"]["rho"] == m.budget.rho
    idx = pl.read_parquet(root / "data/vitality_index.parquet")
    assert idx.height == 6 * 8
    shown = idx.filter(~pl.col("suppressed"))
    # Since a score is withheld with any withheld cell it depends on (the active stock uses
    # every earlier quarter), few or no scores show at this small population.
    assert (
        shown.select(
            (pl.col("score").is_between(0, 100))
            & (pl.col("score_lower") <= pl.col("score"))
            & (pl.col("score") <= pl.col("score_upper"))
        )
        .to_series()
        .all()
    )
    hidden = idx.filter(pl.col("suppressed"))
    assert hidden["score"].is_null().all() and hidden["suppression_reason"].is_not_null().all()
    # A withheld score's band (simulated around it) and its reason reveal nothing of it.
    assert hidden["score_ci95"].is_null().all()
    # Reasons name only a withheld input (never a noisy value or the band's width).
    assert all(
        all(part.endswith("an input cell it depends on is withheld") for part in r.split("; "))
        for r in hidden["suppression_reason"]
    )
    assert set(m.derived_from["vitality_index"]) == {x.output for x in m.mechanisms}
    # The components follow from the released noisy tables (post-processing only).
    new = pl.read_parquet(root / "data/new_registrations.parquet")
    assert new.height == 6 * 8 and {"new", "new_ci95", "capital_per_new"} <= set(new.columns)
    scores = [c for c in m.accuracy if c.output == "vitality_index"]
    assert len(scores) == 48 and all(c.method == "interval" for c in scores)
    assert {b.measure for b in m.contribution_bounds} == {"count", "capital"}
    assert any("至少为 95%" in n and "conditional on the score" in n for n in m.notes)
    html = (root / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "区域营商活力指数" in html
    # Only the declared fields were read: the manifest lists exactly them.
    assert m.inputs[0].fields == [
        "统一社会信用代码",
        "成立日期",
        "注销日期",
        "注册资本",
        "区划代码",
    ]


def test_index_with_released_scores_passes_the_assessment(home: Home) -> None:
    """At demo scale (about 20 000 enterprises) most scores are released; every released score
    is tied to its accuracy statement (method "interval") and the bands meet the target."""
    from assessment.engine import assess

    ingest_frames(home, frames(200000), ["SCZTDJ"])
    out = engine.build(home, "business_vitality_index")
    idx = pl.read_parquet(rel.release_dir(home, out.release_id) / "data/vitality_index.parquet")
    shown = idx.filter(~pl.col("suppressed"))
    assert shown.height >= 24
    a = assess(home, out.release_id)
    assert a.check("ledger_tied").status == "pass", a.check("ledger_tied").evidence
    assert a.check("accuracy_target").status == "pass", a.check("accuracy_target").evidence
    # The snapshot here had no quality check (the demo runs one): the only other warning.
    others = {c.name for c in a.checks if c.status != "pass"}
    assert others <= {"input_completeness"}, [(c.name, c.evidence) for c in a.checks]
