"""Agreements, scenario authorization, the negative list and the blacklist."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogs.agreement_models import Agreement
from catalogs.catalog import PACKAGED_RESOURCES, Catalog
from governance import audit
from governance.agreements import (
    PACKAGED_AGREEMENTS,
    load_agreements,
    load_blacklist,
    validate_against_catalog,
)
from governance.authorization import AuthorizationRequest, authorize, require_authorized
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home

AT = dt.date(2025, 6, 1)

# The demo products' exact inputs (the products engineer builds against these).
DEMO_SCENARIOS: dict[str, dict[str, list[str]]] = {
    "social-insurance-report": {
        "RKJBXX": ["公民身份号码", "出生日期", "性别", "户籍区划代码"],
        "SBCBJF": ["公民身份号码", "缴费基数", "缴费月份", "参保状态", "险种"],
    },
    "business-vitality-index": {
        "SCZTDJ": ["统一社会信用代码", "成立日期", "注销日期", "注册资本", "登记状态", "区划代码"],
    },
    "identity-verification": {
        "RKJBXX": ["公民身份号码", "姓名"],
        "SCZTDJ": ["统一社会信用代码", "企业名称"],
    },
    "desensitized-medical-extract": {
        "YBJS": [f.name for f in Catalog.load().get("YBJS").fields],
        "RKJBXX": ["公民身份号码", "出生日期", "性别", "户籍区划代码"],
    },
}


def _request(**overrides: Any) -> AuthorizationRequest:
    base: dict[str, Any] = {
        "agreement_id": "DA-2025-001",
        "scenario": "identity-verification",
        "developer": "dev-001",
        "inputs": {"RKJBXX": ["公民身份号码", "姓名"]},
        "purpose": "industry",
        "at": AT,
    }
    return AuthorizationRequest(**{**base, **overrides})


def _agreement(path: Path, **changes: Any) -> None:
    """Write a variant of the shipped operation agreement (plus a matching development one)."""
    data = yaml.safe_load((PACKAGED_AGREEMENTS / "OA-2025-001.yaml").read_text("utf-8"))
    data.update(changes)
    (path / f"{data['id']}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")


@pytest.fixture()
def agreements_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "agreements"
    shutil.copytree(PACKAGED_AGREEMENTS, root)
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(root))
    return root


@pytest.fixture()
def blacklist_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "blacklist.yaml"
    entries = [
        {"developer": "dev-666", "name": "违规公司", "reason": "数据转售", "since": "2025-02-01"},
        {
            "developer": "dev-777",
            "name": "已解除公司",
            "reason": "逾期整改",
            "since": "2024-01-01",
            "until": "2024-12-31",
        },
    ]
    path.write_text(yaml.safe_dump({"entries": entries}, allow_unicode=True), "utf-8")
    monkeypatch.setenv("SHUYU_BLACKLIST", str(path))
    return path


def _last_entry(home: Home) -> dict[str, Any]:
    return audit.tail(home, 1)[0]


@pytest.mark.parametrize("agreement_id", ["OA-2025-001", "DA-2025-001"])
@pytest.mark.parametrize("scenario", sorted(DEMO_SCENARIOS))
@pytest.mark.parametrize("purpose", ["public_good", "industry"])
def test_demo_products_are_authorized(
    home: Home, agreement_id: str, scenario: str, purpose: str
) -> None:
    developer = "dev-001" if agreement_id.startswith("DA") else None
    result = authorize(
        home,
        _request(
            agreement_id=agreement_id,
            scenario=scenario,
            developer=developer,
            inputs=DEMO_SCENARIOS[scenario],
            purpose=purpose,
        ),
    )
    assert result.ok, result.reasons()
    entry = _last_entry(home)
    assert (entry["action"], entry["object"], entry["outcome"]) == (
        "authorization.check",
        f"{agreement_id}/{scenario}",
        "ok",
    )


def test_shipped_agreements_validate_against_catalog() -> None:
    agreements = load_agreements()
    assert {a.id for a in agreements} >= {"OA-2025-001", "DA-2025-001"}
    assert validate_against_catalog(agreements, Catalog.load()) == []
    assert load_agreements().get("DA-2025-001").developer == "dev-001"
    assert "dev-001" not in {e.developer for e in load_blacklist().entries}


def test_expired_agreement_refused_with_audit(home: Home, agreements_dir: Path) -> None:
    _agreement(agreements_dir, id="OA-2019-009", term={"start": "2019-01-01", "end": "2023-12-31"})
    result = authorize(home, _request(agreement_id="OA-2019-009", developer=None))
    assert result.codes == ["agreement_expired"]
    assert "expired on 2023-12-31" in result.failures[0].message
    entry = _last_entry(home)
    assert entry["outcome"] == "refused"
    assert [f["code"] for f in entry["details"]["failures"]] == ["agreement_expired"]


def test_development_agreement_expires_at_its_own_term(home: Home) -> None:
    result = authorize(home, _request(at=dt.date(2028, 1, 1)))
    assert result.codes == ["agreement_expired"]
    assert authorize(home, _request(at=dt.date(2027, 12, 31))).ok
    early = authorize(home, _request(at=dt.date(2024, 12, 31)))
    assert early.codes == ["agreement_not_yet_valid", "agreement_not_yet_valid"]  # DA and parent


def test_suspended_agreement_refused_from_its_date(home: Home, agreements_dir: Path) -> None:
    _agreement(
        agreements_dir,
        status="suspended",
        status_change={"since": "2025-05-01", "reason": "安全整改期间暂停"},
    )
    oa = authorize(home, _request(agreement_id="OA-2025-001", developer=None))
    assert oa.codes == ["agreement_suspended"]
    assert "suspended since 2025-05-01: 安全整改期间暂停" in oa.failures[0].message
    assert _last_entry(home)["outcome"] == "refused"
    # The development agreement rests on the suspended one, so it is refused too.
    da = authorize(home, _request())
    assert da.codes == ["agreement_suspended"]
    assert "parent operation agreement OA-2025-001" in da.failures[0].message
    # Before the suspension took effect the same build was authorized.
    assert authorize(home, _request(at=dt.date(2025, 4, 30))).ok


def test_terminated_agreement_refused(home: Home, agreements_dir: Path) -> None:
    _agreement(
        agreements_dir,
        id="OA-2025-002",
        status="terminated",
        status_change={"since": "2025-03-01", "reason": "违规转授权"},
    )
    result = authorize(home, _request(agreement_id="OA-2025-002", developer=None))
    assert result.codes == ["agreement_terminated"]


def test_out_of_scope_field_refused(home: Home) -> None:
    with pytest.raises(PermissionDenied) as info:
        require_authorized(home, _request(inputs={"RKJBXX": ["公民身份号码", "姓名", "联系电话"]}))
    exc = info.value
    assert exc.audited and exc.exit_code == 5
    assert "field_out_of_scope" in exc.message and "联系电话" in exc.message
    assert "\n" not in exc.one_line()
    entry = _last_entry(home)
    assert entry["outcome"] == "refused"
    assert entry["details"]["failures"][0]["code"] == "field_out_of_scope"
    # one audit entry per check, no double record
    assert [e["action"] for e in audit.tail(home, 100)].count("authorization.check") == 1


def test_field_allowed_by_agreement_but_not_scenario_is_refused(home: Home) -> None:
    # 出生日期 is in the agreement's scope, but the verification scenario does not need it.
    result = authorize(home, _request(inputs={"RKJBXX": ["公民身份号码", "姓名", "出生日期"]}))
    assert result.codes == ["field_out_of_scope"]


def test_resource_out_of_scope_and_unknown_scenario(home: Home) -> None:
    result = authorize(home, _request(inputs={"SBCBJF": ["缴费基数"]}))
    assert result.codes == ["resource_out_of_scope"]
    result = authorize(home, _request(scenario="credit-scoring"))
    assert result.codes == ["scenario_not_authorized"]
    assert "credit-scoring" in result.failures[0].message


def test_negative_listed_resource_refused(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog_dir = tmp_path / "resources"
    shutil.copytree(PACKAGED_RESOURCES, catalog_dir)
    path = catalog_dir / "RKJBXX.yaml"
    data = yaml.safe_load(path.read_text("utf-8"))
    data["negative_list"] = {
        "listed": True,
        "reason": "涉及国家安全",
        "review_date": "2026-01-01",
    }
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    monkeypatch.setenv("SHUYU_CATALOG", str(catalog_dir))
    result = authorize(home, _request())
    assert result.codes == ["negative_listed"]
    assert "RKJBXX" in result.failures[0].message and "涉及国家安全" in result.failures[0].message
    assert _last_entry(home)["details"]["failures"][0]["code"] == "negative_listed"
    problems = validate_against_catalog(load_agreements(), Catalog.load())
    assert any("RKJBXX: negative-listed" in p for p in problems)


def test_blacklisted_developer_refused(
    home: Home, agreements_dir: Path, blacklist_file: Path
) -> None:
    data = yaml.safe_load((agreements_dir / "DA-2025-001.yaml").read_text("utf-8"))
    for dev in ("dev-666", "dev-777"):
        data.update(id=f"DA-{dev}", developer=dev)
        data["parties"]["grantee"]["id"] = dev
        (agreements_dir / f"DA-{dev}.yaml").write_text(
            yaml.safe_dump(data, allow_unicode=True), "utf-8"
        )
    with pytest.raises(PermissionDenied, match="developer_blacklisted") as info:
        require_authorized(home, _request(agreement_id="DA-dev-666", developer="dev-666"))
    assert "dev-666 is blacklisted (黑名单) since 2025-02-01: 数据转售" in info.value.message
    assert _last_entry(home)["details"]["failures"][0]["code"] == "developer_blacklisted"
    # Before the listing, and after a listing that has ended, the developer may build.
    assert authorize(
        home, _request(agreement_id="DA-dev-666", developer="dev-666", at=dt.date(2025, 1, 31))
    ).ok
    assert authorize(home, _request(agreement_id="DA-dev-777", developer="dev-777")).ok
    # A blacklisted developer cannot slip in under someone else's agreement either.
    sneaky = authorize(home, _request(developer="dev-666"))
    assert sneaky.codes == ["developer_mismatch", "developer_blacklisted"]


def test_every_failure_is_returned(home: Home) -> None:
    result = authorize(
        home,
        _request(
            inputs={"RKJBXX": ["公民身份号码", "联系电话"], "YBJS": ["姓名"]},
            purpose="marketing",
            destination="US",
            reversible_outputs=True,
            at=dt.date(2028, 6, 1),
        ),
    )
    assert set(result.codes) == {
        "agreement_expired",
        "purpose_not_authorized",
        "field_out_of_scope",
        "resource_out_of_scope",
        "destination_not_allowed",
        "reversible_not_allowed",
    }
    assert result.to_dict()["failures"] == [f.model_dump() for f in result.failures]


def test_unknown_agreement_still_checks_the_rest(home: Home, blacklist_file: Path) -> None:
    result = authorize(home, _request(agreement_id="DA-9999", developer="dev-666"))
    assert result.codes == ["agreement_unknown", "developer_blacklisted"]


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    return path


def test_validation_refuses_long_terms(tmp_path: Path) -> None:
    oa = yaml.safe_load((PACKAGED_AGREEMENTS / "OA-2025-001.yaml").read_text("utf-8"))
    oa["term"] = {"start": "2025-01-01", "end": "2030-01-01"}
    root = tmp_path / "a"
    root.mkdir()
    _write(root / "OA-2025-001.yaml", oa)
    with pytest.raises(ValidationError, match=r"OA-2025-001.yaml: .*longer than 5 years") as info:
        load_agreements(root)
    assert "latest end 2029-12-31" in info.value.message

    da = yaml.safe_load((PACKAGED_AGREEMENTS / "DA-2025-001.yaml").read_text("utf-8"))
    da["term"] = {"start": "2025-01-01", "end": "2028-01-01"}
    with pytest.raises(Exception, match="longer than 3 years"):
        Agreement.model_validate(da)


def test_validation_refuses_development_beyond_parent(tmp_path: Path) -> None:
    root = tmp_path / "a"
    shutil.copytree(PACKAGED_AGREEMENTS, root)
    da = yaml.safe_load((root / "DA-2025-001.yaml").read_text("utf-8"))
    da["resources"]["RKJBXX"].append("联系电话")
    da["destinations"] = ["domestic", "HK"]
    _write(root / "DA-2025-001.yaml", da)
    with pytest.raises(ValidationError, match="exceeds parent OA-2025-001") as info:
        load_agreements(root)
    assert "联系电话" in info.value.message and "HK" in info.value.message


def test_validation_names_file_and_field(tmp_path: Path) -> None:
    root = tmp_path / "a"
    root.mkdir()
    oa = yaml.safe_load((PACKAGED_AGREEMENTS / "OA-2025-001.yaml").read_text("utf-8"))
    oa["scenarios"][0]["inputs"]["RKJBXX"].append("联系电话")
    _write(root / "OA-2025-001.yaml", oa)
    with pytest.raises(ValidationError, match="scenario social-insurance-report reads RKJBXX"):
        load_agreements(root)
    oa = yaml.safe_load((PACKAGED_AGREEMENTS / "OA-2025-001.yaml").read_text("utf-8"))
    oa["status"] = "suspended"
    _write(root / "OA-2025-001.yaml", oa)
    with pytest.raises(ValidationError, match="status suspended needs a status_change"):
        load_agreements(root)
    oa["status"] = "active"
    _write(root / "other-name.yaml", oa)
    (root / "OA-2025-001.yaml").unlink()
    with pytest.raises(ValidationError, match="file name must be the agreement id"):
        load_agreements(root)
