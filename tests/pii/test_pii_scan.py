"""Column-level detection: hard cases pinned, the JSON contract, files and encodings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from privacy.pii import validators as V
from privacy.pii.scan import scan_column, scan_frame, scan_path
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home
from synthetic_data.tricky import tricky_frame


def _ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        region = f"2108{rng.integers(2, 4):02d}"
        born = f"19{rng.integers(50, 99)}0{rng.integers(1, 9)}1{i % 9}"
        body = f"{region}{born}{i % 1000:03d}"
        out.append(body + V.resident_id_check_char_scalar(body))
    return out


def _entity(name: str, values: Sequence[object]) -> str | None:
    return scan_column(name, pl.Series(name, values)).entity


def test_eighteen_digit_order_numbers_with_failing_check_are_not_ids() -> None:
    ids = _ids(500)
    wrong = [v[:-1] + ("0" if v[-1] != "0" else "1") for v in ids]
    assert _entity("订单号", wrong) is None
    assert _entity("col_a", wrong) is None
    # The same bodies with correct check characters are IDs, with or without a header.
    assert _entity("col_a", ids) == "CN_RESIDENT_ID"


def test_serials_outside_mobile_ranges_and_barcodes_and_region_codes() -> None:
    df, _ = tricky_frame(600, seed=5)
    report = scan_frame(df.select("交易流水号", "商品条码", "行政区划代码", "批次号"))
    assert report.detected() == {}
    # 11 digits in a mobile range are mobiles even without a header.
    mobiles = [f"1{p}{i:08d}" for p in ("39", "58", "86", "99") for i in range(100)]
    assert _entity("col_b", mobiles) == "CN_MOBILE"
    unallocated = [f"1{p}{i:08d}" for p in ("40", "54", "61", "74") for i in range(100)]
    assert _entity("col_b", unallocated) is None


def test_dates_are_birth_dates_only_with_a_header() -> None:
    days = [dt.date(1960, 1, 1) + dt.timedelta(days=37 * i) for i in range(300)]
    assert _entity("交易日期", days) is None
    assert _entity("出生日期", days) == "DATE_OF_BIRTH"
    assert _entity("csrq", [d.strftime("%Y年%m月%d日") for d in days]) == "DATE_OF_BIRTH"
    assert _entity("办理日期", [d.isoformat() for d in days]) is None
    assert _entity("birth_date", [d.strftime("%Y%m%d") for d in days]) == "DATE_OF_BIRTH"


def test_company_names_and_categories_are_not_person_names() -> None:
    df, _ = tricky_frame(600, seed=6)
    report = scan_frame(df.select("企业名称", "职业", "医院名称", "诊断名称", "办理结果"))
    assert report.detected() == {}
    ethnic = ["汉族"] * 500 + ["满族"] * 80 + ["蒙古族"] * 20
    assert _entity("民族", ethnic) is None


def test_pinyin_and_english_headers_raise_confidence() -> None:
    df, truth = tricky_frame(600, seed=7)
    report = scan_frame(df.select("sfzh", "lxdh", "xm", "jzdz", "customer_name", "col_7"))
    found = report.by_column()
    for col in ("sfzh", "lxdh", "xm", "jzdz", "customer_name", "col_7"):
        assert found[col].entity == truth[col], found[col]
    assert "header 'sfzh' supports it" in found["sfzh"].evidence
    # Header support raises the score over the same values: 40% valid IDs decide a column
    # named sfzh but not one with a meaningless name.
    mixed = _ids(40) + ["待补录"] * 60
    with_header = scan_column("sfzh", pl.Series(mixed))
    without = scan_column("col_9", pl.Series(mixed))
    assert with_header.entity == "CN_RESIDENT_ID" and without.entity is None
    assert with_header.score > without.score


def test_negative_header_lowers_confidence_of_look_alike_codes() -> None:
    df, _ = tricky_frame(400, seed=8)
    codes = df["产品编号"].to_list()  # 'E' + 8 digits: passport-shaped
    assert _entity("产品编号", codes) is None
    assert _entity("hzhm", codes) == "CN_PASSPORT"


def test_free_text_with_identifiers_in_a_meaningful_share_is_flagged() -> None:
    plain = ["客户来电咨询社保缴费", "已电话回访", "材料已归档"] * 100
    with_phone = [f"请回电{13800000000 + i}，材料已归档" for i in range(45)]
    finding = scan_column("备注", pl.Series("备注", plain[: 300 - 45] + with_phone))
    assert finding.entity == "CN_MOBILE"
    assert finding.hit_rate == pytest.approx(45 / 300, abs=1e-3)
    assert "free text" in finding.evidence
    few = plain[:297] + with_phone[:3]  # 1%: not a meaningful share
    assert scan_column("备注", pl.Series("备注", few)).entity is None


def test_free_text_names_via_presidio_analyzer(home: Home) -> None:
    df, _ = tricky_frame(300, seed=9)
    finding = scan_column("情况说明", df["情况说明"])
    assert finding.entity == "PERSON_NAME"
    assert "mention a PERSON_NAME" in finding.evidence


def test_hit_rate_is_over_non_null_values() -> None:
    ids = _ids(200)
    values: list[str | None] = [*ids, *([None] * 600), *([""] * 100)]
    finding = scan_column("sfzh", pl.Series("sfzh", values))
    assert finding.entity == "CN_RESIDENT_ID"
    assert finding.hit_rate == pytest.approx(1.0)
    half = [*ids[:100], *(["无"] * 100)]
    assert scan_column("sfzh", pl.Series("sfzh", half)).hit_rate == pytest.approx(0.5)


def test_mobile_formats_and_landlines() -> None:
    mobiles = ["+86 138 1234 5678", "139-1234-5678", "8615912345678", "18612345678"] * 50
    assert _entity("phone", mobiles) == "CN_MOBILE"
    landlines = ["0417-2812345", "(024)23456789", "010-12345678-123", "0411-88776655"] * 50
    assert _entity("办公电话", landlines) == "CN_PHONE"


def test_contract_json_and_lazy_input(home: Home) -> None:
    df, truth = tricky_frame(300, seed=10)
    report = scan_frame(df.lazy(), sample=200, seed=3)
    doc = report.to_json()
    assert list(doc) == ["columns"]
    assert [c["column"] for c in doc["columns"]] == df.columns
    for c in doc["columns"]:
        assert set(c) == {"column", "entity", "score", "hit_rate", "evidence"}
        assert 0.0 <= c["score"] <= 1.0 and 0.0 <= c["hit_rate"] <= 1.0
        assert isinstance(c["evidence"], str) and c["evidence"]
        assert c["entity"] == truth[c["column"]]
    # Deterministic for a seed (sampling included: a sample smaller than the column).
    few = ["sfzh", "xm", "订单号", "备注"]
    again = scan_frame(df.lazy().select(few), sample=100, seed=3).to_json()["columns"]
    assert again == scan_frame(df.lazy().select(few), sample=100, seed=3).to_json()["columns"]


def test_large_lazy_input_is_sampled(tmp_path: Path) -> None:
    ids = _ids(1000)
    frame = pl.DataFrame({"sfzh": ids * 60, "n": list(range(60_000))})
    path = tmp_path / "big.parquet"
    frame.write_parquet(path)
    report = scan_frame(pl.scan_parquet(path), sample=500)
    assert report.total_rows == 60_000
    assert report.sampled_rows <= 4 * 500 + 1
    assert report.by_column()["sfzh"].entity == "CN_RESIDENT_ID"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_scan_path_csv_encodings(home: Home, tmp_path: Path, encoding: str) -> None:
    df, truth = tricky_frame(200, seed=11)
    cols = ["sfzh", "xm", "jzdz", "企业名称", "订单号"]
    text = df.select(cols).write_csv()
    path = tmp_path / f"t-{encoding}.csv"
    path.write_bytes(text.encode(encoding))
    report = scan_path(path, sample=200)
    assert {c.column: c.entity for c in report.columns} == {c: truth[c] for c in cols}


def test_scan_path_parquet_and_errors(home: Home, tmp_path: Path) -> None:
    df, truth = tricky_frame(200, seed=12)
    good = tmp_path / "t.parquet"
    df.select("lxdh", "商品条码").write_parquet(good)
    assert scan_path(good).detected() == {"lxdh": truth["lxdh"]}

    corrupt = tmp_path / "broken.parquet"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ShuyuError, match=r"broken\.parquet"):
        scan_path(corrupt)

    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"name\n\xff\xfe\xfa\x81\x00\x80\xff\n")
    with pytest.raises(ShuyuError, match="GB18030"):
        scan_path(latin)

    with pytest.raises(ShuyuError):
        scan_path(tmp_path / "missing.csv")
    with pytest.raises(ShuyuError):
        scan_frame(df, sample=0)


def test_non_text_columns_are_reported_not_scanned() -> None:
    report = scan_frame(
        pl.DataFrame({"金额": [1.5, 2.5], "flag": [True, False], "tags": [["a"], ["b"]]})
    )
    for c in report.columns:
        assert c.entity is None and c.evidence


def test_whole_number_floats_are_read_as_integers() -> None:
    """Spreadsheet exports store phone numbers as floats; amounts stay unscanned."""
    mobiles = pl.Series("联系电话", [float(13812340000 + 7 * i) for i in range(300)] + [None])
    finding = scan_column("联系电话", mobiles)
    assert finding.entity == "CN_MOBILE" and finding.hit_rate == pytest.approx(1.0)
    amounts = pl.Series("金额", [float(i) + 0.5 for i in range(300)])
    assert scan_column("金额", amounts).entity is None
    small = pl.Series("件数", [float(i) for i in range(300)])
    assert "not scanned" in scan_column("件数", small).evidence
