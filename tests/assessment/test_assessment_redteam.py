"""Red-team attacks on the trust model, each tried and refused with its audit entry.

Whoever can write the state database or the files under ``work/`` (every operator's login can)
must not be able to stand in for another person's decision: the verdict a reviewer sees, the
approval an operator publishes on, and the domain policy in force are each re-checked against
the audit chain, never taken from a table row or a report file alone.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from accounts_testkit import TEST_ADMIN, act_as
from assessment_testkit import forge
from sqlalchemy import delete, update

from assessment import engine, publish, review
from governance import audit, domain_policy
from governance.identity import login_name
from shuyu_core import snapshots
from shuyu_core.errors import IntegrityError, PermissionDenied, ValidationError
from shuyu_core.home import Home, state_engine

SI = "si_enrolment_report"


def _last_refusal(home: Home, action: str) -> dict[str, object]:
    found = [e for e in audit.tail(home, 10) if e["action"] == action]
    assert found, f"no {action} entry"
    entry = found[-1]
    assert entry["outcome"] == "refused"
    return entry


def _approved(home: Home, rid: str) -> engine.Assessment:
    a = engine.assess(home, rid)
    act_as(home, "test-reviewer", "reviewer")
    review.decide(home, rid, "approve", "同意发布")
    act_as(home, "test-operator", "operator")
    return a


def test_a_forged_approval_row_is_not_published(demo: tuple[Home, dict[str, str]]) -> None:
    """An operator inserts an 'approve' decision (naming a reviewer) straight into the table."""
    home, releases = demo
    rid = releases[SI]
    a = engine.assess(home, rid)
    with state_engine(home).begin() as conn:
        conn.execute(
            review.review_decisions.insert().values(
                release_id=rid,
                assessment_id=a.assessment_id,
                decision="approve",
                comment="同意",
                reviewer="test-reviewer",
                decided_at=a.assessed_at.replace(tzinfo=None),
                due_date=None,
            )
        )
    act_as(home, "test-operator", "operator")
    with pytest.raises(PermissionDenied, match="audit") as info:
        publish.publish(home, rid)
    assert info.value.audited
    assert "approval" in str(_last_refusal(home, "publish")["details"])
    assert not (home.published / "products" / rid).exists()


def test_a_rejection_turned_into_an_approval_in_the_table_is_not_published(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases[SI]
    engine.assess(home, rid)
    act_as(home, "test-reviewer", "reviewer")
    review.decide(home, rid, "reject", "不同意")
    with state_engine(home).begin() as conn:
        conn.execute(
            update(review.review_decisions)
            .where(review.review_decisions.c.release_id == rid)
            .values(decision="approve")
        )
    act_as(home, "test-operator", "operator")
    with pytest.raises(PermissionDenied, match="audit"):
        publish.publish(home, rid)
    _last_refusal(home, "publish")
    assert not (home.published / "products" / rid).exists()


def test_an_approval_relabelled_to_another_reviewer_is_not_published(
    demo: tuple[Home, dict[str, str]],
) -> None:
    """The approver edits the row so that the publish four-eyes check sees someone else."""
    home, releases = demo
    rid = releases[SI]
    _approved(home, rid)
    with state_engine(home).begin() as conn:
        conn.execute(
            update(review.review_decisions)
            .where(review.review_decisions.c.release_id == rid)
            .values(reviewer="someone-else")
        )
    with pytest.raises(PermissionDenied, match="audit"):
        publish.publish(home, rid)
    _last_refusal(home, "publish")


def test_a_genuine_approval_still_publishes(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases[SI]
    _approved(home, rid)
    assert publish.publish(home, rid)["release"] == rid


def test_an_edited_assessment_verdict_is_neither_approved_nor_published(
    demo: tuple[Home, dict[str, str]],
) -> None:
    """The assessment report file under work/ says what the reviewer and publish read: an
    operator rewrites a failing verdict to pass (and the reasons away)."""
    home, releases = demo
    rid = releases[SI]
    a = engine.assess(home, rid)
    path = engine.reports_root(home) / rid / a.assessment_id / "assessment.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["verdict"] = "pass"
    data["reasons"] = []
    data["checks"] = data["checks"][:1]  # drop the findings the reviewer would have read
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    act_as(home, "test-reviewer", "reviewer")
    with pytest.raises(IntegrityError, match="assessment") as info:
        review.decide(home, rid, "approve", "同意")
    assert info.value.audited
    entry = _last_refusal(home, "assessment.evidence")
    assert "differs from its audited SM3" in str(entry["details"])
    act_as(home, "test-operator", "operator")
    with pytest.raises(IntegrityError, match="assessment"):
        publish.publish(home, rid)


def test_an_assessment_row_pointing_at_another_report_is_not_followed(
    demo: tuple[Home, dict[str, str]], tmp_path: Path
) -> None:
    """The row's report_dir is never read: the report lives at its id's one place."""
    home, releases = demo
    rid = releases[SI]
    a = engine.assess(home, rid)
    src = engine.reports_root(home) / rid / a.assessment_id
    fake = tmp_path / "elsewhere"
    fake.mkdir()
    data = json.loads((src / "assessment.json").read_text(encoding="utf-8"))
    data["checks"] = []
    (fake / "assessment.json").write_text(json.dumps(data), encoding="utf-8")
    with state_engine(home).begin() as conn:
        conn.execute(
            update(engine.assessment_runs)
            .where(engine.assessment_runs.c.assessment_id == a.assessment_id)
            .values(report_dir=str(fake))
        )
    assert engine.latest(home, rid) == a


def test_an_edited_stored_verdict_is_refused(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases[SI]
    a = engine.assess(home, rid)
    with state_engine(home).begin() as conn:
        conn.execute(
            update(engine.assessment_runs)
            .where(engine.assessment_runs.c.assessment_id == a.assessment_id)
            .values(verdict="fail" if a.verdict == "pass" else "pass")
        )
    act_as(home, "test-operator", "operator")
    with pytest.raises(IntegrityError, match="verdict"):
        publish.publish(home, rid)
    _last_refusal(home, "assessment.evidence")


def _policy_file(directory: Path, sod: str) -> Path:
    path = directory / f"policy-{abs(hash(sod))}.yaml"
    path.write_text(
        f"service_accounts: [{{name: {login_name()}}}]\nseparation_of_duties: {sod}\n",
        encoding="utf-8",
    )
    return path


def test_deleting_the_newest_policy_version_does_not_replay_an_older_one(
    demo: tuple[Home, dict[str, str]], tmp_path: Path
) -> None:
    home, _ = demo
    relaxed = _policy_file(tmp_path, "{enabled: false, reason: 试点}")
    strict = _policy_file(tmp_path, "{enabled: true}")
    domain_policy.apply(home, domain_policy.load_file(relaxed), "pilot", "test-admin", TEST_ADMIN)
    domain_policy.apply(home, domain_policy.load_file(strict), "end", "test-admin", TEST_ADMIN)
    assert domain_policy.effective(home).separation_of_duties.enabled
    with state_engine(home).begin() as conn:
        newest = max(
            r[0] for r in conn.execute(domain_policy.domain_policy_versions.select()).all()
        )
        conn.execute(
            delete(domain_policy.domain_policy_versions).where(
                domain_policy.domain_policy_versions.c.version == newest
            )
        )
    with pytest.raises(IntegrityError, match="policy") as info:
        domain_policy.effective(home)
    assert info.value.audited
    _last_refusal(home, "policy.verify")


def test_deleting_every_policy_version_does_not_fall_back_to_an_environment_file(
    demo: tuple[Home, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a policy was applied, SHUYU_DOMAIN_POLICY (anyone's environment) is never read:
    otherwise a login names itself a service account and acts as any account."""
    home, _ = demo
    strict = _policy_file(tmp_path, "{enabled: true}")
    domain_policy.apply(home, domain_policy.load_file(strict), "init", "test-admin", TEST_ADMIN)
    with state_engine(home).begin() as conn:
        conn.execute(delete(domain_policy.domain_policy_versions))
    monkeypatch.setenv(
        "SHUYU_DOMAIN_POLICY", str(_policy_file(tmp_path, "{enabled: false, reason: x}"))
    )
    with pytest.raises(IntegrityError, match="policy") as info:
        domain_policy.effective(home)
    assert info.value.audited
    _last_refusal(home, "policy.verify")


MED = "medical_desensitized_extract"
EXTRACT = "data/extract.parquet"


def _cycle(values: pl.Series, n: int) -> pl.Series:
    return pl.Series(values.name, (values.to_list() * (n // values.len() + 1))[:n])


@pytest.mark.parametrize(
    "kind",
    ["categorical_remark", "float_mobile", "list_of_ids", "struct_remark", "decimal_mobile"],
)
def test_identifiers_in_non_text_column_types_are_found(
    demo: tuple[Home, dict[str, str]], kind: str
) -> None:
    """Free text and identifiers moved into columns the screens skipped by type: categorical
    remarks, mobiles stored as floats or decimals, ID numbers inside lists or structs."""
    home, releases = demo
    people = snapshots.scan(home, "RKJBXX", columns=["公民身份号码"]).collect()

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        df = pl.read_parquet(stage / EXTRACT)
        n = df.height
        i = pl.int_range(pl.len())
        ids = pl.lit(_cycle(people["公民身份号码"], n))
        mobile = (pl.lit(13812340000, pl.Int64) + i % 9000).alias("m")
        remark = (
            pl.when(i % 40 == 0)
            .then(pl.format("请致电{}复查", mobile.cast(pl.String)))
            .otherwise(pl.lit("复诊，无特殊"))
        )
        col = {
            "categorical_remark": remark.cast(pl.Categorical),
            "float_mobile": mobile.cast(pl.Float64),
            "decimal_mobile": mobile.cast(pl.Decimal(20, 0)),
            "list_of_ids": pl.concat_list([ids]),
            "struct_remark": pl.struct(remark.alias("text")),
        }[kind]
        out = df.with_columns(col.alias("备注"))
        out.write_parquet(stage / EXTRACT)
        doc["outputs"] = [o for o in doc["outputs"] if o["format"] == "parquet"]
        doc["outputs"][0]["columns"].append(
            {
                "name": "备注",
                "type": str(out.schema["备注"]),
                "sources": [],
                "operator": "keep",
                "params": {},
            }
        )

    a = engine.assess(home, forge(home, releases[MED], kind, mutate))
    failed = {c.name for c in a.checks if c.status == "fail"}
    assert a.verdict == "fail"
    assert failed & {"free_text_screening", "raw_identifiers"}, (failed, kind)


def test_a_second_format_of_an_output_is_screened_too(demo: tuple[Home, dict[str, str]]) -> None:
    """The extract ships as Parquet and CSV; only one was read by the content checks, so raw
    ID numbers written into the other format alone went unseen."""
    home, releases = demo
    people = snapshots.scan(home, "RKJBXX", columns=["公民身份号码"]).collect()

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        others = [o for o in doc["outputs"] if o["name"] == "extract" and o["format"] != "parquet"]
        assert others, [o["path"] for o in doc["outputs"]]
        for o in others:
            path = stage / o["path"]
            if o["format"] != "csv":
                continue
            df = pl.read_csv(path, infer_schema=False)
            col = df.columns[0]
            df = df.with_columns(pl.lit(_cycle(people["公民身份号码"], df.height)).alias(col))
            df.write_csv(path)

    a = engine.assess(home, forge(home, releases[MED], "csvleak", mutate))
    assert a.verdict == "fail"
    failed = {c.name for c in a.checks if c.status == "fail"}
    assert failed & {"free_text_screening", "raw_identifiers"}, failed


def test_a_file_swapped_while_assessed_fails_file_integrity(
    demo: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The content checks read a clean stand-in; the sealed file is back in place by the time
    its digest is recomputed. The digest of the bytes actually judged must match the seal."""
    from assessment import checks

    home, releases = demo
    rid = releases[MED]
    target = Path(home.releases / rid / EXTRACT)
    sealed = target.read_bytes()
    original = checks.Ctx.load_frames

    def swapped(self: checks.Ctx) -> None:
        df = pl.read_parquet(target)
        df.head(df.height - 1).write_parquet(target)  # a stand-in the checks would judge
        try:
            original(self)
        finally:
            target.write_bytes(sealed)

    monkeypatch.setattr(checks.Ctx, "load_frames", swapped)
    a = engine.assess(home, rid)
    c = a.check("file_integrity")
    assert c.status == "fail" and "changed while assessed" in c.evidence
    assert a.verdict == "fail"


def test_identifiers_in_an_html_output_are_found(demo: tuple[Home, dict[str, str]]) -> None:
    """The published report page is an output too: a faulty builder writes raw IDs into it."""
    home, releases = demo
    people = snapshots.scan(home, "RKJBXX", columns=["公民身份号码"]).collect()

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        pages = [o for o in doc["outputs"] if o["format"] == "html"]
        assert pages, [o["path"] for o in doc["outputs"]]
        path = stage / pages[0]["path"]
        leak = "".join(f"<td>{v}</td>" for v in people["公民身份号码"].head(5).to_list())
        path.write_text(
            path.read_text(encoding="utf-8").replace("</body>", f"<table>{leak}</table></body>"),
            encoding="utf-8",
        )

    a = engine.assess(home, forge(home, releases[SI], "htmlleak", mutate))
    assert a.verdict == "fail"
    failed = {c.name for c in a.checks if c.status == "fail"}
    assert failed & {"free_text_screening", "raw_identifiers"}, failed


def test_an_oversized_decision_comment_is_refused(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases[SI]
    engine.assess(home, rid)
    act_as(home, "test-reviewer", "reviewer")
    with pytest.raises(ValidationError, match="at most"):
        review.decide(home, rid, "reject", "x" * (review.MAX_COMMENT + 1))
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"]) == ("review.reject", "error")
    assert len(json.dumps(entry["details"])) < 2000


def test_a_publication_row_inserted_in_the_database_is_not_listed(
    demo: tuple[Home, dict[str, str]],
) -> None:
    """The catalog and disclosure listings in published/ are rebuilt from the publications
    table: a row planted there would carry anything into the egress."""
    home, releases = demo
    rid = releases[SI]
    _approved(home, rid)
    reg = publish.publish(home, rid)
    fake = f"{rid[:-16]}{'f' * 16}"
    leak = "110101199003071234"
    forged = {k: v for k, v in reg.items() if k not in ("path", "listings")}
    forged.update(release=fake, review_comment=leak, name=leak)
    with state_engine(home).begin() as conn:
        conn.execute(
            publish.publications.insert().values(
                release_id=fake,
                product_id="si_enrolment_report",
                published_at=dt.datetime(2020, 1, 1),
                actor="test-operator",
                assessment_id=f"{fake}-A001",
                registration=json.dumps(forged, ensure_ascii=False),
            )
        )
    publish.publish(home, rid)  # already published: the listings are rebuilt
    listing = (home.published / "catalog.json").read_text(encoding="utf-8")
    assert rid in listing and leak not in listing and fake not in listing
    assert leak not in (home.published / "disclosure.json").read_text(encoding="utf-8")
    refused = [e for e in audit.tail(home, 20) if e["action"] == "publish.listing"]
    assert refused and refused[-1]["outcome"] == "refused"
    assert fake in refused[-1]["details"]["rows"]


def test_deleting_a_newer_assessment_does_not_bring_back_an_approved_one(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases[SI]
    _approved(home, rid)
    newer = engine.assess(home, rid)  # say it found something: it stands as the latest
    with state_engine(home).begin() as conn:
        conn.execute(
            delete(engine.assessment_runs).where(
                engine.assessment_runs.c.assessment_id == newer.assessment_id
            )
        )
    with pytest.raises(IntegrityError, match="newest audited assessment"):
        publish.publish(home, rid)
    _last_refusal(home, "assessment.evidence")
    assert not (home.published / "products" / rid).exists()


def test_a_csv_that_differs_from_the_measured_parquet_fails(
    demo: tuple[Home, dict[str, str]],
) -> None:
    """Quasi-identifiers left exact in the CSV only: k is measured on the Parquet."""
    home, releases = demo

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        o = next(o for o in doc["outputs"] if o["name"] == "extract" and o["format"] == "csv")
        path = stage / o["path"]
        df = pl.read_csv(path, infer_schema=False)
        col = df.columns[-1]
        df.with_columns(pl.format("{}-exact", pl.int_range(pl.len())).alias(col)).write_csv(path)

    a = engine.assess(home, forge(home, releases[MED], "csvqi", mutate))
    c = a.check("file_integrity")
    assert c.status == "fail" and "differ from the extract output" in c.evidence
    assert a.verdict == "fail"
