"""Verification: correct on a labelled sample, refused without consent, quota, audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from accounts_testkit import act_as
from products_testkit import frames, with_changes
from sqlalchemy import select

from governance.audit import audit_log
from governance.consent import ConsentLedger
from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from products.verification import normalize_name
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home, state_engine

PRODUCT = "identity_verification"
PURPOSE = "identity-verification"


def _grant(home: Home, ids: list[str], purpose: str = PURPOSE, expires: str = "2099-12-31") -> None:
    ConsentLedger(home).import_frame(
        pl.DataFrame(
            {
                "subject_id": ids,
                "purpose": [purpose] * len(ids),
                "granted_at": ["2025-01-01"] * len(ids),
                "expires_at": [expires] * len(ids),
                # the i-th subject of a batch is granted under reference EV-<i>
                "evidence_ref": [f"EV-{i}" for i in range(len(ids))],
            }
        ),
        source="test",
    )


def _labelled_sample(seed: int = 3) -> tuple[pl.DataFrame, list[str]]:
    # 40 person queries, then 12 enterprise queries
    """Queries with known answers: true pairs, swapped names, unknown identifiers."""
    rng = np.random.default_rng(seed)
    f = frames()
    people = f["RKJBXX"].unique(subset=["公民身份号码"], keep="none").sample(40, seed=seed)
    firms = f["SCZTDJ"].unique(subset=["统一社会信用代码"], keep="none").sample(12, seed=seed)
    rows: list[dict[str, str]] = []
    truth: list[str] = []
    names = people["姓名"].to_list()
    for i, (pid, name) in enumerate(zip(people["公民身份号码"], names, strict=True)):
        kind = i % 3
        if kind == 0:
            rows.append({"name": f" {name} ", "id_number": pid.lower()})  # normalization
            truth.append("match")
        elif kind == 1:
            other = next(n for n in rng.permutation(names) if n != name)
            rows.append({"name": str(other), "id_number": pid})
            truth.append("mismatch")
        else:
            fake = "11010119900307" + f"{rng.integers(1000, 9999)}"
            rows.append({"name": name, "id_number": fake})
            truth.append("not_found")
    for i, (uscc, name) in enumerate(
        zip(firms["统一社会信用代码"], firms["企业名称"], strict=True)
    ):
        if i % 2 == 0:
            # Full-width brackets in the query still match (NFKC).
            rows.append({"name": name.replace("(", "（").replace(")", "）"), "id_number": uscc})
            truth.append("match")
        else:
            rows.append({"name": name + "分公司", "id_number": uscc})
            truth.append("mismatch")
    kinds = ["person"] * len(people) + ["enterprise"] * len(firms)
    q = pl.DataFrame(rows).with_columns(
        pl.Series("query_id", [f"Q{i:03d}" for i in range(len(rows))]),
        pl.Series("kind", kinds),
        pl.Series("consent_ref", [f"EV-{i}" for i in range(len(rows))]),
    )
    return q.select("query_id", "kind", "name", "id_number", "consent_ref"), truth


def _write(home: Home, q: pl.DataFrame, name: str = "queries.csv") -> Path:
    path = home.root / name
    q.write_csv(path)
    return path


def _results(home: Home, release_id: str) -> pl.DataFrame:
    return pl.read_parquet(rel.release_dir(home, release_id) / "data" / "results.parquet")


def test_labelled_sample_is_answered_correctly(data_home: Home) -> None:
    q, truth = _labelled_sample()
    _grant(data_home, q["id_number"].to_list())
    out = engine.build(data_home, PRODUCT, engine.BuildOptions(queries=_write(data_home, q)))
    res = _results(data_home, out.release_id)
    assert res.columns == ["query_id", "kind", "result", "reason"]
    assert res["result"].to_list() == truth
    assert set(truth) == {"match", "mismatch", "not_found"}
    m = out.manifest
    assert m.kind == "verification" and m.budget is None
    assert all(o.values == "verification_flag" for o in m.outputs)
    assert m.verification is not None and m.verification["results"]["match"] == truth.count("match")
    # No attribute of any record leaves: every output cell is a query id, kind, flag or reason.
    allowed = set(q["query_id"]) | {"person", "enterprise", "match", "mismatch", "not_found"}
    for o in m.outputs:
        text = (rel.release_dir(data_home, m.release_id) / o.path).read_bytes()
        for pid in frames()["RKJBXX"]["公民身份号码"].head(200):
            assert pid.encode() not in text
    assert set(res["query_id"]) | set(res["kind"]) | set(res["result"]) <= allowed
    # No budget is involved in verification.
    assert ledger.entries_for_release(data_home, m.release_id) == []


def test_queries_without_valid_consent_are_refused_and_logged(data_home: Home) -> None:
    q, truth = _labelled_sample(seed=5)
    ids = q["id_number"].to_list()
    _grant(data_home, ids[:10])
    _grant(data_home, ids[10:15], purpose="marketing")
    _grant(data_home, ids[15:20], expires="2025-06-30")
    led = ConsentLedger(data_home)
    _grant(data_home, ids[20:25])
    for pid in ids[20:25]:
        led.revoke(subject_id=pid)
    q = q.with_columns(
        pl.when(pl.col("query_id") == "Q005")
        .then(pl.lit(""))
        # a valid consent exists for Q007's subject, but the query cites another subject's
        .when(pl.col("query_id") == "Q007")
        .then(pl.lit("EV-8"))
        .otherwise("consent_ref")
        .alias("consent_ref")
    )
    out = engine.build(data_home, PRODUCT, engine.BuildOptions(queries=_write(data_home, q)))
    res = _results(data_home, out.release_id)
    expect_reason = (
        ["consent_ok"] * 10
        + ["consent_wrong_purpose"] * 5
        + ["consent_expired"] * 5
        + ["consent_revoked"] * 5
        + ["consent_missing"] * (40 - 25)
        + ["consent_ok"] * 12  # enterprise registration data needs no subject consent
    )
    expect_reason[5] = "consent_ref_missing"
    expect_reason[7] = "consent_ref_mismatch"
    for row, reason, answer in zip(res.iter_rows(named=True), expect_reason, truth, strict=True):
        if reason == "consent_ok":
            assert row["result"] == answer and row["reason"] is None
        else:
            # one reason whatever the consent state; the detail is in the audit log only
            assert row["result"] == "refused" and row["reason"] == "consent_not_verified"
    with state_engine(data_home).connect() as conn:
        refused = conn.execute(
            select(audit_log.c.details).where(
                audit_log.c.action == "verify.refused", audit_log.c.object == out.release_id
            )
        ).all()
        batch = conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "verify.batch")
        ).all()
    assert len(refused) == 1 and len(batch) == 1
    logged = dict(json.loads(refused[0][0])["refused"])
    assert logged == {
        qid: reason
        for qid, reason in zip(q["query_id"], expect_reason, strict=True)
        if reason != "consent_ok"
    }
    assert len(json.loads(batch[0][0])["answers"]) == q.height


def test_quota_stops_enumeration_and_reruns_are_free(data_home: Home, spec_dir: Path) -> None:
    spec = specs.get(PRODUCT)
    assert spec.verification is not None
    tight = with_changes(
        spec, verification={**spec.verification.model_dump(mode="json"), "quota_per_day": 30}
    )
    q, _truth = _labelled_sample()
    _grant(data_home, q["id_number"].to_list())
    first = engine.build(data_home, tight, engine.BuildOptions(queries=_write(data_home, q)))
    again = engine.build(data_home, tight, engine.BuildOptions(queries=_write(data_home, q)))
    assert again.reused and again.release_id == first.release_id  # no quota spent twice
    res = _results(data_home, first.release_id)
    assert (res["result"] != "refused").sum() == 30
    assert res["reason"].to_list()[30:] == ["quota_exceeded"] * (q.height - 30)
    # A new batch the same day gets nothing; another account has its own quota.
    second = engine.build(
        data_home, tight, engine.BuildOptions(queries=_write(data_home, q.head(5), "q2.csv"))
    )
    assert _results(data_home, second.release_id)["reason"].to_list() == ["quota_exceeded"] * 5
    act_as(data_home, "test-operator-2", "operator")
    other = engine.build(
        data_home, tight, engine.BuildOptions(queries=_write(data_home, q.head(5), "q2.csv"))
    )
    assert (_results(data_home, other.release_id)["result"] != "refused").all()


def test_batch_is_required_and_validated(data_home: Home) -> None:
    with pytest.raises(ValidationError, match="answers a batch of queries"):
        engine.build(data_home, PRODUCT)
    bad = pl.DataFrame({"query_id": ["a", "a"], "name": ["x", "y"], "id_number": ["1", "2"]})
    with pytest.raises(ValidationError, match="consent_ref"):
        engine.build(data_home, PRODUCT, engine.BuildOptions(queries=_write(data_home, bad)))


def test_name_normalization() -> None:
    assert normalize_name(" 营口（港）物流 有限公司 ") == "营口(港)物流有限公司"
    assert normalize_name("张\u3000三") == "张三"
