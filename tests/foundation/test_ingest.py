"""Ingestion: encodings, schema refusal with nothing written, atomic snapshots, audit."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select

from governance.audit import audit_log
from pipelines import ingest
from pipelines.ingest import ingest_path
from shuyu_core import snapshots
from shuyu_core.errors import NotFoundError, ValidationError
from shuyu_core.home import Home, state_engine


def _population() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "公民身份号码": ["11010519491231002X", "210802199001011234"],
            "姓名": ["张三", "李四"],
            "性别": ["女", "男"],
            "出生日期": ["1949-12-31", "1990-01-01"],
            "民族": ["汉族", "满族"],
            "户籍地址": ["辽宁省营口市站前区建设街道1号", "辽宁省营口市西市区渔市街道2号"],
            "现住址": [None, "辽宁省营口市西市区渔市街道2号"],
            "联系电话": ["13800001111", "13900002222"],
            "户籍区划代码": ["210802", "210803"],
            "登记日期": ["2000-01-01", "2001-02-03"],
            "更新日期": ["2026-01-01", "2026-02-01"],
        }
    )


def _audit(home: Home) -> list[tuple[str, str, str]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.object, audit_log.c.outcome).order_by(
                audit_log.c.seq
            )
        ).all()
    return [tuple(r) for r in rows]


def _no_snapshots(home: Home, code: str) -> bool:
    base = home.raw / code
    return not base.exists() or not any(base.iterdir())


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_csv_encodings_round_trip(home: Home, tmp_path: Path, encoding: str) -> None:
    df = _population()
    src = tmp_path / "export.csv"
    src.write_bytes(df.write_csv().encode(encoding))
    m = ingest_path(home, "RKJBXX", src)
    assert m.rows == 2
    assert m.source_encoding == encoding
    back = snapshots.scan(home, "RKJBXX").collect()
    assert back["姓名"].to_list() == ["张三", "李四"]
    assert back["出生日期"].to_list() == [dt.date(1949, 12, 31), dt.date(1990, 1, 1)]
    assert back.schema["出生日期"] == pl.Date
    assert back["公民身份号码"][0].endswith("X")
    assert ("ingest", f"RKJBXX/{m.snapshot_id}", "ok") in _audit(home)


def test_parquet_directory_of_parts(home: Home, tmp_path: Path) -> None:
    df = _population().with_columns(pl.col("出生日期", "登记日期", "更新日期").str.to_date())
    parts = tmp_path / "parts"
    parts.mkdir()
    df.head(1).write_parquet(parts / "part-0.parquet")
    df.tail(1).write_parquet(parts / "part-1.parquet")
    m = ingest_path(home, "RKJBXX", parts)
    assert m.rows == 2 and m.source_format == "parquet"
    assert len(m.sm3) == 64


def test_missing_optional_field_becomes_null_and_is_recorded(home: Home, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    _population().drop("现住址").write_csv(src)
    m = ingest_path(home, "RKJBXX", src)
    assert m.absent_fields == ["现住址"]
    assert snapshots.scan(home, "RKJBXX").collect()["现住址"].null_count() == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda df: df.drop("姓名"), "required field(s) of RKJBXX missing: 姓名"),
        (
            lambda df: df.with_columns(pl.lit("x").alias("备注")),
            "not in the catalog entry RKJBXX: 备注",
        ),
        (
            lambda df: df.with_columns(pl.lit("2020-13-45").alias("登记日期")),
            "field 登记日期 of RKJBXX has 2 value(s) that are not a valid date",
        ),
    ],
)
def test_schema_mismatch_is_refused_and_nothing_written(
    home: Home,
    tmp_path: Path,
    change,
    expected: str,  # type: ignore[no-untyped-def]
) -> None:
    src = tmp_path / "export.csv"
    change(_population()).write_csv(src)
    with pytest.raises(ValidationError) as err:
        ingest_path(home, "RKJBXX", src)
    assert expected in err.value.one_line()
    assert err.value.audited
    assert _no_snapshots(home, "RKJBXX")
    assert _audit(home)[-1][::2] == ("ingest", "refused")
    assert not any(home.tmp.iterdir())


def test_personal_values_are_masked_in_cast_errors(home: Home, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    _population().with_columns(pl.lit("1990-02-30").alias("出生日期")).write_csv(src)
    with pytest.raises(ValidationError) as err:
        ingest_path(home, "RKJBXX", src)
    assert "1990-02-30" not in err.value.one_line()
    assert "'1*********'" in err.value.one_line()


def test_wrong_encoding_is_refused(home: Home, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    src.write_bytes(_population().write_csv().encode("utf-16"))
    with pytest.raises(ValidationError, match="not UTF-8, UTF-8 with BOM, or GB18030"):
        ingest_path(home, "RKJBXX", src)
    assert _no_snapshots(home, "RKJBXX")


def test_corrupt_parquet_is_refused(home: Home, tmp_path: Path) -> None:
    src = tmp_path / "export.parquet"
    good = tmp_path / "good.parquet"
    _population().write_parquet(good)
    src.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValidationError, match="cannot be read as parquet"):
        ingest_path(home, "RKJBXX", src)
    assert _no_snapshots(home, "RKJBXX")


def test_unknown_resource_and_missing_file(home: Home, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown resource 'NOPE'"):
        ingest_path(home, "NOPE", tmp_path / "x.csv")
    with pytest.raises(NotFoundError, match="does not exist"):
        ingest_path(home, "RKJBXX", tmp_path / "missing.csv")


def _crashing_ingest(root: str, src: str) -> None:
    os.environ["SHUYU_HOME"] = root

    def die(_stage: Path, _manifest: snapshots.Manifest) -> None:
        os._exit(17)  # a hard crash: no exception handler, no cleanup runs

    ingest._finalize = die  # type: ignore[assignment]
    ingest_path(Home.from_env(), "RKJBXX", Path(src))


def test_crash_mid_ingest_leaves_no_snapshot(home: Home, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    _population().write_csv(src)
    proc = multiprocessing.get_context("spawn").Process(
        target=_crashing_ingest, args=(str(home.root), str(src))
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == 17
    assert _no_snapshots(home, "RKJBXX")
    with pytest.raises(NotFoundError):
        snapshots.latest(home, "RKJBXX")
    # The next ingest succeeds and is the only snapshot.
    m = ingest_path(home, "RKJBXX", src)
    assert [s.snapshot_id for s in snapshots.list_snapshots(home, "RKJBXX")] == [m.snapshot_id]


def test_snapshots_are_time_ordered_and_projection_limits_columns(
    home: Home, tmp_path: Path
) -> None:
    src = tmp_path / "export.csv"
    _population().write_csv(src)
    first = ingest_path(home, "RKJBXX", src)
    second = ingest_path(home, "RKJBXX", src)
    assert snapshots.latest(home, "RKJBXX").snapshot_id == second.snapshot_id > first.snapshot_id
    assert first.sm3 == second.sm3
    lf = snapshots.scan(home, "RKJBXX", columns=["性别"])
    assert lf.collect_schema().names() == ["性别"]
    with pytest.raises(NotFoundError, match="no field"):
        snapshots.scan(home, "RKJBXX", columns=["工资"])
