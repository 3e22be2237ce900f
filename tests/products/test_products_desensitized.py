"""The desensitized medical extract: policy operators, k ≥ 5, no identifier leaves."""

from __future__ import annotations

import polars as pl
import pytest
from products_testkit import frames, ingest_frames, with_changes

from catalogs.product_models import DesensitizeSpec
from privacy import risk
from products import engine, specs
from products import release as rel
from products.desensitized import _UNIT, enforce
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, init_key

PRODUCT = "medical_desensitized_extract"
QIS = ["性别", "年龄段", "户籍区划", "就诊月份"]


@pytest.fixture()
def medical_home(home: Home) -> Home:
    ingest_frames(home, frames(), ["YBJS", "RKJBXX"])
    init_key(home, PSEUDONYM)
    return home


def test_extract_is_k_anonymous_and_carries_no_identifier(medical_home: Home) -> None:
    out = engine.build(medical_home, PRODUCT)
    m = out.manifest
    root = rel.release_dir(medical_home, m.release_id)
    df = pl.read_parquet(root / "data/extract.parquet")
    assert set(df.columns) == {*QIS, "诊断编码", "医疗总费用", "统筹支付金额"}
    assert m.k_anonymity is not None
    assert m.k_anonymity.target == 5 and m.k_anonymity.achieved >= 5
    assert m.k_anonymity.records_out == df.height > 0
    assert m.k_anonymity.records_in == frames()["YBJS"].height
    # An independent check with the risk module on what was written.
    assert risk.k_anonymity(df, QIS).min_class_size >= 5
    assert m.budget is None and m.reversible_columns == []
    assert all(o.values == "desensitized_record" for o in m.outputs)
    # No raw identifier, name or exact amount of the inputs appears in any output file.
    people = frames()["RKJBXX"]
    for o in m.outputs:
        text = (root / o.path).read_bytes().decode("utf-8-sig", errors="replace")
        for value in people["公民身份号码"].head(300).to_list():
            assert value not in text
        for name in people["姓名"].head(300).to_list():
            assert f",{name}," not in text
    assert df["就诊月份"].str.contains(r"^\d{4}-\d{2}$|^\d{4}Q\d$|^\d{4}$|^\*$").all()
    assert df["医疗总费用"].str.starts_with("[").all() or df["医疗总费用"].str.ends_with("+").any()


def test_reversible_output_is_refused_by_the_agreement(medical_home: Home) -> None:
    spec = specs.get(PRODUCT)
    assert spec.desensitize is not None
    overrides = {
        **{k: v.model_dump() for k, v in spec.desensitize.overrides.items()},
        "YBJS.诊断编码": {"op": "encrypt_sm4", "params": {}},
    }
    bad = with_changes(
        spec,
        version="1.0.1",
        desensitize={**spec.desensitize.model_dump(mode="json"), "overrides": overrides},
    )
    with pytest.raises(PermissionDenied, match="reversible_not_allowed"):
        engine.build(medical_home, bad)


def test_classes_need_k_distinct_persons_not_only_k_records() -> None:
    base = {"性别": "男", "年龄段": "30-39", "户籍区划": "210802", "就诊月份": "2025-03"}
    rows = [{**base, _UNIT: f"p{i}", "诊断编码": "J06.9"} for i in range(5)]
    # One person with six visits alone in a class: six records, one person.
    lonely = {**base, "户籍区划": "210803"}
    rows += [{**lonely, _UNIT: "solo", "诊断编码": "I10"} for _ in range(6)]
    frame = pl.DataFrame(rows)
    d = DesensitizeSpec(base_resource="YBJS", quasi_identifiers=QIS, k=5)
    out, report = enforce(frame, d)
    assert report["achieved"] >= 5
    assert report["records_suppressed"] == 6 and report["records_suppressed_persons"] == 6
    assert out.height == 5 and _UNIT not in out.columns
