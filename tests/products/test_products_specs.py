"""Product specs: the shipped ones are valid and authorized; bad ones fail clearly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from governance.agreements import load_agreements, load_blacklist
from governance.authorization import evaluate
from products import authz, specs
from products.release import derive_release_id
from shuyu_core.errors import NotFoundError, ValidationError

SHIPPED = {
    "si_enrolment_report": "social-insurance-report",
    "business_vitality_index": "business-vitality-index",
    "identity_verification": "identity-verification",
    "medical_desensitized_extract": "desensitized-medical-extract",
}


def test_shipped_specs_load_and_are_authorized() -> None:
    loaded = specs.load_all()
    assert set(SHIPPED) <= set(loaded)
    catalog = Catalog.load()
    agreements, blacklist = load_agreements(), load_blacklist()
    for pid, scenario in SHIPPED.items():
        spec = loaded[pid]
        assert spec.scenario == scenario and spec.developer == "dev-001"
        specs.check_against_catalog(spec, catalog)
        result = evaluate(
            authz.request_for(spec, dt.date(2026, 6, 1)), agreements, catalog, blacklist
        )
        assert result.ok, f"{pid}: {result.reasons()}"


def _si() -> dict[str, Any]:
    return specs.get("si_enrolment_report").model_dump(mode="json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": None}, "give budget and privacy_unit"),
        ({"budget": {"rho": 0.5, "epsilon": 1.0}}, "exactly one of rho"),
        ({"version": "1.0"}, "version"),
        ({"kind": "report"}, "kind"),
        ({"privacy_unit": {"resource": "RKJBXX", "field": "姓名"}}, "not among the declared"),
        ({"reference_period": ["2025-12-31", "2025-01-01"]}, "ends before it starts"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_invalid_specs_name_the_problem(change: dict[str, Any], message: str) -> None:
    data = {**_si(), **change}
    with pytest.raises(ValidationError, match=message) as err:
        specs.parse(data, "bad.yaml")
    assert err.value.message.startswith("bad.yaml")


def test_table_and_measure_rules() -> None:
    data = _si()
    data["tables"][0]["by"] = ["district", "region"]
    with pytest.raises(ValidationError, match="undeclared region"):
        specs.parse(data, "t")
    data = _si()
    data["tables"][1]["measures"][1].pop("bounds")
    with pytest.raises(ValidationError, match="a sum needs field and bounds"):
        specs.parse(data, "t")
    data = _si()
    data["tables"][1]["measures"][1]["aggregate"] = "mean"
    with pytest.raises(ValidationError, match="derived ratio of a sum and a count"):
        specs.parse(data, "t")
    data = _si()
    data["dimensions"][1]["bands"][1]["lower"] = 25
    with pytest.raises(ValidationError, match="overlap"):
        specs.parse(data, "t")


def test_catalog_cross_check() -> None:
    data = _si()
    data["inputs"][0]["fields"] = [*data["inputs"][0]["fields"], "不存在"]
    spec = specs.parse(data, "t")
    with pytest.raises(ValidationError, match="SBCBJF has no field"):
        specs.check_against_catalog(spec, Catalog.load())


def test_epsilon_budget_converts_to_rho() -> None:
    data = {**_si(), "budget": {"epsilon": 2.0, "delta": 1e-7}}
    spec = specs.parse(data, "t")
    assert spec.budget is not None
    assert spec.budget.implied_epsilon == pytest.approx(2.0)
    assert 0 < spec.budget.zcdp_rho < 2.0


def test_spec_files_load_from_a_directory(spec_dir: Path) -> None:
    (spec_dir / "wrong_name.yaml").write_text(
        yaml.safe_dump(_si(), allow_unicode=True), encoding="utf-8"
    )
    with pytest.raises(ValidationError, match="file name must be the product id"):
        specs.load_all()
    (spec_dir / "wrong_name.yaml").unlink()
    with pytest.raises(NotFoundError, match="unknown product"):
        specs.get("nope")
    assert isinstance(specs.get("si_enrolment_report"), ProductSpec)


def test_release_id_is_deterministic() -> None:
    a = derive_release_id("p", "1.0.0", {"A": "s1", "B": "s2"})
    assert a == derive_release_id("p", "1.0.0", {"B": "s2", "A": "s1"})
    assert a != derive_release_id("p", "1.0.1", {"A": "s1", "B": "s2"})
    assert a != derive_release_id("p", "1.0.0", {"A": "s1", "B": "s3"})
    assert a.startswith("p-v1.0.0-") and len(a.rsplit("-", 1)[1]) == 16


def test_key_frames_come_from_public_code_lists() -> None:
    spec = specs.get("si_enrolment_report")
    keys = specs.key_frame(spec, ["district", "sex"])
    assert keys.height == 12
    assert keys["district"].unique().sort().to_list() == [
        "210802",
        "210803",
        "210804",
        "210811",
        "210881",
        "210882",
    ]
    index = specs.get("business_vitality_index")
    quarters = specs.dimension_keys(index.dimension("quarter"))
    assert quarters[0] == "2024Q1" and quarters[-1] == "2025Q4" and len(quarters) == 8
