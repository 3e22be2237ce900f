"""The reports (HTML for reviewers, Markdown, JSON) and the verdict rules."""

from __future__ import annotations

import datetime as dt

from assessment.engine import assess, report_paths
from assessment.models import Check, decide
from shuyu_core.home import Home


def _c(name: str, status: str, rectifiable: bool) -> Check:
    return Check(
        dimension="legality",
        name=name,
        title=name,
        status=status,  # type: ignore[arg-type]
        evidence=f"{name} evidence",
        rule="r",
        rectifiable=rectifiable,
    )


def test_verdict_rules() -> None:
    day = dt.date(2026, 3, 1)
    assert decide([_c("a", "pass", False), _c("b", "pass", True)], day) == ("pass", None, [])
    verdict, due, reasons = decide([_c("a", "pass", False), _c("b", "warn", False)], day)
    assert (verdict, due) == ("rectify", dt.date(2026, 3, 31)) and reasons == ["b: b evidence"]
    verdict, due, _ = decide([_c("a", "fail", True), _c("b", "pass", False)], day)
    assert (verdict, due) == ("rectify", dt.date(2026, 3, 31))
    verdict, due, reasons = decide([_c("a", "fail", True), _c("b", "fail", False)], day)
    assert (verdict, due) == ("fail", None)
    assert reasons[0] == "b: b evidence" and reasons[1].startswith("(rectifiable) a")


def test_reports_for_reviewers(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    a = assess(home, releases["si_enrolment_report"])
    paths = report_paths(home, a)
    html = paths["html"].read_text("utf-8")
    # verdict and reasons come before the per-dimension tables
    assert html.index("结论 Verdict") < html.index("各维度检查 Checks by dimension")
    assert "通过 pass" in html
    for label in (
        "合法性 Legality",
        "敏感数据脱敏 Desensitization",
        "准确性 Accuracy",
        "流通交易风险性",
        "特定主体知情同意",
    ):
        assert label in html
    # budget spent and remaining, accuracy chart, spec and lineage
    assert "隐私预算 Privacy budget" in html and "剩余 ρ remaining" in html
    budget = a.context["budget"]
    assert {b["resource"] for b in budget} == {"RKJBXX", "SBCBJF"}
    for b in budget:
        assert abs(b["spent_rho"] + b["remaining_rho"] - b["total_rho"]) < 1e-9
        assert b["spent_rho"] >= b["charged_rho"]
    assert html.count("<svg") >= 2
    assert "share of released cells meeting the target" in html
    assert "reference_period" in html and "SBCBJF" in html and "公民身份号码" in html
    md = paths["md"].read_text("utf-8")
    assert md.startswith("# 发布前评估报告") and "| check | status | evidence |" in md
    assert a.contract()["checks"][0] == a.checks[0].contract()


def test_rectify_verdict_has_due_date(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    # assessed 40 days on, the daily-updated enterprise registry snapshot is stale (时效性):
    # a rectifiable warning, so the verdict is rectify with a due date 30 days later
    day = dt.date.today() + dt.timedelta(days=40)
    a = assess(home, releases["business_vitality_index"], at=day)
    assert a.check("snapshot_age").status == "warn"
    assert a.verdict == "rectify" and a.due_date == day + dt.timedelta(days=30)
    assert any(r.startswith("snapshot_age") for r in a.reasons)
