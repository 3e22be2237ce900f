"""Refusals come before charges; a developer builds only as the party its agreement authorizes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from products_testkit import frames, ingest_frames, with_changes

from catalogs.catalog import PACKAGED_RESOURCES
from governance import audit
from privacy.dp import ledger
from privacy.dp import ledger_integrity as integrity
from products import engine, specs
from products.language.builder import LanguageReportBuilder
from shuyu_core.errors import BudgetExceeded, PermissionDenied, ValidationError
from shuyu_core.home import Home

_FINISH = LanguageReportBuilder.finish

SI = "si_enrolment_report"


def _last(home: Home, action: str) -> dict[str, object]:
    return [e for e in audit.entries(home) if e["action"] == action][-1]


def test_developer_cannot_build_under_the_operation_agreement(data_home: Home) -> None:
    spec = with_changes(specs.get(SI), agreement_id="OA-2025-001", version="1.0.1")
    with pytest.raises(PermissionDenied, match="developer_mismatch") as info:
        engine.build(data_home, spec)
    assert info.value.exit_code == 5 and "party to DA-2025-001" in info.value.message
    check = _last(data_home, "authorization.check")
    assert check["outcome"] == "refused"
    assert ledger.all_entries(data_home) == []


def test_developer_party_to_no_agreement_is_refused_at_build(data_home: Home) -> None:
    for agreement in ("OA-2025-001", "DA-2025-001"):
        spec = with_changes(
            specs.get(SI), agreement_id=agreement, developer="dev-404", version="1.0.2"
        )
        with pytest.raises(PermissionDenied, match="party to no agreement at all"):
            engine.build(data_home, spec)
        assert _last(data_home, "authorization.check")["outcome"] == "refused"
    assert ledger.all_entries(data_home) == []


# --- item 7: refusals before charges --------------------------------------------------------


def _no_charge_left(home: Home) -> None:
    """No ledger row, no spent budget, no successful budget.charge in the audit log."""
    assert ledger.all_entries(home) == []
    assert all(b["spent"]["rho"] == 0 for b in ledger.show(home)["budgets"])
    assert not [
        e for e in audit.entries(home) if e["action"] == "budget.charge" and e["outcome"] == "ok"
    ]


def _spec(**edit: Any) -> Any:
    data = specs.get(SI).model_dump(mode="json")
    data["version"] = "7.0.0"
    for key, value in edit.items():
        data[key] = value(data[key]) if callable(value) else value
    return specs.parse(data, "test")


def test_unknown_dimension_is_refused_before_the_charge(data_home: Home) -> None:
    def add_dimension(dims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*dims, {"name": "education", "title": "学历", "values": ["本科", "硕士"]}]

    def group_by_it(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tables[0]["by"] = [*tables[0]["by"], "education"]
        return tables

    # A dimension without a derivation is refused when the spec is read.
    with pytest.raises(ValidationError, match="cover exactly the declared dimensions"):
        _spec(dimensions=add_dimension, tables=group_by_it)

    def derive_badly(query: dict[str, Any]) -> dict[str, Any]:
        # 学历 from a field and a word that cannot give its keys: refused at plan time.
        word = {"dimension": "education", "field": "RKJBXX.性别", "as": "age_band"}
        return {**query, "derive": [*query["derive"], word]}

    with pytest.raises(ValidationError, match="needs bands as its key set") as info:
        engine.build(
            data_home, _spec(dimensions=add_dimension, tables=group_by_it, query=derive_badly)
        )
    assert info.value.audited
    assert _last(data_home, "product.build")["outcome"] == "error"
    _no_charge_left(data_home)


def test_undeclared_column_is_refused_before_the_charge(data_home: Home) -> None:
    def narrow(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        inputs[1]["fields"] = ["公民身份号码", "出生日期", "户籍区划代码"]  # no 性别
        return inputs

    with pytest.raises(ValidationError, match="not declared under inputs"):
        engine.build(data_home, _spec(inputs=narrow))
    _no_charge_left(data_home)


def test_join_key_not_declared_is_refused_before_the_charge(data_home: Home) -> None:
    def drop_key(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        inputs[1]["fields"] = ["出生日期", "性别", "户籍区划代码"]  # no 公民身份号码 in RKJBXX
        return inputs

    with pytest.raises(ValidationError):
        engine.build(data_home, _spec(inputs=drop_key))
    _no_charge_left(data_home)


def test_field_missing_from_the_snapshot_is_refused_before_the_charge(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A snapshot ingested while the catalog entry had no 性别 (an older catalog): it has no
    # such column, and the product reads it.
    old = tmp_path / "old_catalog"
    shutil.copytree(PACKAGED_RESOURCES, old)
    doc = yaml.safe_load((old / "RKJBXX.yaml").read_text("utf-8"))
    doc["fields"] = [f for f in doc["fields"] if f["name"] != "性别"]
    (old / "RKJBXX.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    monkeypatch.setenv("SHUYU_CATALOG", str(old))
    data = frames()
    ingest_frames(home, {**data, "RKJBXX": data["RKJBXX"].drop("性别")}, ["RKJBXX"])
    monkeypatch.delenv("SHUYU_CATALOG")
    ingest_frames(home, data, ["SBCBJF"])
    with pytest.raises(ValidationError, match="has no field"):
        engine.build(home, SI)
    _no_charge_left(home)


def test_failure_between_charge_and_draw_voids_the_charge(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(_ctx: object) -> None:
        raise RuntimeError("injected failure after the charge, before the draw")

    monkeypatch.setattr(engine, "_before_draw", fail)
    with pytest.raises(RuntimeError, match="injected"):
        engine.build(data_home, SI)
    entries = ledger.all_entries(data_home)
    assert [(e.state, e.draws) for e in entries] == [("void", 0), ("void", 0)]
    assert all(b["spent"]["rho"] == 0 for b in ledger.show(data_home)["budgets"])
    voided = _last(data_home, "budget.void")
    assert "injected failure" in str(voided["details"])
    anchors = [e for e in audit.entries(data_home) if e["action"] == "budget.ledger"]
    assert [a["details"]["op"] for a in anchors][-2:] == ["void", "void"]

    # The next build charges the same entries once more and draws once.
    monkeypatch.setattr(engine, "_before_draw", lambda _ctx: None)
    out = engine.build(data_home, SI)
    after = ledger.entries_for_release(data_home, out.release_id)
    assert [(e.state, e.draws) for e in after] == [("stored", 1), ("stored", 1)]
    rho = specs.get(SI).budget.zcdp_rho  # type: ignore[union-attr]
    assert ledger.show(data_home, "SBCBJF", period="2025")["budgets"][0]["spent"][
        "rho"
    ] == pytest.approx(rho)
    assert integrity.verify(data_home).ok


def test_refusal_inside_the_builder_draw_voids_the_charge(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_self: object, _ctx: object) -> None:
        raise ValidationError("the builder refused late")

    monkeypatch.setattr(LanguageReportBuilder, "draw", refuse)
    with pytest.raises(ValidationError, match="refused late"):
        engine.build(data_home, SI)
    assert {e.state for e in ledger.all_entries(data_home)} == {"void"}


def test_failure_after_the_draw_does_not_void(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kw: object) -> None:
        raise RuntimeError("injected failure after the draw")

    monkeypatch.setattr(LanguageReportBuilder, "finish", crash)
    with pytest.raises(RuntimeError):
        engine.build(data_home, SI)
    entries = ledger.all_entries(data_home)
    assert [(e.state, e.draws) for e in entries] == [("drawn", 1), ("drawn", 1)]
    assert not [e for e in audit.entries(data_home) if e["action"] == "budget.void"]
    # Losing the kept draw now is refused without voiding and without a second draw.
    shutil.rmtree(engine.pending_dir(data_home, entries[0].release_id))
    monkeypatch.setattr(LanguageReportBuilder, "finish", _FINISH)
    with pytest.raises(BudgetExceeded, match="already drew"):
        engine.build(data_home, SI)
    assert [(e.state, e.draws) for e in ledger.all_entries(data_home)] == [
        ("drawn", 1),
        ("drawn", 1),
    ]
    assert not [e for e in audit.entries(data_home) if e["action"] == "budget.void"]
