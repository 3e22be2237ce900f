"""Source-unit reports, the data-supply evaluation, and the CLI contract."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import typer
from accounts_testkit import act_as, seed
from sqlalchemy import select
from typer.testing import CliRunner

from catalogs.catalog import Catalog
from governance.audit import audit_log
from pipelines.cli_quality import register
from quality import api, report
from quality.testing import clean_population, write_snapshot
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home, state_engine
from synthetic_data.generate import SyntheticFrames


def _as(role: str) -> None:
    act_as(Home.from_env(), "t-" + role.replace(":", "-"), role)


@pytest.fixture(autouse=True)
def _operator(home: Home) -> None:
    _as("operator")


def _two_snapshots(home: Home) -> tuple[pl.DataFrame, pl.DataFrame]:
    """An older snapshot with 4 bad phone numbers and 2 missing names, a newer one with 1."""
    res = Catalog.load().get("RKJBXX")
    now = dt.datetime.now(dt.UTC)
    old = clean_population(80, seed=1)
    phones = old["联系电话"].to_list()
    for i in range(4):
        phones[i] = "99" + phones[i][2:]
    names = old["姓名"].to_list()
    names[10] = names[11] = None
    old = old.with_columns(pl.Series("联系电话", phones), pl.Series("姓名", names))
    new = clean_population(80, seed=2)
    phones = new["联系电话"].to_list()
    phones[5] = "12" + phones[5][2:]
    new = new.with_columns(pl.Series("联系电话", phones))
    write_snapshot(home, res, old, ingested_at=now - dt.timedelta(days=2))
    api.run_check(home, "RKJBXX")
    write_snapshot(home, res, new, ingested_at=now - dt.timedelta(days=1))
    api.run_check(home, "RKJBXX")
    return old, new


def test_unit_report_summary_trend_chart_and_no_raw_values(home: Home) -> None:
    old, new = _two_snapshots(home)
    html_path, json_path, doc = api.write_unit_report(home, "SU-GA")
    assert html_path == home.work / "quality" / "SU-GA" / "report.html"
    on_disk = json.loads(json_path.read_text(encoding="utf-8"))
    assert on_disk["summary"] == doc["summary"]
    sec = doc["resources"][0]
    assert sec["code"] == "RKJBXX" and sec["previous_snapshot"] is not None
    phone = next(r for r in sec["rules"] if r["rule"] == "pattern:联系电话")
    assert (phone["failed"], phone["previous_failed"], phone["delta_failed"]) == (1, 4, -3)
    assert [s["row"] for s in phone["samples"]] == [6]
    norm = sec["dimensions"]["normativity"]
    assert norm["delta"] == pytest.approx(norm["score"] - norm["previous"])
    assert norm["delta"] > 0  # fewer bad phones than last time
    comp = sec["dimensions"]["completeness"]
    assert comp["previous"] < 1.0 and comp["score"] == 1.0

    html = html_path.read_text(encoding="utf-8")
    assert html.index("摘要 Summary") < html.index("各数据资源 Resources")
    assert "<svg" in html and "规范性 Normativity" in html
    # Self-contained: nothing fetched from a network (the SVG namespace is only a name).
    for needle in ("<script", "<link", "src=", "href=", "url("):
        assert needle not in html.lower()
    text = html + json_path.read_text(encoding="utf-8")
    for frame in (old, new):
        for col in ("公民身份号码", "姓名", "联系电话"):
            leaked = [v for v in frame[col].drop_nulls().to_list() if v in text]
            assert leaked == [], col
    with state_engine(home).connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.action == "quality.report")).all()
    assert len(rows) == 1


def test_source_unit_is_refused_another_units_report(home: Home) -> None:
    _two_snapshots(home)
    _as("source_unit:SU-RS")
    with pytest.raises(PermissionDenied):
        api.write_unit_report(home, "SU-GA")
    assert not (home.work / "quality" / "SU-GA").exists()
    with state_engine(home).connect() as conn:
        refused = conn.execute(select(audit_log).where(audit_log.c.outcome == "refused")).all()
    assert [(r.action, r.object, r.role) for r in refused] == [
        ("quality.report.read", "quality-report/SU-GA", "source_unit:SU-RS")
    ]
    # Through the CLI: its own report by default, another unit's refused.
    runner = CliRunner()
    out = runner.invoke(_cli(), ["quality", "report", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["unit"]["code"] == "SU-RS"
    out = runner.invoke(_cli(), ["quality", "report", "--unit", "SU-GA"])
    assert isinstance(out.exception, PermissionDenied)
    assert not (home.work / "quality" / "SU-GA").exists()
    # Its own report and a reviewer's read are fine.
    api.write_unit_report(home, "SU-RS")
    _as("source_unit:SU-GA")
    api.write_unit_report(home, "SU-GA")
    _as("reviewer")
    api.write_unit_report(home, "SU-GA")


def _release(home: Home, rid: str, product: str, inputs: list[str]) -> None:
    path = home.releases / rid / "release.json"
    path.parent.mkdir(parents=True)
    doc = {"product_id": product, "inputs": [{"resource": c} for c in inputs]}
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_evaluation_counts_quantity_quality_and_application(
    home: Home, synth: SyntheticFrames, ingest: Any
) -> None:
    for code in ("RKJBXX", "SCZTDJ", "SBCBJF"):
        ingest(code, synth.frames[code])
        api.run_check(home, code)
    _release(home, "p1-v1-a", "p1", ["RKJBXX", "SBCBJF"])
    _release(home, "p1-v2-b", "p1", ["RKJBXX"])
    _release(home, "p2-v1-c", "p2", ["SCZTDJ"])
    rows = {r["unit"]: r for r in api.evaluate_sources(home)}
    assert set(rows) == {"SU-GA", "SU-RS", "SU-SCJG", "SU-YB"}
    ga = rows["SU-GA"]
    assert ga["rows"] == synth.defects["datasets"]["RKJBXX"]["rows"]
    assert (ga["releases_using"], ga["products_using"], ga["application"]) == (2, 1, 1.0)
    assert rows["SU-RS"]["releases_using"] == 1 and rows["SU-SCJG"]["products_using"] == 1
    yb = rows["SU-YB"]  # nothing delivered: no quality measured, no freshness
    assert (yb["resources_delivered"], yb["freshness"], yb["quality"]) == (0, 0.0, None)
    ga_check = api.latest_result(home, "RKJBXX")
    assert ga_check is not None
    assert ga["score_completeness"] == pytest.approx(ga_check.dimensions["completeness"])
    assert ga["tickets_total"] == ga["tickets_waiting"] > 0
    assert ga["score"] > yb["score"]

    _as("source_unit:SU-RS")
    assert [r["unit"] for r in api.evaluate_sources(home)] == ["SU-RS"]


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def test_cli_check_json_contract_tickets_and_csv_export(
    home: Home, synth: SyntheticFrames, ingest: Any, tmp_path: Path
) -> None:
    ingest("RKJBXX", synth.frames["RKJBXX"])
    runner = CliRunner()
    app = _cli()
    out = runner.invoke(app, ["quality", "check", "RKJBXX", "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert list(doc) == ["resource", "snapshot", "dimensions", "rules"]
    assert set(doc["dimensions"]) == {
        "normativity",
        "completeness",
        "accuracy",
        "consistency",
        "timeliness",
        "accessibility",
    }
    stored = api.latest_check(home, "RKJBXX")
    assert stored is not None and stored.contract() == doc

    out = runner.invoke(app, ["tickets", "list", "--format", "json"])
    listed = json.loads(out.stdout)
    failing = {r["rule"]: r["failed"] / r["total"] for r in doc["rules"] if r["failed"]}
    # Stale records (about 0.9% here) stay under the default 5% staleness threshold; any
    # other failure opens a ticket for the population registry's unit.
    assert 0 < failing.pop("max_age:更新日期") < 0.05
    assert {t["rule"] for t in listed} == set(failing)
    assert {t["source_unit"] for t in listed} == {"SU-GA"}

    target = tmp_path / "eval.csv"
    out = runner.invoke(app, ["sources", "evaluate", "--format", "csv", "--out", str(target)])
    assert out.exit_code == 0, out.output
    table = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [r["unit"] for r in table] == ["SU-GA", "SU-RS", "SU-SCJG", "SU-YB"]
    html = report.report_dir(home, "SU-GA") / "report.html"
    out = runner.invoke(app, ["quality", "report", "--unit", "SU-GA"])
    assert out.exit_code == 0 and html.exists()

    # The sweep checks the enterprise registry (new) but not the population registry again.
    ingest("SCZTDJ", synth.frames["SCZTDJ"])
    out = runner.invoke(app, ["quality", "sweep", "--format", "json"])
    assert out.exit_code == 0, out.output
    swept = json.loads(out.stdout)
    assert [d["resource"] for d in swept] == ["SCZTDJ"]
    assert {t["to"] for t in swept[0]["tickets"]} == {"open"}
    out = runner.invoke(app, ["quality", "sweep", "--format", "json"])
    assert json.loads(out.stdout) == []


def test_demo_stage_checks_reports_and_acknowledges(
    home: Home, synth: SyntheticFrames, ingest: Any
) -> None:
    from rich.console import Console

    from catalogs.catalog import Catalog
    from pipelines.demo_accounts import demo_accounts
    from pipelines.demo_quality import stage

    seed(home, demo_accounts(Catalog.load()))
    for code in ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS"):
        ingest(code, synth.frames[code])
    console = Console(record=True, width=120)
    summary = stage(home, console)
    assert set(summary["checks"]) == {"RKJBXX", "SCZTDJ", "SBCBJF", "YBJS"}
    assert set(summary["reports"]) == {"SU-GA", "SU-RS", "SU-SCJG", "SU-YB"}
    for path in summary["reports"].values():
        assert Path(path).exists()
    assert summary["tickets_opened"] > 0 and summary["acknowledged"] is not None
    evaluated = list(csv.DictReader(io.StringIO(Path(summary["evaluation"]).read_text("utf-8"))))
    assert [r["unit"] for r in evaluated] == ["SU-GA", "SU-RS", "SU-SCJG", "SU-YB"]
    out = console.export_text()
    assert str(home.work / "quality") in out.replace("\n", "")
    # A second run re-checks the same snapshots: no new tickets, nothing to acknowledge twice.
    again = stage(home, Console(record=True, width=120))
    assert again["tickets_opened"] == 0


def test_chart_scales_bars_to_the_largest_problem_share() -> None:
    import re

    from quality.charts import problem_bars

    svg = problem_bars([("a", 0.998, 0.999), ("b", 1.0, None), ("c", None, None)])
    widths = [float(w) for w in re.findall(r'<rect x="170" y="\d+" width="([\d.]+)"', svg)]
    # the legend square first, then bars: a now (0.2% = the axis), a before, b now.
    bars = widths[1:]
    assert bars[0] == pytest.approx(680 - 170 - 80)
    assert bars[1] == pytest.approx(bars[0] / 2)
    assert bars[2] == pytest.approx(0.5)  # a zero share still shows a hairline
    assert "0.20%" in svg and "无数据 n/a" in svg and "无上期 none" in svg
