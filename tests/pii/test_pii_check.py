"""``pii check``: undeclared personal information and contradicted declarations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from catalogs.catalog import PACKAGED_RESOURCES, Catalog
from governance.audit import entries
from privacy.pii.check import check_resource, findings_from_report
from privacy.pii.scan import ColumnFinding, ScanReport
from shuyu_core.errors import NotFoundError
from shuyu_core.home import Home


def _catalog_with(tmp_path: Path, code: str, field: str, **changes: object) -> Catalog:
    directory = tmp_path / "catalog"
    shutil.copytree(PACKAGED_RESOURCES, directory)
    path = directory / f"{code}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for f in doc["fields"]:
        if f["name"] == field:
            f.update(changes)
            for key in [k for k, v in changes.items() if v is None]:
                del f[key]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return Catalog.load(directory)


def test_shipped_catalog_findings(ingested: Home) -> None:
    assert check_resource(ingested, "RKJBXX") == []
    findings = check_resource(ingested, "SCZTDJ")
    assert [(f.column, f.kind, f.detected) for f in findings] == [
        ("住所", "undeclared_pii", "ADDRESS")
    ]
    last = list(entries(ingested))[-1]
    assert last["action"] == "pii.check" and last["details"]["findings"] == 1


def test_undeclared_identifier_is_high_severity(ingested: Home, tmp_path: Path) -> None:
    catalog = _catalog_with(
        tmp_path, "RKJBXX", "公民身份号码", pii_type=None, sensitivity="personal"
    )
    findings = check_resource(ingested, "RKJBXX", catalog=catalog)
    assert [(f.column, f.kind, f.severity, f.detected) for f in findings] == [
        ("公民身份号码", "undeclared_pii", "high", "CN_RESIDENT_ID")
    ]


def test_contradicted_declarations(ingested: Home, tmp_path: Path) -> None:
    wrong_type = _catalog_with(tmp_path / "a", "RKJBXX", "联系电话", pii_type="CN_PHONE")
    findings = check_resource(ingested, "RKJBXX", catalog=wrong_type)
    assert [(f.kind, f.declared, f.detected, f.severity) for f in findings] == [
        ("contradicted_declaration", "CN_PHONE", "CN_MOBILE", "high")
    ]
    not_pii = _catalog_with(
        tmp_path / "b", "RKJBXX", "民族", pii_type="PERSON_NAME", sensitivity="personal"
    )
    findings = check_resource(ingested, "RKJBXX", catalog=not_pii)
    assert [(f.column, f.declared, f.detected) for f in findings] == [("民族", "PERSON_NAME", None)]
    assert "shows no personal identifier" in findings[0].message


def test_no_snapshot_is_a_clear_error(home: Home) -> None:
    with pytest.raises(NotFoundError, match="no snapshot"):
        check_resource(home, "RKJBXX")
    assert list(entries(home))[-1]["outcome"] == "error"


def _finding(column: str, entity: str | None, rates: dict[str, float]) -> ColumnFinding:
    rate = rates.get(entity, 0.0) if entity else 0.0
    return ColumnFinding(column, entity, rate, rate, "test evidence", rates)


def test_comparison_rules_and_severities() -> None:
    report = ScanReport(
        [
            # declared CN_PHONE, mostly mobiles but 60% still landline-valid: medium
            _finding("a", "CN_MOBILE", {"CN_MOBILE": 0.9, "CN_PHONE": 0.6}),
            # declared CN_PHONE, the data hold none: high
            _finding("b", "CN_MOBILE", {"CN_MOBILE": 0.9}),
            # declared ADDRESS; the scan doubts but 70% are addresses: not a finding
            _finding("c", None, {"ADDRESS": 0.7}),
            # undeclared: an address is medium, a bank card high
            _finding("d", "ADDRESS", {"ADDRESS": 1.0}),
            _finding("e", "CN_BANK_CARD", {"CN_BANK_CARD": 1.0}),
            # agrees with the declaration / holds nothing and declares nothing
            _finding("f", "EMAIL", {"EMAIL": 1.0}),
            _finding("g", None, {}),
            # not a catalog field at all: not this comparison's business
            _finding("h", "CN_MOBILE", {"CN_MOBILE": 1.0}),
        ]
    )
    declared = {
        "a": "CN_PHONE",
        "b": "CN_PHONE",
        "c": "ADDRESS",
        "d": None,
        "e": None,
        "f": "EMAIL",
        "g": None,
    }
    found = findings_from_report("X", "snap", report, declared)
    assert [(f.column, f.kind, f.severity) for f in found] == [
        ("a", "contradicted_declaration", "medium"),
        ("b", "contradicted_declaration", "high"),
        ("d", "undeclared_pii", "medium"),
        ("e", "undeclared_pii", "high"),
    ]
    assert all(f.resource == "X" and f.snapshot == "snap" for f in found)
    assert found[1].declared == "CN_PHONE" and found[1].detected == "CN_MOBILE"
    assert set(found[0].to_dict()) >= {"column", "kind", "severity", "message"}
