"""The assessment holds every release to the domain privacy floors, whatever its spec or
builder claims: each abuse of issue 12 fails with the check that names it, and the report
shows the floor beside every measured value.

Releases a correct builder would refuse to make are written as a faulty builder would write
them (``forge``: outputs and manifest changed, SM3s recomputed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from assessment_testkit import forge, write_spec

from assessment.engine import assess, report_paths
from assessment.models import Assessment
from products.engine import build
from shuyu_core import snapshots
from shuyu_core.home import Home

SI = "si_enrolment_report"
MED = "medical_desensitized_extract"
EXTRACT = "data/extract.parquet"


def _fails(a: Assessment, check: str, *needles: str) -> str:
    c = a.check(check)
    assert c.status == "fail", (check, c.evidence)
    assert a.verdict == "fail"
    for needle in needles:
        assert needle in c.evidence, c.evidence
    return c.evidence


def _cycle(values: pl.Series, n: int) -> pl.Series:
    """``values`` repeated to length ``n``."""
    return pl.Series(values.name, (values.to_list() * (n // values.len() + 1))[:n])


def _parquet_only(doc: dict[str, Any]) -> None:
    doc["outputs"] = [o for o in doc["outputs"] if o["format"] == "parquet"]


def test_floors_are_shown_beside_the_measured_values(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    med = assess(home, releases[MED])
    k = med.check("k_anonymity")
    assert k.status == "pass" and "floor 5" in k.evidence and "l=" in k.evidence
    assert "(floor 2)" in k.evidence
    masks = med.check("mask_strength")
    assert (
        masks.status == "pass"
        and "年龄段 ← 出生日期: generalize_age (floor: mask)" in masks.evidence
    )
    si = assess(home, releases[SI])
    dp = si.check("dp_ceilings")
    assert dp.status == "pass" and "(ceiling 1)" in dp.evidence and "公民身份号码" in dp.evidence
    assert "floor 5" in si.check("small_cells").evidence
    assert si.check("free_text_screening").status == "pass"


def test_epsilon_1000_release_fails_the_ceilings(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        doc["budget"]["rho"] = 900.0
        doc["budget"]["epsilon"] = 1000.0

    a = assess(home, forge(home, releases[SI], "eps1000", mutate))
    _fails(a, "dp_ceilings", "ρ=900 above the ceiling 1", "ε=")


def test_qis_by_lineage_cannot_be_removed_by_the_spec(demo: tuple[Home, dict[str, str]]) -> None:
    """The spec declares [性别] only; the renamed birth-date band and the district still count
    because their lineage leads to catalog quasi-identifiers."""
    home, releases = demo

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        doc["spec"]["desensitize"]["quasi_identifiers"] = ["性别"]
        df = pl.read_parquet(stage / EXTRACT)
        # a faulty builder that enforced k over 性别 only: some records stand alone
        df = df.with_columns(
            pl.when(pl.int_range(pl.len()) < 3)
            .then(pl.format("{}-single", pl.int_range(pl.len())))
            .otherwise(pl.col("户籍区划"))
            .alias("户籍区划")
        )
        df.write_parquet(stage / EXTRACT)
        _parquet_only(doc)

    a = assess(home, forge(home, releases[MED], "qi", mutate))
    ev = _fails(a, "k_anonymity", "k=1", "added by lineage")
    assert "户籍区划" in ev and "年龄段" in ev


def test_masked_mobile_stub_counts_as_a_quasi_identifier(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    mobiles = snapshots.scan(home, "RKJBXX", columns=["联系电话"]).collect()["联系电话"]

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        df = pl.read_parquet(stage / EXTRACT)
        m = _cycle(mobiles, df.height)
        stub = m.str.slice(0, 3) + "****" + m.str.slice(7)
        df = df.with_columns(stub.alias("电话"))
        df.write_parquet(stage / EXTRACT)
        _parquet_only(doc)
        doc["outputs"][0]["columns"].append(
            {
                "name": "电话",
                "type": "String",
                "description": "RKJBXX.联系电话: mask",
                "sources": ["RKJBXX.联系电话"],
                "operator": "mask",
                "params": {},
            }
        )

    a = assess(home, forge(home, releases[MED], "mobile", mutate))
    _fails(a, "k_anonymity", "电话")
    _fails(a, "mask_strength", "CN_MOBILE", "position(s) 8, 9")


def test_recoverable_resident_id_mask_fails_mask_strength(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    ids = snapshots.scan(home, "RKJBXX", columns=["公民身份号码"]).collect()["公民身份号码"]

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        df = pl.read_parquet(stage / EXTRACT)
        v = _cycle(ids, df.height)
        masked = v.str.slice(0, 16) + "*" + v.str.slice(17)  # 17 of 18 kept
        df.with_columns(masked.alias("证件")).write_parquet(stage / EXTRACT)
        _parquet_only(doc)
        doc["outputs"][0]["columns"].append(
            {
                "name": "证件",
                "type": "String",
                "sources": ["RKJBXX.公民身份号码"],
                "operator": "mask",
                "params": {"keep_region": True, "keep_birth": True},
            }
        )

    a = assess(home, forge(home, releases[MED], "ric", mutate))
    _fails(a, "mask_strength", "recoverable", "must be pseudonymized or removed")
    # pii_scan and raw_identifiers are not what catches it: the value contains '*'
    assert a.check("raw_identifiers").status == "pass"


def test_sparse_identifiers_and_names_in_free_text(demo: tuple[Home, dict[str, str]]) -> None:
    """2.5% of remarks hold a mobile, 1.5% an ID number, a few a person's name."""
    home, releases = demo
    people = snapshots.scan(home, "RKJBXX", columns=["公民身份号码", "姓名"]).collect()

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        df = pl.read_parquet(stage / EXTRACT)
        n = df.height
        i = pl.int_range(pl.len())
        ids = pl.lit(_cycle(people["公民身份号码"], n))
        names = pl.lit(_cycle(people["姓名"], n))
        remark = (
            pl.when(i % 40 == 0)
            .then(pl.format("请致电1381234{}复查", (i % 9000 + 1000).cast(pl.String)))
            .when(i % 67 == 1)
            .then(pl.format("证件{}已核", ids))
            .when(i % 500 == 2)
            .then(pl.format("陪同家属{}签字", names))
            .otherwise(pl.lit("复诊，无特殊"))
        )
        df.with_columns(remark.alias("备注")).write_parquet(stage / EXTRACT)
        _parquet_only(doc)
        doc["outputs"][0]["columns"].append(
            {"name": "备注", "type": "String", "sources": [], "operator": "keep", "params": {}}
        )

    a = assess(home, forge(home, releases[MED], "remarks", mutate))
    ev = _fails(a, "free_text_screening", "CN_MOBILE", "CN_RESIDENT_ID", "name of a person")
    assert "extract.备注" in ev
    # the scanner's column share misses them; the exhaustive screening does not
    raw = people["姓名"].head(50).to_list() + people["公民身份号码"].head(50).to_list()
    for path in report_paths(home, a).values():
        text = path.read_text(encoding="utf-8")
        assert not any(v in text for v in raw), path


def test_literal_district_values_that_are_id_numbers_fail_public_keys(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    ids = snapshots.scan(home, "RKJBXX", columns=["公民身份号码"]).head(2).collect()
    ids_list = ids["公民身份号码"].to_list()

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        for dim in doc["spec"]["dimensions"]:
            if dim["name"] == "sex":
                dim["values"] = ids_list
        for out in doc["outputs"]:
            if out["format"] != "parquet":
                continue
            path = stage / out["path"]
            df = pl.read_parquet(path)
            if "sex" in df.columns:
                df = df.with_columns(
                    pl.when(pl.col("sex") == "男")
                    .then(pl.lit(ids_list[0]))
                    .otherwise(pl.lit(ids_list[1]))
                    .alias("sex")
                )
                df.write_parquet(path)
        _parquet_only(doc)

    a = assess(home, forge(home, releases[SI], "idkeys", mutate))
    ev = _fails(a, "public_keys", "literal value(s) are identifiers")
    assert not any(v in ev for v in ids_list)


def test_hmac_pseudonym_column_is_not_reversible(
    demo: tuple[Home, dict[str, str]], spec_dir: Path
) -> None:
    home, _ = demo
    write_spec(spec_dir, MED, lambda d: d["desensitize"].update({"keep_unit": True}))
    release_id = build(home, MED).release_id
    a = assess(home, release_id)
    c = a.check("reversible_columns")
    assert c.status == "pass", c.evidence
    assert "pseudonymize" in c.evidence


def test_unknown_lineage_is_unsafe(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo

    def mutate(stage: Path, doc: dict[str, Any]) -> None:
        for out in doc["outputs"]:
            for col in out["columns"]:
                if col["name"] == "诊断编码":
                    col["operator"] = None
                    col["sources"] = []

    a = assess(home, forge(home, releases[MED], "nolineage", mutate))
    _fails(a, "reversible_columns", "lineage unknown for extract.诊断编码")
    _fails(a, "mask_strength", "extract.诊断编码: lineage unknown")


def test_screening_spares_a_kept_uscc_but_not_numbers_in_integer_columns(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    firms = snapshots.scan(home, "SCZTDJ", columns=["统一社会信用代码"]).collect()

    def add_uscc(stage: Path, doc: dict[str, Any]) -> None:
        df = pl.read_parquet(stage / EXTRACT)
        df.with_columns(
            _cycle(firms["统一社会信用代码"], df.height).alias("单位代码")
        ).write_parquet(stage / EXTRACT)
        _parquet_only(doc)
        doc["outputs"][0]["columns"].append(
            {
                "name": "单位代码",
                "type": "String",
                "sources": ["SBCBJF.单位统一社会信用代码"],
                "operator": "keep",
                "params": {},
            }
        )

    a = assess(home, forge(home, releases[MED], "uscc", add_uscc))
    assert a.check("free_text_screening").status == "pass", a.check("free_text_screening").evidence

    def add_numbers(stage: Path, doc: dict[str, Any]) -> None:
        df = pl.read_parquet(stage / EXTRACT)
        phone = pl.when(pl.int_range(pl.len()) == 5).then(13812345678).otherwise(0)
        df.with_columns(phone.cast(pl.Int64).alias("编号")).write_parquet(stage / EXTRACT)
        _parquet_only(doc)
        doc["outputs"][0]["columns"].append(
            {"name": "编号", "type": "Int64", "sources": [], "operator": "keep", "params": {}}
        )

    a = assess(home, forge(home, releases[MED], "intphone", add_numbers))
    _fails(a, "free_text_screening", "extract.编号: 1 cell(s) hold CN_MOBILE")
