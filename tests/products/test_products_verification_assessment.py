"""Assessment legality: a verification release is judged against what its scenario authorizes
(product kind and verified field pairs), not against its own spec (issue 12, item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from products_testkit import frames
from sqlalchemy import select

from assessment.engine import assess
from governance.agreements import PACKAGED_AGREEMENTS
from governance.audit import audit_log
from products import specs
from products.engine import BuildOptions, build
from shuyu_core.home import Home, state_engine

VER = "identity_verification"
DISTRICT = {"resource": "RKJBXX", "key_field": "公民身份号码", "name_field": "户籍区划代码"}


def _copy_yaml(src: Path, dst: Path, mutate: Any) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text("utf-8"))
        mutate(path.stem, doc)
        (dst / path.name).write_text(
            yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
    return dst


def test_district_verification_under_a_report_scenario_fails_legality(
    data_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = data_home

    def widen(_: str, doc: dict[str, Any]) -> None:
        # A forged agreement copy lets the report scenario verify districts; the real one
        # (used by the assessment) does not.
        for sc in doc["scenarios"]:
            if sc["id"] == "social-insurance-report":
                sc["products"] = ["statistical_report", "verification"]
                sc["verify"] = [DISTRICT]
                sc["consent_purpose"] = "identity-verification"

    def probe(name: str, doc: dict[str, Any]) -> None:
        if name == VER:
            doc["scenario"] = "social-insurance-report"
            doc["inputs"] = [{"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]}]
            doc["verification"]["checks"] = [{"kind": "person", **DISTRICT}]

    monkeypatch.setenv(
        "SHUYU_PRODUCTS", str(_copy_yaml(specs.PACKAGED_PRODUCTS, tmp_path / "specs", probe))
    )
    people = frames()["RKJBXX"].head(5)
    queries = tmp_path / "queries.csv"
    pl.DataFrame(
        {
            "query_id": [f"Q{i}" for i in range(5)],
            "kind": ["person"] * 5,
            "name": people["户籍区划代码"],
            "id_number": people["公民身份号码"],
            "consent_ref": [f"EV-{i}" for i in range(5)],
        }
    ).write_csv(queries)
    monkeypatch.setenv(
        "SHUYU_AGREEMENTS", str(_copy_yaml(PACKAGED_AGREEMENTS, tmp_path / "ag", widen))
    )
    release_id = build(home, VER, BuildOptions(queries=queries)).release_id
    monkeypatch.delenv("SHUYU_AGREEMENTS")

    a = assess(home, release_id)
    failing = {c.name: c for c in a.failing()}
    assert a.verdict == "fail" and "purpose_and_scope" in failing
    evidence = failing["purpose_and_scope"].evidence
    assert "product_kind_not_authorized" in evidence
    assert "verification_pair_not_authorized" in evidence
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.details).where(
                audit_log.c.action == "authorization.check", audit_log.c.outcome == "refused"
            )
        ).all()
    codes = {f["code"] for d in rows for f in json.loads(d[0])["failures"]}
    assert {"product_kind_not_authorized", "verification_pair_not_authorized"} <= codes
