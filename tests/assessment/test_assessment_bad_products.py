"""Deliberately bad products are each blocked with the right failing check; the demo's four
good products pass.

Bad products are real builds of modified copies of the demo specs (SHUYU_PRODUCTS) on small
generated data; where the engine itself would refuse the build (agreement scope, destination,
reversible outputs), the build runs under a widened copy of the agreements and the
assessment under the real ones. A group-by on ID numbers cannot be expressed in a spec (keys
come from public key sets), so that release is written as a faulty builder would write it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from assessment_testkit import agreements_copy, forge, relaxed_policy, write_spec

from assessment.engine import assess, report_paths
from assessment.models import Assessment
from catalogs.catalog import PACKAGED_RESOURCES
from products.engine import BuildOptions, build
from shuyu_core import snapshots
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

SI = "si_enrolment_report"
MED = "medical_desensitized_extract"
VER = "identity_verification"


def _blocked(a: Assessment, check: str) -> None:
    """The release fails, and the named check is among the failing ones."""
    failing = {c.name: c for c in a.failing()}
    assert check in failing, f"{check} did not fail: {[(c.name, c.evidence) for c in a.checks]}"
    assert a.verdict == "fail"
    assert not failing[check].rectifiable


def test_demo_products_pass(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    assert set(releases) == {SI, MED, VER, "business_vitality_index"}
    for release_id in releases.values():
        a = assess(home, release_id)
        not_passing = [(c.name, c.status, c.evidence) for c in a.checks if c.status != "pass"]
        assert a.verdict == "pass", not_passing
        assert not not_passing
        dims = {c.dimension for c in a.checks}
        assert dims == {
            "legality",
            "desensitization",
            "consent",
            "accuracy",
            "consistency",
            "normativity",
            "completeness",
            "timeliness",
            "accessibility",
            "circulation",
        }


def test_group_by_id_numbers(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    ids = snapshots.scan(home, "RKJBXX", columns=["公民身份号码"]).head(200).collect()

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        table = ids.with_columns(
            pl.lit(1, pl.Int64).alias("insured"),
            pl.lit(2.0).alias("insured_ci95"),
            pl.lit(False).alias("suppressed"),
            pl.lit(None, pl.String).alias("suppression_reason"),
        )
        table.write_parquet(stage / "data" / "insured_by_person.parquet")
        doc["outputs"].append(
            {
                "name": "insured_by_person",
                "path": "data/insured_by_person.parquet",
                "format": "parquet",
                "columns": [
                    {"name": n, "type": str(t), "description": n} for n, t in table.schema.items()
                ],
                "rows": table.height,
                "values": "dp_aggregate",
                "sm3": "",
            }
        )

    bad = forge(home, releases[SI], "byid", mutate)
    a = assess(home, bad)
    _blocked(a, "public_keys")
    assert "公民身份号码" in a.check("public_keys").evidence
    assert a.check("small_cells").status == "fail"
    assert a.check("raw_identifiers").status == "fail"


def test_cells_of_one_person(
    demo: tuple[Home, dict[str, str]],
    spec_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _ = demo

    def mutate(doc: dict[str, Any]) -> None:
        doc["suppression"] = {"min_count": 0, "max_relative_error": None}
        for dim in doc["dimensions"]:
            if dim["name"] == "age_band":
                dim["bands"] = [{"label": str(y), "lower": y, "upper": y} for y in range(18, 90)]

    write_spec(spec_dir, SI, mutate)
    with pytest.raises(PermissionDenied, match="suppression threshold 0 is below the floor 5"):
        build(home, SI)
    # Built under a relaxed policy, the release still fails the assessment under the real one.
    real = os.environ["SHUYU_DOMAIN_POLICY"]
    monkeypatch.setenv(
        "SHUYU_DOMAIN_POLICY", str(relaxed_policy(tmp_path, min_suppression_threshold=0))
    )
    release_id = build(home, SI).release_id
    monkeypatch.setenv("SHUYU_DOMAIN_POLICY", real)
    a = assess(home, release_id)
    _blocked(a, "small_cells")
    ev = a.check("small_cells").evidence
    assert "below 5" in ev and "threshold 0.0 is below the floor 5" in ev


def test_raw_id_values_in_output(
    demo: tuple[Home, dict[str, str]],
    spec_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _ = demo

    def mutate(doc: dict[str, Any]) -> None:
        doc["desensitize"]["overrides"]["YBJS.公民身份号码"] = {"op": "keep"}
        doc["desensitize"]["overrides"]["RKJBXX.公民身份号码"] = {"op": "keep"}
        doc["desensitize"]["keep_unit"] = True

    write_spec(spec_dir, MED, mutate)
    with pytest.raises(PermissionDenied, match="keeps CN_RESIDENT_ID values raw"):
        build(home, MED)
    real = os.environ["SHUYU_DOMAIN_POLICY"]
    relaxed = {"masks": {"CN_RESIDENT_ID": {"records": "keep"}}}
    monkeypatch.setenv("SHUYU_DOMAIN_POLICY", str(relaxed_policy(tmp_path, **relaxed)))
    release_id = build(home, MED).release_id
    monkeypatch.setenv("SHUYU_DOMAIN_POLICY", real)
    a = assess(home, release_id)
    _blocked(a, "raw_identifiers")
    _blocked(a, "mask_strength")
    assert "keeps CN_RESIDENT_ID values raw" in a.check("mask_strength").evidence
    assert "公民身份号码" in a.check("raw_identifiers").evidence
    assert a.check("pii_scan").status == "fail"
    # the reports name the column and count the matches, but never copy a raw value
    out = pl.read_parquet(home.releases / release_id / "data" / "extract.parquet")
    raw = out["公民身份号码"].unique().to_list()
    assert len(raw) > 50
    for path in report_paths(home, a).values():
        text = path.read_text(encoding="utf-8")
        assert not any(v in text for v in raw), path


def _allow(**changes: Any) -> Any:
    def mutate(docs: dict[str, dict[str, Any]]) -> None:
        for doc in docs.values():
            doc.update(changes)

    return mutate


def test_sm4_encrypted_output_column(
    demo: tuple[Home, dict[str, str]],
    spec_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _ = demo
    write_spec(
        spec_dir,
        MED,
        lambda d: d["desensitize"]["overrides"].update({"YBJS.诊断编码": {"op": "encrypt_sm4"}}),
    )
    permissive = agreements_copy(tmp_path / "ag", _allow(reversible_outputs=True))
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(permissive))
    release_id = build(home, MED).release_id
    allowed = assess(home, release_id)
    assert allowed.check("reversible_columns").status == "pass"
    assert "allowed by agreement" in allowed.check("reversible_columns").evidence
    monkeypatch.delenv("SHUYU_AGREEMENTS")
    a = assess(home, release_id)
    _blocked(a, "reversible_columns")
    assert "诊断编码" in a.check("reversible_columns").evidence


def test_sm4_column_found_by_its_values_when_undeclared(
    demo: tuple[Home, dict[str, str]],
) -> None:
    """A builder that forgets to declare an SM4 column is still caught by the value shape."""
    home, releases = demo

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        from transforms.operators import sm4_encrypt_values

        path = stage / "data" / "extract.parquet"
        df = pl.read_parquet(path)
        codes = df["诊断编码"].unique().to_list()
        enc = dict(zip(codes, sm4_encrypt_values(codes, bytes(16)), strict=True))
        df = df.with_columns(pl.col("诊断编码").replace_strict(enc))
        df.write_parquet(path)
        doc["outputs"] = [o for o in doc["outputs"] if o["format"] == "parquet"]
        for col in doc["outputs"][0]["columns"]:
            col["description"] = col["description"].replace("encrypt_sm4", "")

    bad = forge(home, releases[MED], "sm4", mutate)
    a = assess(home, bad)
    _blocked(a, "reversible_columns")
    assert "look like SM4" in a.check("reversible_columns").evidence


def test_negative_listed_input(
    demo: tuple[Home, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, releases = demo
    catalog = tmp_path / "resources"
    shutil.copytree(PACKAGED_RESOURCES, catalog)
    doc = yaml.safe_load((catalog / "SBCBJF.yaml").read_text("utf-8"))
    doc["negative_list"] = {
        "listed": True,
        "reason": "年度复核列入负面清单",
        "review_date": "2026-12-31",
    }
    (catalog / "SBCBJF.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    monkeypatch.setenv("SHUYU_CATALOG", str(catalog))
    a = assess(home, releases[SI])
    _blocked(a, "negative_list")
    assert "SBCBJF" in a.check("negative_list").evidence


def test_expired_agreement(
    demo: tuple[Home, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, releases = demo
    yesterday = dt.date.today() - dt.timedelta(days=1)

    def expire(docs: dict[str, dict[str, Any]]) -> None:
        docs["DA-2025-001"]["term"]["end"] = yesterday.isoformat()

    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements_copy(tmp_path / "ag", expire)))
    a = assess(home, releases["business_vitality_index"])
    _blocked(a, "agreement_in_force")
    assert "agreement_expired" in a.check("agreement_in_force").evidence


def test_out_of_scope_field(
    demo: tuple[Home, dict[str, str]],
    spec_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _ = demo

    def widen(docs: dict[str, dict[str, Any]]) -> None:
        da = docs["DA-2025-001"]
        da["resources"]["RKJBXX"].append("民族")
        for sc in da["scenarios"]:
            if sc["id"] == "social-insurance-report":
                sc["inputs"]["RKJBXX"].append("民族")
        for sc in docs["OA-2025-001"]["scenarios"]:
            if sc["id"] == "social-insurance-report":
                sc["inputs"]["RKJBXX"].append("民族")

    def read_more(doc: dict[str, Any]) -> None:
        for inp in doc["inputs"]:
            if inp["resource"] == "RKJBXX":
                inp["fields"].append("民族")

    write_spec(spec_dir, SI, read_more)
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements_copy(tmp_path / "ag", widen)))
    release_id = build(home, SI).release_id
    monkeypatch.delenv("SHUYU_AGREEMENTS")
    a = assess(home, release_id)
    _blocked(a, "purpose_and_scope")
    assert "field_out_of_scope" in a.check("purpose_and_scope").evidence
    assert "民族" in a.check("purpose_and_scope").evidence


def test_missing_consent(
    demo: tuple[Home, dict[str, str]],
    spec_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _ = demo

    def no_consent(doc: dict[str, Any]) -> None:
        for chk in doc["verification"]["checks"]:
            chk["consent_required"] = False

    def waive(docs: dict[str, dict[str, Any]]) -> None:
        for doc in docs.values():
            for sc in doc["scenarios"]:
                for pair in sc.get("verify", []):
                    pair["consent_required"] = False

    write_spec(spec_dir, VER, no_consent)
    queries = home.root / "sources" / "queries.csv"
    # Only a scenario may waive consent: the build runs under a forged copy that does.
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements_copy(tmp_path / "ag", waive)))
    release_id = build(home, VER, BuildOptions(queries=queries)).release_id
    monkeypatch.delenv("SHUYU_AGREEMENTS")
    a = assess(home, release_id)
    _blocked(a, "subject_consent")
    assert "without a consent check" in a.check("subject_consent").evidence
    _blocked(a, "purpose_and_scope")
    assert "verification_pair_not_authorized" in a.check("purpose_and_scope").evidence


def test_foreign_destination(
    demo: tuple[Home, dict[str, str]],
    spec_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _ = demo
    write_spec(spec_dir, SI, lambda d: d.update({"destination": "US"}))
    wide = agreements_copy(tmp_path / "ag", _allow(destinations=["domestic", "US"]))
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(wide))
    release_id = build(home, SI).release_id
    monkeypatch.delenv("SHUYU_AGREEMENTS")
    a = assess(home, release_id)
    _blocked(a, "cross_border")
    assert "destination_not_allowed" in a.check("cross_border").evidence
    doc = json.loads(report_paths(home, a)["json"].read_text("utf-8"))
    assert doc["verdict"] == "fail"
