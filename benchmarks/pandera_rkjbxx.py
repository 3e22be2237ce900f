"""The RKJBXX quality rules written for pandera's polars backend, for bench_quality.py.

What a pandera user would write for the same catalog rules (catalogs/resources/RKJBXX.yaml):
required fields not nullable (blank strings count as missing, as in Shuyu), the two regex
patterns, the GB 11643 check digit as a custom vectorized check (pure polars arithmetic,
``quality.validators.resident_id_valid``), the two code lists and the allowed sexes with
``isin``, dates not in the future and not stale, birth date and sex against the ID number
(dataframe checks), the ID unique and no whole-record duplicates (``Config.unique``).
Validation is ``lazy=True`` (every failure collected, like ``shuyu quality check``) on an
in-memory DataFrame: pandera runs data-level checks only on materialized frames.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandera.polars as pa
import polars as pl

from catalogs import codelists
from quality.validators import id_number, resident_id_valid

ID = "公民身份号码"
ID_PATTERN = r"^\d{17}[\dX]$"
MOBILE = r"^1[3-9]\d{9}$"
FIELDS = [
    ID,
    "姓名",
    "性别",
    "出生日期",
    "民族",
    "户籍地址",
    "现住址",
    "联系电话",
    "户籍区划代码",
    "登记日期",
    "更新日期",
]


def schema(as_of: dt.date) -> type[pa.DataFrameModel]:
    """The model for checks made on ``as_of`` (future and stale dates depend on it)."""
    ethnic = sorted(codelists.load("ethnic_gb3304"))
    regions = sorted(codelists.load("gbt2260"))
    cutoff = as_of - dt.timedelta(days=1825)

    def not_blank() -> Any:
        return pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).str.strip_chars() != ""))

    def well_formed_id() -> pl.Expr:
        s = pl.col(ID)
        return s.str.contains(ID_PATTERN) & resident_id_valid(s).fill_null(False)

    class RKJBXX(pa.DataFrameModel):
        公民身份号码: str = pa.Field(nullable=False, unique=True, str_matches=ID_PATTERN)
        姓名: str = pa.Field(nullable=False)
        性别: str = pa.Field(nullable=False, isin=["男", "女"])
        出生日期: dt.date = pa.Field(nullable=False, le=as_of)
        民族: str = pa.Field(nullable=False, isin=ethnic)
        户籍地址: str = pa.Field(nullable=True)
        现住址: str = pa.Field(nullable=True)
        联系电话: str = pa.Field(nullable=True, str_matches=MOBILE)
        户籍区划代码: str = pa.Field(nullable=False, isin=regions)
        登记日期: dt.date = pa.Field(nullable=False, le=as_of)
        更新日期: dt.date = pa.Field(nullable=False, le=as_of, ge=cutoff)

        class Config:
            unique = FIELDS  # no whole-record duplicates

        @pa.check(ID, "姓名", "性别", "民族", "户籍区划代码", name="not_blank")
        def _present(cls, data: pa.PolarsData) -> pl.LazyFrame:
            return data.lazyframe.select(pl.col(data.key).str.strip_chars() != "")

        @pa.check(ID, name="gb11643_check_digit")
        def _check_digit(cls, data: pa.PolarsData) -> pl.LazyFrame:
            s = pl.col(data.key)
            # judged on values of the right shape only, like the catalog's layered rules
            return data.lazyframe.select(
                ~s.str.contains(ID_PATTERN) | resident_id_valid(s).fill_null(True)
            )

        @pa.dataframe_check(name="birth_date_matches_id")
        def _birth(cls, data: pa.PolarsData) -> pl.LazyFrame:
            b = pl.col("出生日期")
            ymd = (
                b.dt.year().cast(pl.Int64) * 10_000
                + b.dt.month().cast(pl.Int64) * 100
                + b.dt.day().cast(pl.Int64)
            )
            n = id_number(pl.col(ID))
            ok = ~well_formed_id() | (ymd == (n // 1000) % 100_000_000)
            return data.lazyframe.select(ok.fill_null(True))

        @pa.dataframe_check(name="sex_matches_id")
        def _sex(cls, data: pa.PolarsData) -> pl.LazyFrame:
            parity = id_number(pl.col(ID)) % 2
            sex = pl.col("性别")
            ok = (
                ~well_formed_id()
                | ((sex == "男") & (parity == 1))
                | ((sex == "女") & (parity == 0))
                | ~sex.is_in(["男", "女"])
            )
            return data.lazyframe.select(ok.fill_null(True))

    return RKJBXX


def validate(files: list[str], as_of: dt.date) -> dict[str, int]:
    """Read the snapshot and validate it; failure cases counted per check."""
    frame = pl.read_parquet(files, columns=FIELDS)
    model = schema(as_of)
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        counts = cases.group_by("check").agg(pl.len()).sort("check")
        return {str(c): int(n) for c, n in counts.iter_rows()}
    return {}
