"""The directory exports as a Frictionless Data Package that frictionless itself accepts."""

from __future__ import annotations

import frictionless

from catalogs.catalog import Catalog
from catalogs.datapackage import to_datapackage


def test_export_is_a_valid_data_package() -> None:
    descriptor = to_datapackage(Catalog.load())
    report = frictionless.Package.validate_descriptor(descriptor)
    assert report.valid, [e.message for e in report.flatten(["message"])]


def test_export_carries_field_constraints_and_foreign_keys() -> None:
    pkg = to_datapackage(Catalog.load())
    by_name = {r["shuyu:code"]: r for r in pkg["resources"]}
    rk = {f["name"]: f for f in by_name["RKJBXX"]["schema"]["fields"]}
    assert rk["公民身份号码"]["constraints"]["unique"] is True
    assert rk["公民身份号码"]["shuyu:piiType"] == "CN_RESIDENT_ID"
    assert rk["性别"]["constraints"]["enum"] == ["男", "女"]
    fks = by_name["SBCBJF"]["schema"]["foreignKeys"]
    assert {
        "fields": ["公民身份号码"],
        "reference": {"resource": "rkjbxx", "fields": ["公民身份号码"]},
    } in fks
