"""The publication gate: review decisions, publication, the catalog and disclosure listing, and
every way around the gate (unassessed, failed verdict, not approved, changed since approval,
a write by another command)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from accounts_testkit import act_as
from assessment_testkit import agreements_copy
from sqlalchemy import select
from typer.testing import CliRunner

from assessment import engine, publish, review
from governance.actors import set_current
from governance.audit import audit_log
from shuyu_core.errors import NotFoundError, PermissionDenied, ValidationError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home, state_engine

SI = "si_enrolment_report"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def as_role(home: Home) -> Iterator[object]:
    def switch(role: str) -> None:
        act_as(home, "test-" + role.replace(":", "-"), role)

    yield switch
    set_current(None)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _audit(home: Home, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.object, audit_log.c.outcome, audit_log.c.details).where(
                audit_log.c.action == action
            )
        ).all()
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


def _approve(home: Home, release_id: str, as_role: object) -> None:
    engine.assess(home, release_id)
    as_role("reviewer")  # type: ignore[operator]
    review.decide(home, release_id, "approve", "评估通过")
    as_role("operator")  # type: ignore[operator]


def test_publish_after_pass_and_approval(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    home, releases = demo
    rid = releases[SI]
    _approve(home, rid, as_role)
    doc = publish.publish(home, rid)
    target = home.published / "products" / rid
    assert doc["path"] == str(target)
    manifest = json.loads((home.releases / rid / "release.json").read_text("utf-8"))
    for out in manifest["outputs"]:
        assert sm3_file(target / out["path"]) == out["sm3"]
    reg = json.loads((target / "registration.json").read_text("utf-8"))
    for key in ("product_code", "name", "version", "sources", "purpose_category"):
        assert reg[key]
    assert reg["verdict"] == "pass" and reg["reviewer"].startswith("test-reviewer")
    assert {s["resource"] for s in reg["sources"]} == {"SBCBJF", "RKJBXX"}
    catalog = json.loads((home.published / "catalog.json").read_text("utf-8"))
    assert [p["release"] for p in catalog["products"]] == [rid]
    disclosure = json.loads((home.published / "disclosure.json").read_text("utf-8"))
    usage = {u["resource"]: u for u in disclosure["resource_usage"]}
    assert usage["SBCBJF"]["published_products"] == 1
    assert usage["SCZTDJ"]["published_products"] == 0
    assert usage["RKJBXX"]["releases_built"] >= 3  # si, verification, medical
    assert disclosure["products_and_services"][0]["pricing_note"].startswith("公益无偿")
    html = (home.published / "disclosure.html").read_text("utf-8")
    assert "信息披露" in html and "社会保险参保情况统计报告" in html
    assert "公共数据产品目录" in (home.published / "catalog.html").read_text("utf-8")
    # publishing again changes nothing
    products = home.published / "products"
    before = {f: sm3_file(products / f) for f in _files(products)}
    publish.publish(home, rid)
    assert before == {f: sm3_file(products / f) for f in _files(products)}
    outcomes = [o for obj, o, _ in _audit(home, "publish") if obj == rid]
    assert outcomes == ["ok", "ok"]
    assert [o for obj, o, _ in _audit(home, "review.approve") if obj == rid] == ["ok"]
    assert any(d["verdict"] == "pass" for _, _, d in _audit(home, "assessment.run"))


def _refused(home: Home, rid: str, match: str) -> None:
    before = _files(home.published)
    with pytest.raises(PermissionDenied, match=match):
        publish.publish(home, rid)
    assert _files(home.published) == before
    assert (rid, "refused") in [(obj, o) for obj, o, _ in _audit(home, "publish")]


def test_unassessed_release_is_refused(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    _refused(home, releases[SI], "has not been assessed")
    assert not (home.published / "products").exists()


def test_not_approved_rejected_or_rectify_is_refused(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    home, releases = demo
    rid = releases["business_vitality_index"]
    engine.assess(home, rid)
    _refused(home, rid, "not approved \\(no reviewer decision\\)")
    as_role("reviewer")  # type: ignore[operator]
    review.decide(home, rid, "reject", "不符合要求")
    as_role("operator")  # type: ignore[operator]
    _refused(home, rid, "decision reject")
    as_role("reviewer")  # type: ignore[operator]
    r = review.decide(home, rid, "rectify", "补充说明")
    as_role("operator")  # type: ignore[operator]
    assert r.due_date is not None and (r.due_date - r.decided_at.date()).days == 30
    _refused(home, rid, "decision rectify")


def test_failed_verdict_cannot_be_approved_or_published(
    demo: tuple[Home, dict[str, str]],
    as_role: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, releases = demo
    rid = releases[SI]
    # make the release fail: a tampered output file (integrity)
    out = home.releases / rid / "data" / "insured_by_district_age_sex.csv"
    out.write_text(out.read_text("utf-8") + "\n", encoding="utf-8")
    a = engine.assess(home, rid)
    assert a.verdict == "fail" and a.check("file_integrity").status == "fail"
    as_role("reviewer")  # type: ignore[operator]
    with pytest.raises(PermissionDenied, match="verdict is fail"):
        review.decide(home, rid, "approve", "ok")
    as_role("operator")  # type: ignore[operator]
    _refused(home, rid, "verdict is fail")


def test_approved_then_spec_changed_is_refused(
    demo: tuple[Home, dict[str, str]], as_role: object, spec_dir: Path
) -> None:
    home, releases = demo
    rid = releases[SI]
    _approve(home, rid, as_role)
    path = spec_dir / f"{SI}.yaml"
    doc = yaml.safe_load(path.read_text("utf-8"))
    doc["description"] = doc["description"] + " (edited after approval)"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _refused(home, rid, "current_spec_sm3 changed since assessment")
    # re-assessing shows the cause: same version, different spec
    a = engine.assess(home, rid)
    assert a.verdict == "fail" and a.check("spec_unchanged").status == "fail"


def test_approved_then_output_changed_or_reassessed_is_refused(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    home, releases = demo
    rid = releases["identity_verification"]
    _approve(home, rid, as_role)
    engine.assess(home, rid)  # a newer assessment than the approved one
    _refused(home, rid, "approval was given on")
    _approve(home, rid, as_role)
    res = home.releases / rid / "data" / "results.json"
    res.write_text(res.read_text("utf-8").replace('"refused"', '"match"'), encoding="utf-8")
    _refused(home, rid, "outputs_sm3, release_seal changed")


def test_roles(demo: tuple[Home, dict[str, str]], as_role: object) -> None:
    home, releases = demo
    rid = releases[SI]
    as_role("developer:dev-001")  # type: ignore[operator]
    with pytest.raises(PermissionDenied, match=r"may not assessment\.run"):
        engine.assess(home, rid)
    as_role("operator")  # type: ignore[operator]
    engine.assess(home, rid)
    with pytest.raises(PermissionDenied, match=r"may not review\.approve"):
        review.decide(home, rid, "approve", "self-approval")
    as_role("reviewer")  # type: ignore[operator]
    with pytest.raises(ValidationError, match="needs a comment"):
        review.decide(home, rid, "approve", "  ")
    review.decide(home, rid, "approve", "ok")
    with pytest.raises(PermissionDenied, match="may not publish"):
        publish.publish(home, rid)
    shown = review.show(home, rid)
    assert shown["decisions"][0]["decision"] == "approve"
    assert not (home.published / "products").exists()
    refusals = [o for _, o, _ in _audit(home, "review.approve")]
    assert "refused" in refusals


def test_unknown_release(demo: tuple[Home, dict[str, str]]) -> None:
    home, _ = demo
    with pytest.raises(NotFoundError):
        engine.assess(home, "no_such-v1.0.0-0000000000000000")
    with pytest.raises(NotFoundError):
        publish.publish(home, "no_such-v1.0.0-0000000000000000")


def test_cli_contract_and_no_other_command_writes_published(
    demo: tuple[Home, dict[str, str]],
) -> None:
    from pipelines.cli import _register, app
    from pipelines.cli_assessment import register

    _register()
    if not any(getattr(c, "name", None) == "assess" for c in app.registered_commands):
        register(app)
    home, releases = demo
    runner = CliRunner()
    rid = releases["medical_desensitized_extract"]
    res = runner.invoke(app, ["assess", rid, "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert list(doc) == ["release", "product", "verdict", "checks"]
    assert doc["release"] == rid and doc["product"] == "medical_desensitized_extract"
    assert doc["verdict"] in ("pass", "fail", "rectify")
    for c in doc["checks"]:
        assert list(c) == ["dimension", "name", "status", "evidence"]
        assert c["status"] in ("pass", "warn", "fail")
    md = runner.invoke(app, ["assess", rid, "--format", "md"])
    assert md.exit_code == 0 and "发布前评估报告" in md.stdout
    # other commands that touch the domain leave published/ alone
    before = _files(home.published)
    for args in (
        ["build", SI],
        ["budget", "show", "--format", "json"],
        ["releases", "show", rid],
        ["--actor", "test-reviewer", "--role", "reviewer", "review", "show", rid],
        ["published", "list", "--format", "json"],
        ["published", "disclosure", "--format", "json"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
    assert _files(home.published) == before


def test_only_the_gate_writes_to_published() -> None:
    """Static: outside the gate, no module refers to the published zone except to print it."""
    allowed = {
        "shuyu_core/home.py",  # defines the zone
        "assessment/publish.py",  # the gate
        "pipelines/demo.py",  # prints the path
        "pipelines/demo_assessment.py",  # prints the path
        "pipelines/cli_assessment.py",  # names the 'published' command group
        "governance/zones.py",  # refuses any --out into the zone
    }
    pattern = re.compile(r"\.published\b|[\"']published[\"']\s*[/)]|/\s*[\"']published[\"']")
    offenders = []
    for pkg in (
        "assessment",
        "pipelines",
        "products",
        "privacy",
        "transforms",
        "quality",
        "governance",
        "catalogs",
        "shuyu_core",
        "synthetic_data",
    ):
        for path in (REPO / pkg).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            if rel in allowed:
                continue
            if pattern.search(path.read_text(encoding="utf-8")):
                offenders.append(rel)
    assert offenders == []


def test_assessment_as_of_another_day_cannot_authorize_publication(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    home, releases = demo
    rid = releases[SI]
    engine.assess(home, rid, at=dt.date.today() - dt.timedelta(days=1))
    as_role("reviewer")  # type: ignore[operator]
    with pytest.raises(PermissionDenied, match="was made as of"):
        review.decide(home, rid, "approve", "ok")
    as_role("operator")  # type: ignore[operator]


def test_agreement_expiring_after_approval_blocks_publication(
    demo: tuple[Home, dict[str, str]],
    as_role: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, releases = demo
    rid = releases[SI]
    _approve(home, rid, as_role)
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()

    def expire(docs: dict[str, dict[str, object]]) -> None:
        docs["DA-2025-001"]["term"]["end"] = yesterday  # type: ignore[index]

    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements_copy(tmp_path / "ag", expire)))
    _refused(home, rid, "agreement_expired")
