"""Verification as an oracle (issue 12, items 5 and 6): each abuse is tried and refused, audited.

- a verification of another attribute (户籍区划代码) under a report scenario, or of a pair the
  verification scenario does not name, or waiving the consent the scenario requires;
- a legitimately authorized second check on the same resource does not poison the cache of the
  identity check (keyed index per resource, snapshot, field pair);
- ``quota_per_day`` above the domain policy's ceiling; ``--requester`` opening a fresh quota;
  quotas binding operators and every role of one account;
- refusal reasons that would tell a subject's consent state;
- query ids that are identifiers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from accounts_testkit import TEST_ADMIN, seed
from products_testkit import frames, with_changes
from sqlalchemy import select

from catalogs.product_models import ProductSpec
from governance import domain_policy
from governance.actors import Actor, set_current
from governance.agreements import PACKAGED_AGREEMENTS
from governance.audit import audit_log
from governance.consent import ConsentLedger
from products import engine, specs
from products import release as rel
from products.verification import CONSENT_REFUSED, verification_quota
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home, state_engine

PRODUCT = "identity_verification"
PURPOSE = "identity-verification"


# --- helpers ------------------------------------------------------------------------------


def _audit(home: Home, action: str, outcome: str | None = None) -> list[dict[str, Any]]:
    with state_engine(home).connect() as conn:
        stmt = select(audit_log.c.object, audit_log.c.outcome, audit_log.c.details).where(
            audit_log.c.action == action
        )
        rows = conn.execute(stmt.order_by(audit_log.c.seq)).all()
    return [
        {"object": o, "outcome": out, "details": json.loads(d) if d else {}}
        for o, out, d in rows
        if outcome is None or out == outcome
    ]


def _quota_rows(home: Home) -> dict[str, int]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(select(verification_quota.c.requester, verification_quota.c.used))
        return {str(r): int(u) for r, u in rows}


def _write(home: Home, q: pl.DataFrame, name: str = "queries.csv") -> Path:
    path = home.root / name
    q.write_csv(path)
    return path


def _results(home: Home, release_id: str) -> pl.DataFrame:
    return pl.read_parquet(rel.release_dir(home, release_id) / "data" / "results.parquet")


def _grant(home: Home, ids: list[str], refs: list[str], **kw: str) -> None:
    ConsentLedger(home).import_frame(
        pl.DataFrame(
            {
                "subject_id": ids,
                "purpose": [kw.get("purpose", PURPOSE)] * len(ids),
                "granted_at": ["2025-01-01"] * len(ids),
                "expires_at": [kw.get("expires", "2099-12-31")] * len(ids),
                "evidence_ref": refs,
            }
        ),
        source="test",
    )


def _people(n: int, seed: int = 1) -> pl.DataFrame:
    return (
        frames()["RKJBXX"]
        .unique(subset=["公民身份号码"], keep="none")
        .sample(n, seed=seed)
        .select("公民身份号码", "姓名", "户籍区划代码")
    )


def _person_queries(people: pl.DataFrame, refs: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "query_id": [f"Q{i:03d}" for i in range(people.height)],
            "kind": ["person"] * people.height,
            "name": people["姓名"],
            "id_number": people["公民身份号码"],
            "consent_ref": refs or [f"EV-{i}" for i in range(people.height)],
        }
    )


def _spec(**verification: Any) -> ProductSpec:
    base = specs.get(PRODUCT)
    assert base.verification is not None
    return with_changes(base, verification={**base.verification.model_dump(), **verification})


def _district_spec(scenario: str) -> ProductSpec:
    """The attack: 'verify' a person's district (户籍区划代码) against their ID number."""
    return with_changes(
        _spec(checks=[_district_check()]),
        id="district_probe",
        scenario=scenario,
        inputs=[{"resource": "RKJBXX", "fields": ["公民身份号码", "户籍区划代码"]}],
    )


def _district_check() -> dict[str, Any]:
    return {
        "kind": "person",
        "resource": "RKJBXX",
        "key_field": "公民身份号码",
        "name_field": "户籍区划代码",
    }


def _agreements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate: Any) -> None:
    """Use a copy of the shipped agreements with ``mutate(scenario_doc)`` applied to the
    identity-verification scenario of both agreements."""
    target = tmp_path / "agreements"
    shutil.copytree(PACKAGED_AGREEMENTS, target)
    for path in target.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text("utf-8"))
        for sc in doc["scenarios"]:
            if sc["id"] == "identity-verification":
                mutate(sc)
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
    monkeypatch.setenv("SHUYU_AGREEMENTS", str(target))


def _refused_codes(home: Home) -> set[str]:
    last = _audit(home, "authorization.check", "refused")[-1]
    return {f["code"] for f in last["details"]["failures"]}


# --- item 5: scenarios authorize product kinds and field pairs ------------------------------


def test_district_probe_under_a_report_scenario_is_refused(data_home: Home) -> None:
    people = _people(5)
    q = _person_queries(people.with_columns(pl.col("户籍区划代码").alias("姓名")))
    with pytest.raises(PermissionDenied) as err:
        engine.build(data_home, _district_spec("social-insurance-report"), _opts(data_home, q))
    assert "product_kind_not_authorized" in err.value.message
    assert "verification_pair_not_authorized" in err.value.message
    assert _refused_codes(data_home) >= {
        "product_kind_not_authorized",
        "verification_pair_not_authorized",
    }
    # Nothing was read: no index, no quota, no release.
    assert not (data_home.work / "verification").exists()
    assert _quota_rows(data_home) == {}
    assert rel.list_releases(data_home, "district_probe") == []


def test_unlisted_pair_under_the_verification_scenario_is_refused(
    data_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scenario may even read the field: only a named pair may be verified.
    _agreements(tmp_path, monkeypatch, lambda sc: sc["inputs"]["RKJBXX"].append("户籍区划代码"))
    q = _person_queries(_people(3))
    with pytest.raises(PermissionDenied, match="verification_pair_not_authorized"):
        engine.build(data_home, _district_spec("identity-verification"), _opts(data_home, q))
    assert _refused_codes(data_home) == {"verification_pair_not_authorized"}


def test_spec_cannot_waive_consent_the_scenario_requires(data_home: Home) -> None:
    base = specs.get(PRODUCT)
    assert base.verification is not None
    checks = [c.model_dump() for c in base.verification.checks]
    checks[0]["consent_required"] = False  # the person check
    q = _person_queries(_people(3))
    with pytest.raises(PermissionDenied, match="cannot waive"):
        engine.build(data_home, _spec(checks=checks), _opts(data_home, q))
    assert _refused_codes(data_home) == {"verification_pair_not_authorized"}


def test_report_under_the_verification_scenario_is_refused(data_home: Home) -> None:
    si = specs.get("si_enrolment_report")
    spec = with_changes(si, scenario="identity-verification")
    with pytest.raises(PermissionDenied, match="product_kind_not_authorized"):
        engine.build(data_home, spec)
    assert "product_kind_not_authorized" in _refused_codes(data_home)


def test_scenario_model_requires_pairs_for_verification() -> None:
    from catalogs.agreement_models import Scenario

    with pytest.raises(ValueError, match="names no field pair"):
        Scenario(id="v", name="v", inputs={"RKJBXX": ["公民身份号码"]}, products=["verification"])
    with pytest.raises(ValueError, match="does not read"):
        Scenario(
            id="v",
            name="v",
            inputs={"RKJBXX": ["公民身份号码"]},
            products=["verification"],
            verify=[{"resource": "RKJBXX", "key_field": "公民身份号码", "name_field": "姓名"}],
        )
    # Without a list a scenario allows aggregate kinds only.
    plain = Scenario(id="r", name="r", inputs={"RKJBXX": ["公民身份号码"]})
    assert plain.products == ["statistical_report", "index"]


def test_second_check_does_not_poison_the_identity_index(
    data_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A district check, even when a scenario authorizes it, has its own keyed index: the
    identity verification afterwards still answers true names with ``match``."""

    def allow_district(sc: dict[str, Any]) -> None:
        sc["inputs"]["RKJBXX"].append("户籍区划代码")
        pair = {k: v for k, v in _district_check().items() if k != "kind"}
        sc["verify"].append(pair)

    _agreements(tmp_path, monkeypatch, allow_district)
    people = _people(20, seed=4)
    _grant(data_home, people["公民身份号码"].to_list(), [f"EV-{i}" for i in range(20)])
    district_q = _person_queries(people.with_columns(pl.col("户籍区划代码").alias("姓名")))
    probe = engine.build(
        data_home, _district_spec("identity-verification"), _opts(data_home, district_q, "d.csv")
    )
    assert set(_results(data_home, probe.release_id)["result"]) == {"match"}

    real = engine.build(data_home, PRODUCT, _opts(data_home, _person_queries(people), "r.csv"))
    assert _results(data_home, real.release_id)["result"].to_list() == ["match"] * 20
    assert len(list((data_home.work / "verification").glob("RKJBXX-*.parquet"))) == 2


# --- item 6: quotas -----------------------------------------------------------------------


def _opts(home: Home, q: pl.DataFrame, name: str = "queries.csv", **kw: Any) -> Any:
    return engine.BuildOptions(queries=_write(home, q, name), **kw)


def test_quota_above_the_policy_ceiling_is_refused(data_home: Home) -> None:
    q = _person_queries(_people(3))
    with pytest.raises(ValidationError, match="exceeds the domain policy's ceiling of 5000"):
        engine.build(data_home, _spec(quota_per_day=1_000_000_000), _opts(data_home, q))
    entry = _audit(data_home, "product.build", "refused")[-1]
    assert entry["details"]["check"] == "verification_quota_ceiling"
    assert entry["details"]["quota_per_day"] == 1_000_000_000
    assert _quota_rows(data_home) == {}


def test_a_lowered_ceiling_binds_existing_specs(data_home: Home) -> None:
    policy = domain_policy.effective(data_home)
    lowered = policy.model_copy(
        update={
            "verification": policy.verification.model_copy(
                update={"max_quota_per_requester_per_day": 10}
            )
        }
    )
    seed(data_home, {TEST_ADMIN.name: ["admin"]})
    set_current(TEST_ADMIN)
    domain_policy.apply(data_home, lowered, "tighter verification quota", TEST_ADMIN.name)
    set_current(None)
    q = _person_queries(_people(3))
    with pytest.raises(ValidationError, match="ceiling of 10"):
        engine.build(data_home, PRODUCT, _opts(data_home, q))  # quota_per_day 5000
    # At the ceiling the spec is accepted and the ceiling is what binds.
    _grant(data_home, _people(15, seed=9)["公民身份号码"].to_list(), [f"EV-{i}" for i in range(15)])
    out = engine.build(
        data_home, _spec(quota_per_day=10), _opts(data_home, _person_queries(_people(15, 9)))
    )
    res = _results(data_home, out.release_id)
    assert (res["reason"] == "quota_exceeded").sum() == 5


def test_requester_flag_never_opens_a_fresh_quota(data_home: Home) -> None:
    people = _people(12, seed=2)
    _grant(data_home, people["公民身份号码"].to_list(), [f"EV-{i}" for i in range(12)])
    tight = _spec(quota_per_day=8)
    engine.build(data_home, tight, _opts(data_home, _person_queries(people.head(8)), "a.csv"))
    assert _quota_rows(data_home) == {"test-operator": 8}
    q = _person_queries(people.tail(4))
    with pytest.raises(PermissionDenied, match="not the authenticated account"):
        engine.build(data_home, tight, _opts(data_home, q, "b.csv", requester="dev-002"))
    entry = _audit(data_home, "verify.query", "refused")[-1]
    assert entry["details"]["check"] == "requester"
    assert entry["details"]["requested"] == "dev-002"
    assert _quota_rows(data_home) == {"test-operator": 8}
    # Naming oneself is accepted and recorded, and draws on the same (spent) quota.
    same = engine.build(data_home, tight, _opts(data_home, q, "b.csv", requester="test-operator"))
    assert _results(data_home, same.release_id)["reason"].to_list() == ["quota_exceeded"] * 4
    assert _audit(data_home, "verify.batch")[-1]["details"]["requester"] == "test-operator"


def test_quota_binds_the_account_across_its_roles(data_home: Home) -> None:
    people = _people(10, seed=6)
    _grant(data_home, people["公民身份号码"].to_list(), [f"EV-{i}" for i in range(10)])
    tight = _spec(quota_per_day=6)
    seed(data_home, {"alice": ["operator", "developer:dev-001"]})
    set_current(Actor("alice", "operator"))
    engine.build(data_home, tight, _opts(data_home, _person_queries(people.head(6)), "a.csv"))
    set_current(Actor("alice", "developer:dev-001"))
    out = engine.build(data_home, tight, _opts(data_home, _person_queries(people.tail(4)), "b.csv"))
    assert _results(data_home, out.release_id)["reason"].to_list() == ["quota_exceeded"] * 4
    assert _quota_rows(data_home) == {"alice": 6}


# --- item 6: no consent-state side channel ----------------------------------------------------


def test_refusals_do_not_reveal_the_consent_state(data_home: Home) -> None:
    people = _people(9, seed=8)
    ids = people["公民身份号码"].to_list()
    led = ConsentLedger(data_home)
    _grant(data_home, ids[0:1], ["EV-0"])  # valid, cited correctly: answered
    # ids[1]: no consent at all
    _grant(data_home, ids[2:3], ["EV-2"], purpose="marketing")
    _grant(data_home, ids[3:4], ["EV-3"], expires="2025-06-30")
    _grant(data_home, ids[4:5], ["EV-4"])
    led.revoke(subject_id=ids[4])
    _grant(data_home, ids[5:8], ["EV-5", "EV-6", "EV-7"])  # valid, but cited wrongly below
    refs = ["EV-0", "EV-1", "EV-2", "EV-3", "EV-4", "EV-6", "NO-SUCH-REF", "", "EV-8"]
    q = _person_queries(people, refs)
    # ids[8]: an identifier not in the registry, without consent, must look the same too
    q = q.with_columns(
        pl.when(pl.col("query_id") == "Q008")
        .then(pl.lit("110101199003079999"))
        .otherwise(pl.col("id_number"))
        .alias("id_number")
    )
    out = engine.build(data_home, PRODUCT, _opts(data_home, q))
    res = _results(data_home, out.release_id)
    assert res["result"][0] == "match"
    refused = res.slice(1)
    assert refused.select("result", "reason").unique().rows() == [("refused", CONSENT_REFUSED)]
    # Every written format carries the same single reason.
    for o in out.manifest.outputs:
        if o.format == "parquet":
            continue  # read above
        text = (rel.release_dir(data_home, out.release_id) / o.path).read_text("utf-8")
        assert "consent_missing" not in text and "expired" not in text and "revoked" not in text
    assert out.manifest.verification is not None
    assert out.manifest.verification["refused_reasons"] == {CONSENT_REFUSED: 8}
    # The audit log keeps the detailed reason of every refusal.
    detail = dict(_audit(data_home, "verify.refused")[-1]["details"]["refused"])
    assert detail == {
        "Q001": "consent_missing",
        "Q002": "consent_wrong_purpose",
        "Q003": "consent_expired",
        "Q004": "consent_revoked",
        "Q005": "consent_ref_mismatch",
        "Q006": "consent_ref_mismatch",
        "Q007": "consent_ref_missing",
        "Q008": "consent_missing",
    }


# --- item 6: identifier-shaped query ids ------------------------------------------------------


def _luhn_card(prefix: str = "622202", length: int = 16) -> str:
    body = prefix + "0" * (length - len(prefix) - 1)
    digits = [int(c) for c in body][::-1]
    total = sum(d if i % 2 else (2 * d if 2 * d < 10 else 2 * d - 9) for i, d in enumerate(digits))
    return body + str((10 - total % 10) % 10)


def _bad_ids() -> dict[str, str]:
    person = _people(1, seed=12)["公民身份号码"][0]
    firm = frames()["SCZTDJ"]["统一社会信用代码"][0]
    return {
        "resident_id": person,
        "resident_id_prefixed": f"Q-{person}",
        "resident_id_glued": f"REQ{person}",
        "resident_id_15": "110101900307123",
        "mobile": "13812345678",
        "mobile_glued": "A13812345678",
        "bank_card": _luhn_card(),
        "bank_card_dashed": "-".join(_luhn_card()[i : i + 4] for i in range(0, 16, 4)),
        "mobile_dashed": "138-1234-5678",
        "landline": "0417-2812345",
        "passport": "E12345678",
        "uscc": firm,
        "email": "zhang.san@example.com",
        "name": "张三",
        "own_identifier": "Q-110101199003079999",  # not a valid ID, but the queried one
    }


@pytest.mark.parametrize("shape", sorted(_bad_ids()))
def test_identifier_shaped_query_id_is_refused(data_home: Home, shape: str) -> None:
    bad = _bad_ids()[shape]
    people = _people(4, seed=13)
    q = _person_queries(people).with_columns(
        pl.when(pl.col("query_id") == "Q002")
        .then(pl.lit(bad))
        .otherwise("query_id")
        .alias("query_id"),
        pl.when(pl.col("query_id") == "Q002")
        .then(pl.lit("110101199003079999") if shape == "own_identifier" else pl.col("id_number"))
        .otherwise("id_number")
        .alias("id_number"),
    )
    with pytest.raises(ValidationError, match="row 3") as err:
        engine.build(data_home, PRODUCT, _opts(data_home, q))
    assert bad not in err.value.one_line()
    entry = _audit(data_home, "verify.refused", "refused")[-1]
    assert entry["details"]["check"] == "query_id" and entry["details"]["rows"] == [3]
    assert bad not in json.dumps(entry, ensure_ascii=False)
    assert _quota_rows(data_home) == {}
    assert rel.list_releases(data_home, PRODUCT) == []


def test_ordinary_query_ids_are_accepted(data_home: Home) -> None:
    people = _people(4, seed=14)
    _grant(data_home, people["公民身份号码"].to_list(), [f"EV-{i}" for i in range(4)])
    q = _person_queries(people).with_columns(
        pl.Series("query_id", ["REQ-000123", "20251126000001", "batch7:q.4", "a"])
    )
    out = engine.build(data_home, PRODUCT, _opts(data_home, q))
    assert _results(data_home, out.release_id)["result"].to_list() == ["match"] * 4


def test_products_validate_lists_the_ceiling_and_scope_problems(
    data_home: Home, spec_dir: Path
) -> None:
    from pipelines.cli_products import products_validate

    products_validate(None)  # the shipped specs are valid
    doc = yaml.safe_load((spec_dir / f"{PRODUCT}.yaml").read_text("utf-8"))
    doc["verification"]["quota_per_day"] = 1_000_000_000
    doc["verification"]["checks"][0]["name_field"] = "户籍区划代码"
    doc["inputs"][0]["fields"].append("户籍区划代码")
    (spec_dir / f"{PRODUCT}.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    with pytest.raises(ValidationError) as err:
        products_validate(PRODUCT)
    text = err.value.message
    assert "ceiling of 5000" in text
    assert "verification_pair_not_authorized" in text and "field_out_of_scope" in text
    validate = _audit(data_home, "product.validate", "refused")
    assert validate and validate[-1]["details"]["check"] == "verification_quota_ceiling"


def test_two_checks_of_one_kind_are_refused() -> None:
    """An exempt enterprise check must not lift consent from a person check disguised as
    another enterprise check."""
    base = specs.get(PRODUCT)
    assert base.verification is not None
    checks = [c.model_dump() for c in base.verification.checks]
    checks[0]["kind"] = "enterprise"  # the RKJBXX person check, relabelled
    with pytest.raises(ValidationError, match="verification check kind"):
        _spec(checks=checks)


def test_spec_cannot_pick_another_consent_purpose(data_home: Home) -> None:
    """Consents collected for marketing do not open identity verification."""
    people = _people(3, seed=15)
    ids = people["公民身份号码"].to_list()
    _grant(data_home, ids, ["EV-0", "EV-1", "EV-2"], purpose="marketing")
    with pytest.raises(PermissionDenied, match="consent_purpose_not_authorized"):
        engine.build(
            data_home, _spec(consent_purpose="marketing"), _opts(data_home, _person_queries(people))
        )
    assert _refused_codes(data_home) == {"consent_purpose_not_authorized"}
