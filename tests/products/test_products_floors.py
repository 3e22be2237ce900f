"""Domain privacy floors at build: a spec asking for less protection than the domain policy is
refused before any charge or draw, with an audit entry naming the check ``privacy_floors``."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from products_testkit import frames, ingest_frames, with_changes

from catalogs.catalog import Catalog
from catalogs.vocabulary import PiiType
from governance.audit import entries
from governance.floors import PrivacyFloors
from privacy.dp import ledger
from privacy.mask_strength import mask_strength
from products import engine, floors, specs
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, init_key

SI = "si_enrolment_report"
MED = "medical_desensitized_extract"


def _refusals(home: Home) -> list[dict[str, Any]]:
    return [
        e
        for e in entries(home)
        if e["action"] == "product.build"
        and e["outcome"] == "refused"
        and e["details"].get("check") == "privacy_floors"
    ]


def _refused(home: Home, spec: Any, *needles: str) -> str:
    before = len(_refusals(home))
    with pytest.raises(PermissionDenied) as err:
        engine.build(home, spec)
    msg = str(err.value)
    assert "privacy_floors" in msg
    for needle in needles:
        assert needle in msg, msg
    audit = _refusals(home)
    assert len(audit) == before + 1
    assert audit[-1]["object"] == spec.id
    assert any(needles[0] in v for v in audit[-1]["details"]["violations"])
    return msg


def test_epsilon_1000_with_a_raised_budget_file_is_refused_before_any_charge(
    data_home: Home, budgets_file: Any
) -> None:
    budgets_file({"SBCBJF": 1e6, "RKJBXX": 1e6, "SCZTDJ": 1e6})
    spec = with_changes(specs.get(SI), version="9.0.0", budget={"epsilon": 1000.0, "delta": 1e-7})
    msg = _refused(data_home, spec, "per release exceeds the ceiling", "ε=1000")
    # the per-unit-year ceiling names the unit shared by both inputs
    assert "per 公民身份号码" in msg
    assert ledger.all_entries(data_home) == []


def test_per_unit_year_ceiling_counts_every_release_once(
    data_home: Home, budgets_file: Any
) -> None:
    """Each resource's budget (raised) would allow more; the unit's yearly ceiling does not."""
    budgets_file({"SBCBJF": 100.0, "RKJBXX": 100.0})
    base = specs.get(SI)
    engine.build(data_home, with_changes(base, version="2.0.0", budget={"rho": 1.0}))
    engine.build(data_home, with_changes(base, version="2.0.1", budget={"rho": 0.9}))
    # Two resources were charged per release: counted once per release, 1.9 spent.
    entry = ledger.all_entries(data_home)[0]
    assert entry.period == "2025"  # the data's reference period pays, not the build's year
    spent = floors.unit_year_spent(data_home, {"公民身份号码"}, 2025)
    assert spent["公民身份号码"] == pytest.approx(1.9)
    third = with_changes(base, version="2.0.2", budget={"rho": 0.2})
    _refused(data_home, third, "ρ per 公民身份号码")
    assert {e.version for e in ledger.all_entries(data_home)} == {"2.0.0", "2.0.1"}


def test_delta_and_suppression_below_the_floor_are_refused(data_home: Home) -> None:
    base = specs.get(SI)
    _refused(
        data_home,
        with_changes(base, version="3.0.0", budget={"rho": 0.1, "delta": 1e-4}),
        "δ=0.0001 exceeds the ceiling",
    )
    _refused(
        data_home,
        with_changes(base, version="3.0.1", suppression={"min_count": 1}),
        "suppression threshold 1 is below the floor 5",
    )


def test_literal_dimension_values_that_are_id_numbers_are_refused(data_home: Home) -> None:
    ids = frames()["RKJBXX"]["公民身份号码"].head(3).to_list()
    doc = specs.get(SI).model_dump(mode="json")
    for dim in doc["dimensions"]:
        if dim["name"] == "sex":
            dim["values"] = ids
    spec = specs.parse({**doc, "version": "4.0.0"})
    _refused(data_home, spec, "literal value(s) are identifiers (CN_RESIDENT_ID)")


@pytest.fixture()
def medical_home(home: Home) -> Home:
    ingest_frames(home, frames(), ["YBJS", "RKJBXX"])
    init_key(home, PSEUDONYM)
    return home


def _medical(**overrides: Any) -> Any:
    spec = specs.get(MED)
    assert spec.desensitize is not None
    d = spec.desensitize.model_dump(mode="json")
    d["overrides"].update(overrides.pop("rules", {}))
    d.update(overrides)
    return with_changes(spec, version="5.0.0", desensitize=d)


def test_reversible_resident_id_mask_is_refused(medical_home: Home) -> None:
    """keep_region + keep_birth keeps 17 of 18: the check character gives the sex digit back."""
    mask = {"op": "mask", "params": {"keep_region": True, "keep_birth": True}}
    msg = _refused(
        medical_home,
        _medical(rules={"YBJS.公民身份号码": mask}),
        "recoverable",
    )
    assert "CN_RESIDENT_ID" in msg and "must be pseudonymized or removed" in msg


def test_raw_identifier_kept_in_records_is_refused(medical_home: Home) -> None:
    _refused(
        medical_home,
        _medical(rules={"YBJS.公民身份号码": {"op": "keep"}}, keep_unit=True),
        "keeps CN_RESIDENT_ID values raw",
    )


def test_k_below_the_floor_is_refused(medical_home: Home) -> None:
    _refused(medical_home, _medical(k=3), "k=3 is below the floor 5")


@pytest.mark.parametrize(
    ("pii_type", "params", "recoverable"),
    [
        (PiiType.CN_RESIDENT_ID, {"keep_region": True, "keep_birth": True}, True),
        (
            PiiType.CN_RESIDENT_ID,
            {"keep_region": True, "keep_birth": True, "keep_sex": True, "keep_sequence": False},
            True,
        ),
        (PiiType.CN_RESIDENT_ID, {}, False),
        (PiiType.CN_USCC, {"keep_head": 17}, True),
        (PiiType.CN_USCC, {"keep_head": 16, "keep_tail": 1}, True),
        (PiiType.CN_BANK_CARD, {"keep_head": 6, "keep_tail": 7}, True),
        (PiiType.CN_BANK_CARD, {"keep_head": 6, "keep_tail": 4}, False),
        (PiiType.CN_MOBILE, {"keep_head": 3, "keep_tail": 6}, True),
        (PiiType.CN_MOBILE, {}, False),
    ],
)
def test_mask_recoverability(pii_type: PiiType, params: dict[str, Any], recoverable: bool) -> None:
    fl = PrivacyFloors()
    s = mask_strength(pii_type, params)
    assert s.candidates is not None
    assert (s.candidates < fl.min_mask_candidates) is recoverable, s.describe()


def test_mask_floors_per_type() -> None:
    fl = PrivacyFloors()
    seven = floors.identifier_treatment(PiiType.CN_MOBILE, "mask", {}, fl, "x")
    assert seven and "position(s) 8, 9" in seven[0]  # 138****5678 keeps the 4 last digits
    assert (
        floors.identifier_treatment(
            PiiType.CN_MOBILE, "mask", {"keep_head": 3, "keep_tail": 2}, fl, "x"
        )
        == []
    )
    # the region alone is what a resident ID mask may keep — and not in records at all
    region_only = {"keep_region": True, "keep_sequence": False, "keep_check": False}
    assert mask_strength(PiiType.CN_RESIDENT_ID, region_only).outside(6, 0) == []
    assert floors.identifier_treatment(PiiType.CN_RESIDENT_ID, "mask", region_only, fl, "x")
    assert floors.identifier_treatment(PiiType.CN_RESIDENT_ID, "pseudonymize", {}, fl, "x") == []
    assert floors.identifier_treatment(PiiType.PERSON_NAME, "mask", {}, fl, "x")
    assert floors.identifier_treatment(PiiType.CN_USCC, "keep", {}, fl, "x") == []


def test_mask_problems_read_the_policy_and_the_spec(medical_home: Home) -> None:
    spec = _medical()
    doc = spec.model_dump(mode="json")
    doc["inputs"][1]["fields"].append("联系电话")
    doc["desensitize"]["overrides"]["RKJBXX.联系电话"] = {"op": "mask"}
    found = floors.mask_problems(specs.parse(doc), Catalog.load(), PrivacyFloors())
    assert any("RKJBXX.联系电话" in p and "CN_MOBILE" in p for p in found)


def test_free_text_identifiers_are_redacted_at_any_share() -> None:
    """2 of 200 remarks hold a mobile or an ID number: far below the scanner's 5% share."""
    from transforms.apply import desensitize_frame
    from transforms.policy import load_policy

    ident = frames()["RKJBXX"]["公民身份号码"][0]
    remarks = ["复诊，无特殊"] * 198 + ["联系13812345678复查", f"证件{ident}已核"]
    lf = pl.LazyFrame({"备注": remarks, "区划": ["210802"] * 200})
    out, actions = desensitize_frame(lf, None, load_policy(), lambda name: b"k" * 32)
    df = out.collect()
    assert df["备注"][198] == "联系****复查" and df["备注"][199] == "证件****已核"
    assert df["备注"][0] == "复诊，无特殊" and df["区划"].to_list() == ["210802"] * 200
    assert {a.column: a.op for a in actions} == {"备注": "keep", "区划": "keep"}


def test_floors_come_from_the_applied_domain_policy(data_home: Home) -> None:
    """An admin-applied policy version (audited with its changes) is what builds enforce."""
    from governance import domain_policy

    current = domain_policy.effective(data_home)
    stricter = current.model_copy(
        update={
            "privacy_floors": current.privacy_floors.model_copy(update={"max_rho_per_release": 0.1})
        }
    )
    domain_policy.apply(data_home, current, "initial version", "test-admin")
    domain_policy.apply(data_home, stricter, "tighten the release ceiling", "test-admin")
    applied = [e for e in entries(data_home) if e["action"] == "policy.apply"][-1]
    assert applied["details"]["changes"] == ["privacy_floors.max_rho_per_release"]
    _refused(data_home, specs.get(SI), "ρ=0.5 per release exceeds the ceiling 0.1")
