"""The desensitization policy model: validation and resolution order."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from catalogs.vocabulary import PiiType, Sensitivity
from shuyu_core.errors import NotFoundError, ValidationError
from transforms.policy import DEFAULT_POLICY, Policy, Rule, load_policy


def _default_doc() -> dict[str, object]:
    return dict(yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8")))


def _write(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_default_policy_covers_every_type_and_removes_direct_identifiers() -> None:
    policy = load_policy()
    assert set(policy.by_type) == set(PiiType)
    assert policy.by_type[PiiType.PERSON_NAME].op == "suppress"
    assert policy.by_type[PiiType.CN_RESIDENT_ID].op == "pseudonymize"
    # Nothing in the default is reversible: its outputs may go to a published product.
    rules = [*policy.by_type.values(), *policy.by_sensitivity.values(), *policy.fields.values()]
    assert not any(r.reversible for r in rules)


def test_missing_type_default_is_refused(tmp_path: Path) -> None:
    doc = _default_doc()
    by_type = dict(doc["by_type"])  # type: ignore[call-overload]
    del by_type["CN_MOBILE"]
    doc["by_type"] = by_type
    with pytest.raises(ValidationError, match="CN_MOBILE"):
        load_policy(_write(tmp_path, doc))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"op": "shred"}, "op"),
        ({"op": "mask", "params": {"keep_everything": True}}, "no parameter"),
        ({"op": "generalize_date", "params": {"level": "week"}}, "must be one of"),
        ({"op": "generalize_amount"}, "needs parameter 'width'"),
        ({"op": "top_code", "params": {"value": 1, "quantile": 0.9}}, "exactly one"),
        ({"op": "top_code", "params": {"quantile": 1.5}}, "between 0 and 1"),
        ({"op": "mask", "params": {"keep_region": "yes"}}, "wrong type"),
    ],
)
def test_bad_rules_are_refused(tmp_path: Path, rule: dict[str, object], message: str) -> None:
    doc = _default_doc()
    doc["fields"] = {"RKJBXX.联系电话": rule}
    with pytest.raises(ValidationError, match=message):
        load_policy(_write(tmp_path, doc))


def test_missing_policy_file() -> None:
    with pytest.raises(NotFoundError):
        load_policy(Path("/nonexistent/policy.yaml"))


def test_resolution_order() -> None:
    policy = Policy(
        name="t",
        by_type={t: Rule(op="mask") for t in PiiType},
        by_sensitivity={Sensitivity.SENSITIVE_PERSONAL: Rule(op="suppress")},
        fields={
            "RKJBXX.联系电话": Rule(op="pseudonymize"),
            "备注": Rule(op="suppress"),
        },
    )
    rule, src = policy.resolve("RKJBXX", "联系电话", PiiType.CN_MOBILE, Sensitivity.PERSONAL)
    assert rule.op == "pseudonymize" and src == "fields[RKJBXX.联系电话]"
    rule, _ = policy.resolve("YBJS", "备注", None, Sensitivity.NONE, PiiType.CN_MOBILE)
    assert rule.op == "suppress"
    rule, src = policy.resolve("X", "c", None, Sensitivity.NONE, PiiType.CN_MOBILE)
    assert rule.op == "mask" and "detected" in src
    ignoring = policy.model_copy(update={"detected": "ignore"})
    assert ignoring.resolve("X", "c", None, Sensitivity.NONE, PiiType.CN_MOBILE)[0].op == "keep"
    rule, _ = policy.resolve("X", "诊断", None, Sensitivity.SENSITIVE_PERSONAL)
    assert rule.op == "suppress"
    assert policy.digest() != load_policy().digest()
