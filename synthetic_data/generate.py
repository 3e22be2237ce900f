"""Four linked synthetic public datasets of the demo city 营口市 (Yingkou), with injected
quality defects and their ground truth.

- RKJBXX 人口基本信息: one row per person.
- SCZTDJ 市场主体登记信息: about one enterprise per ten persons; legal representatives are
  drawn from the population.
- SBCBJF 社会保险参保缴费信息: one row per insured person and month (about ten rows per
  person over the whole population); employers are enterprises of SCZTDJ.
- YBJS 医疗保障结算信息: one row per visit.

Generation runs in chunks of persons (``PERSONS_PER_CHUNK``). A chunk is a self-contained
slice of the city: its enterprises, contributions and visits reference only persons and
enterprises of the same chunk, so references stay consistent while memory stays bounded,
and each chunk draws from its own numpy stream, so the output depends only on
(seed, persons, defect_rate, as_of). ID numbers are unique across chunks by construction
(each chunk owns a residue class of the 3-digit sequence number), credit codes and
settlement numbers by an affine bijection of a global index.

Defects (see ``synthetic_data.defects``) are only placed where they cannot make a clean row
of another dataset fail: persons and enterprises that carry a defect, or whose key is
duplicated, are never referenced by another dataset.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from catalogs import codelists
from shuyu_core import atomic
from shuyu_core.errors import ValidationError
from synthetic_data import ids
from synthetic_data import pools as P
from synthetic_data.defects import (
    CLEAN_UPDATE_WINDOW_DAYS,
    FUTURE_MAX_DAYS,
    FUTURE_MIN_DAYS,
    MAX_AGE_DAYS,
    SPECS,
    STALE_EXTRA_MAX_DAYS,
    STALE_EXTRA_MIN_DAYS,
    Picked,
    pick,
)

CODES = ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS")
PERSONS_PER_CHUNK = 250_000
MAX_PERSONS = 100_000_000
MAX_DEFECT_RATE = 0.5
Format = Literal["parquet", "csv-gb18030"]
Progress = Callable[[int, int], None]

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "RKJBXX": {
        "公民身份号码": pl.String(),
        "姓名": pl.String(),
        "性别": pl.String(),
        "出生日期": pl.Date(),
        "民族": pl.String(),
        "户籍地址": pl.String(),
        "现住址": pl.String(),
        "联系电话": pl.String(),
        "户籍区划代码": pl.String(),
        "登记日期": pl.Date(),
        "更新日期": pl.Date(),
    },
    "SCZTDJ": {
        "统一社会信用代码": pl.String(),
        "企业名称": pl.String(),
        "法定代表人": pl.String(),
        "法定代表人证件号码": pl.String(),
        "注册资本": pl.Float64(),
        "成立日期": pl.Date(),
        "注销日期": pl.Date(),
        "行业代码": pl.String(),
        "登记状态": pl.String(),
        "住所": pl.String(),
        "区划代码": pl.String(),
        "更新日期": pl.Date(),
    },
    "SBCBJF": {
        "公民身份号码": pl.String(),
        "单位统一社会信用代码": pl.String(),
        "缴费月份": pl.String(),
        "险种": pl.String(),
        "缴费基数": pl.Float64(),
        "缴费金额": pl.Float64(),
        "参保状态": pl.String(),
        "更新日期": pl.Date(),
    },
    "YBJS": {
        "结算单号": pl.String(),
        "公民身份号码": pl.String(),
        "姓名": pl.String(),
        "就诊日期": pl.Date(),
        "医疗机构代码": pl.String(),
        "医疗机构名称": pl.String(),
        "诊断编码": pl.String(),
        "诊断名称": pl.String(),
        "医疗总费用": pl.Float64(),
        "统筹支付金额": pl.Float64(),
        "个人自付金额": pl.Float64(),
        "更新日期": pl.Date(),
    },
}

_EPOCH = dt.date(1970, 1, 1)
_DAY_1985 = (dt.date(1985, 1, 1) - _EPOCH).days
_MONTH_2000 = 2000 * 12
_SEQ_VALUES = 500  # 3-digit sequence numbers per sex: 000-999, parity = sex
# Multipliers coprime to 10: affine maps x -> (a x + b) mod 10^k are bijections.
_ORG_MULT = 73_939_133
_SETTLE_MULT = 48_271_093
_ROWS_PER_CHUNK_LIMIT = 100_000_000  # settlement index space per chunk

# Stream identifiers inside a chunk.
_S_PEOPLE, _S_ENTERPRISE, _S_INSURANCE, _S_VISITS, _S_DEFECTS = range(5)


# -- small helpers ----------------------------------------------------------------------------


def _rng(seed: int, chunk: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk, stream)))


def _days(d: dt.date) -> int:
    return (d - _EPOCH).days


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d64 = days.astype("datetime64[D]")
    months = d64.astype("datetime64[M]")
    mi = months.astype(np.int64)
    day = (d64 - months.astype("datetime64[D]")).astype(np.int64) + 1
    return mi // 12 + 1970, mi % 12 + 1, day


def _month_index(days: np.ndarray) -> np.ndarray:
    """Months since year 0 (year * 12 + month - 1)."""
    return np.asarray(days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)) + (
        1970 * 12
    )


def _month_first_day(mi: np.ndarray) -> np.ndarray:
    return (mi - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _date_series(days: np.ndarray) -> pl.Series:
    return pl.Series(days.astype(np.int32)).cast(pl.Date)


def _gather(values: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(idx.astype(np.int64))


def _choice(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    p = weights / weights.sum()
    return rng.choice(len(p), size=n, p=p)


def _stale(rng: np.random.Generator, as_of: int, n: int) -> np.ndarray:
    return as_of - MAX_AGE_DAYS - rng.integers(STALE_EXTRA_MIN_DAYS, STALE_EXTRA_MAX_DAYS + 1, n)


def _future(rng: np.random.Generator, as_of: int, n: int) -> np.ndarray:
    return as_of + rng.integers(FUTURE_MIN_DAYS, FUTURE_MAX_DAYS + 1, n)


def _recent(rng: np.random.Generator, as_of: int, n: int) -> np.ndarray:
    return as_of - rng.integers(0, CLEAN_UPDATE_WINDOW_DAYS, n)


def _scatter(s: pl.Series, idx: np.ndarray, values: pl.Series | list[object] | None) -> pl.Series:
    if len(idx) == 0:
        return s
    if values is None:
        values = pl.Series([None] * len(idx), dtype=s.dtype)
    # Series.scatter works in place; callers keep using the original.
    return s.clone().scatter(idx.astype(np.int64), values)


def _int_str(values: np.ndarray, width: int = 0) -> pl.Series:
    s = pl.Series(values.astype(np.int64)).cast(pl.String)
    return s.str.zfill(width) if width else s


def _district_tables() -> tuple[list[str], list[str], np.ndarray, list[str], np.ndarray]:
    districts = codelists.load("yingkou_districts")
    codes = list(P.DISTRICT_WEIGHTS)
    names = [districts[c] for c in codes]
    weights = np.array([P.DISTRICT_WEIGHTS[c] for c in codes])
    streets: list[str] = []
    offsets = []
    for c in codes:
        offsets.append((len(streets), len(P.YINGKOU_STREETS[c])))
        streets.extend(P.YINGKOU_STREETS[c])
    return codes, names, weights, streets, np.array(offsets, dtype=np.int64)


def _addresses(rng: np.random.Generator, district: np.ndarray, detailed: bool) -> pl.Series:
    """Street addresses in the given district indices, e.g.
    辽宁省营口市站前区渤海大街112号金海小区3号楼2单元502室."""
    n = len(district)
    _codes, names, _w, streets, offsets = _district_tables()
    street = offsets[district, 0] + (rng.random(n) * offsets[district, 1]).astype(np.int64)
    frame = pl.DataFrame(
        {
            "d": _gather(names, district),
            "s": _gather(streets, street),
            "no": _int_str(rng.integers(1, 400, n)),
        }
    )
    parts: list[pl.Expr] = [pl.lit("辽宁省营口市"), pl.col("d"), pl.col("s"), pl.col("no")]
    parts.append(pl.lit("号"))
    if detailed:
        estates = P.pools().estates
        frame = frame.with_columns(
            e=_gather(estates, rng.integers(0, len(estates), n)),
            b=_int_str(rng.integers(1, 40, n)),
            u=_int_str(rng.integers(1, 7, n)),
            r=_int_str(rng.integers(1, 19, n) * 100 + rng.integers(1, 5, n)),
        )
        parts += [pl.col("e"), pl.col("b"), pl.lit("号楼"), pl.col("u"), pl.lit("单元")]
        parts += [pl.col("r"), pl.lit("室")]
    return frame.select(pl.concat_str(parts).alias("a")).to_series()


def _names(rng: np.random.Generator, male: np.ndarray) -> pl.Series:
    pools = P.pools()
    n = len(male)
    surname = rng.choice(len(pools.surnames), size=n, p=pools.surname_p)
    gm, gf = len(pools.given_male), len(pools.given_female)
    given = np.where(male, rng.integers(0, gm, n), gm + rng.integers(0, gf, n))
    frame = pl.DataFrame(
        {
            "s": _gather(pools.surnames, surname),
            "g": _gather(pools.given_male + pools.given_female, given),
        }
    )
    return frame.select(pl.concat_str([pl.col("s"), pl.col("g")])).to_series()


def _phones(rng: np.random.Generator, n: int) -> pl.Series:
    frame = pl.DataFrame(
        {
            "p": _gather(P.MOBILE_PREFIXES, rng.integers(0, len(P.MOBILE_PREFIXES), n)),
            "n": _int_str(rng.integers(0, 100_000_000, n), 8),
        }
    )
    phone = frame.select(pl.concat_str([pl.col("p"), pl.col("n")])).to_series()
    missing = np.flatnonzero(rng.random(n) < 0.03)
    return _scatter(phone, missing, None)


# -- per-chunk data ---------------------------------------------------------------------------


@dataclass
class _Ctx:
    seed: int
    rate: float
    as_of: int  # days since epoch
    n_chunks: int
    seq_perm: np.ndarray
    settle_offset: int
    org_offset: int


@dataclass
class _People:
    ids: pl.Series
    names: pl.Series
    birth: np.ndarray
    male: np.ndarray
    age: np.ndarray
    usable: np.ndarray  # clean and never touched by a defect: safe to reference


@dataclass
class _Employers:
    uscc: pl.Series
    est_month: np.ndarray
    weight: np.ndarray


@dataclass
class _ChunkOut:
    frames: dict[str, pl.DataFrame]
    detail: dict[str, dict[str, np.ndarray]]  # local row positions of defects


def _detail(picked: Picked, dup_start: int) -> dict[str, np.ndarray]:
    """Row positions carrying each defect; duplicates are the appended rows."""
    out = {k: v for k, v in picked.rows.items() if k != "duplicate_key"}
    if "duplicate_key" in picked.rows:
        n = len(picked.rows["duplicate_key"])
        out["duplicate_key"] = np.arange(dup_start, dup_start + n, dtype=np.int64)
    return out


def _assign_sequence(
    ctx: _Ctx, chunk: int, rng: np.random.Generator, region: np.ndarray, birth: np.ndarray,
    male: np.ndarray, category: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Give each person a sequence number unique within (birth place, birth date, sex).

    Chunk c may only use sequence slots s with s % n_chunks == c, so numbers never collide
    across chunks. Persons beyond a cell's capacity get another birth place (and, if that
    keeps failing, one elsewhere in China, then an earlier birth date)."""
    capacity = max(1, (_SEQ_VALUES - chunk + ctx.n_chunks - 1) // ctx.n_chunks)
    bp = P.birth_places()
    for attempt in range(64):
        key = (region * 200_000 + (birth + 100_000)) * 2 + male.astype(np.int64)
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.r_[True, sk[1:] != sk[:-1]]
        group_start = np.maximum.accumulate(np.where(starts, np.arange(len(sk)), 0))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(sk)) - group_start
        over = np.flatnonzero(rank >= capacity)
        if len(over) == 0:
            slot = rank * ctx.n_chunks + chunk
            return region, birth, ctx.seq_perm[slot]
        if attempt >= 48:
            birth[over] -= 1
        year = _ymd(birth[over])[0] - P.FIRST_YEAR
        # Crowded Yingkou cells (very large populations): fall back to a birth place
        # anywhere in China, where thousands of codes leave ample room.
        cat = category[over] if attempt < 8 else np.full(len(over), 3)
        pos = bp.offsets[cat, year] + (rng.random(len(over)) * bp.lengths[cat, year]).astype(
            np.int64
        )
        region[over] = bp.codes[pos]
    raise RuntimeError("could not assign unique ID sequence numbers")  # pragma: no cover


def _population(ctx: _Ctx, chunk: int, n: int) -> tuple[pl.DataFrame, _People, dict]:
    rng = _rng(ctx.seed, chunk, _S_PEOPLE)
    as_of = ctx.as_of
    band = _choice(rng, P.AGE_BAND_WEIGHTS, n)
    age = np.minimum(band * 5 + rng.integers(0, 5, n), 100)
    birth = as_of - np.floor((age + rng.random(n)) * 365.2425).astype(np.int64)
    male = rng.random(n) < 0.497
    bp = P.birth_places()
    category = _choice(rng, P.BIRTHPLACE_SHARES, n)
    year = _ymd(birth)[0] - P.FIRST_YEAR
    pos = bp.offsets[category, year] + (rng.random(n) * bp.lengths[category, year]).astype(np.int64)
    region = bp.codes[pos]
    region, birth, seq_value = _assign_sequence(ctx, chunk, rng, region, birth, male, category)
    y, m, d = _ymd(birth)
    age = ((as_of - birth) / 365.2425).astype(np.int64)
    body = region * 10**11 + (y * 10_000 + m * 100 + d) * 1000 + seq_value * 2 + male
    check = ids.ric_check_index(body)

    d_codes, _dn, d_weights, _s, _o = _district_tables()
    hukou = _choice(rng, d_weights, n)
    ethnic_names = list(P.ETHNIC_WEIGHTS)
    ethnic = _choice(rng, np.array(list(P.ETHNIC_WEIGHTS.values())), n)
    registered = np.where(
        birth >= _DAY_1985,
        birth + rng.integers(0, 90, n),
        np.maximum(birth, _DAY_1985 + rng.integers(0, 6 * 365, n)),
    )
    registered = np.minimum(registered, as_of)
    updated = np.maximum(_recent(rng, as_of, n), registered)

    picked = pick(_rng(ctx.seed, chunk, _S_DEFECTS), "RKJBXX", n, ctx.rate)
    rows = picked.rows
    ids_clean = ids.ric_strings(body, check)
    bad = rows["bad_check_digit"]
    check_out = check.copy()
    check_out[bad] = (check[bad] + rng.integers(1, 11, len(bad))) % 11
    birth_out = birth.copy()
    # Shift into the past only, so the date stays valid and not in the future.
    shifted = rows["birth_inconsistent"]
    birth_out[shifted] = birth[shifted] - rng.integers(1, 3650, len(shifted))
    registered_out = registered.copy()
    registered_out[rows["future_date"]] = _future(rng, as_of, len(rows["future_date"]))
    updated_out = updated.copy()
    updated_out[rows["stale_record"]] = _stale(rng, as_of, len(rows["stale_record"]))

    names = _names(rng, male)
    address = _addresses(rng, hukou, detailed=True)
    moved = np.flatnonzero(rng.random(n) < 0.18)
    current = _scatter(address, moved, _addresses(rng, _choice(rng, d_weights, len(moved)), True))
    ethnic_s = _gather(ethnic_names, ethnic)
    unk = rows["unknown_code"]
    ethnic_s = _scatter(ethnic_s, unk, _gather(P.BAD_ETHNIC, rng.integers(0, 5, len(unk))))

    frame = pl.DataFrame(
        {
            "公民身份号码": ids.ric_strings(body, check_out) if len(bad) else ids_clean,
            "姓名": _scatter(names, rows["null_required"], None),
            "性别": pl.Series(np.where(male, "男", "女"), dtype=pl.String),
            "出生日期": _date_series(birth_out),
            "民族": ethnic_s,
            "户籍地址": address,
            "现住址": current,
            "联系电话": _phones(rng, n),
            "户籍区划代码": _gather(d_codes, hukou),
            "登记日期": _date_series(registered_out),
            "更新日期": _date_series(updated_out),
        }
    )
    # Duplicates: the same ID number with a different name, address, phone and dates, as
    # when two registrations of one person were never merged.
    orig = rows["duplicate_key"]
    k = len(orig)
    if k:
        reg2 = np.minimum(
            np.maximum(registered[orig] + rng.integers(1, 3650, k), birth[orig]), as_of
        )
        dups = frame[orig].with_columns(
            姓名=_names(rng, male[orig]),
            户籍地址=_addresses(rng, hukou[orig], detailed=True),
            现住址=_addresses(rng, _choice(rng, d_weights, k), detailed=True),
            联系电话=_phones(rng, k),
            登记日期=_date_series(reg2),
            更新日期=_date_series(np.maximum(_recent(rng, as_of, k), reg2)),
        )
        frame = pl.concat([frame, dups])
    usable = np.ones(n, dtype=bool)
    usable[picked.reserved()] = False
    people = _People(ids_clean, names, birth, male, age, usable)
    return frame, people, _detail(picked, n)


def _enterprises(ctx: _Ctx, chunk: int, n_e: int, ent_offset: int, people: _People) -> tuple[
    pl.DataFrame, _Employers, dict
]:  # fmt: skip
    rng = _rng(ctx.seed, chunk, _S_ENTERPRISE)
    as_of = ctx.as_of
    adults = np.flatnonzero(people.usable & (people.age >= 22) & (people.age <= 80))
    if len(adults) == 0:
        adults = np.flatnonzero(people.usable)
    if len(adults) == 0:
        n_e = 0
    rep = adults[rng.integers(0, len(adults), n_e)] if n_e else np.zeros(0, np.int64)
    etype = 1 + _choice(rng, np.array([0.78, 0.19, 0.03]), n_e)
    d_codes, d_names, d_weights, _s, _o = _district_tables()
    district = _choice(rng, d_weights, n_e)
    region = np.array([int(c) for c in d_codes], dtype=np.int64)[district]
    g = ent_offset + np.arange(n_e, dtype=np.int64)
    org_body = (g * _ORG_MULT + ctx.org_offset) % 100_000_000
    prefix = 9 * 10**15 + etype * 10**14 + region * 10**8 + org_body
    org, check = ids.uscc_parts(prefix)

    # Industry: section by weight (co-operatives are agricultural), then a division.
    industry = codelists.load("gbt4754")
    sections = list(P.SECTION_WEIGHTS)
    by_section = {s: sorted(c for c in industry if c.startswith(s)) for s in sections}
    sec = _choice(rng, np.array(list(P.SECTION_WEIGHTS.values())), n_e)
    sec = np.where(etype == 3, sections.index("A"), sec)
    div_codes: list[str] = []
    div_off = []
    words: list[str] = []
    word_off = []
    for s in sections:
        div_off.append((len(div_codes), len(by_section[s])))
        div_codes.extend(by_section[s])
        word_off.append((len(words), len(P.SECTION_WORDS[s])))
        words.extend(P.SECTION_WORDS[s])
    do, wo = np.array(div_off), np.array(word_off)
    div = do[sec, 0] + (rng.random(n_e) * do[sec, 1]).astype(np.int64)
    word = wo[sec, 0] + (rng.random(n_e) * wo[sec, 1]).astype(np.int64)

    trade = P.pools().trade_names
    parts = pl.DataFrame(
        {
            "t": pl.Series(etype, dtype=pl.Int64),
            "d": _gather(d_names, district),
            "z": _gather(trade, rng.integers(0, len(trade), n_e)),
            "z2": _gather(trade, rng.integers(0, len(trade), n_e)),
            "w": _gather(words, word),
            "c": _gather(P.COMPANY_SUFFIXES, _choice(rng, np.array([0.55, 0.4, 0.05]), n_e)),
            "s": _gather(P.SOLE_TRADER_SUFFIXES, rng.integers(0, 7, n_e)),
            "p": _gather(["营口", "营口市"], rng.integers(0, 2, n_e)),
        }
    )

    def _name(z: str) -> pl.Expr:
        return (
            pl.when(pl.col("t") == 1)
            .then(pl.concat_str("p", z, "w", "c"))
            .when(pl.col("t") == 2)
            .then(pl.concat_str("d", z, "s"))
            .otherwise(pl.concat_str("d", z, "w", pl.lit("专业合作社")))
        )

    name = parts.select(_name("z")).to_series()
    # A second trade name for duplicate registrations of the same code.
    other_name = parts.select(_name("z2")).to_series()

    mu = np.array([0.0, math.log(100), math.log(5), math.log(50)])[etype]
    capital = np.round(np.clip(rng.lognormal(mu, 1.3), 0.1, 900_000), 2)
    age_y = np.minimum(rng.exponential(8.0, n_e), 40.0)
    est = np.maximum(as_of - np.floor(age_y * 365.25).astype(np.int64) - rng.integers(0, 30, n_e),
                     _days(dt.date(1980, 1, 1)))  # fmt: skip
    est = np.minimum(est, as_of)
    statuses = ["存续", "在业", "注销", "吊销", "迁出"]
    status = _choice(rng, np.array([0.70, 0.14, 0.11, 0.04, 0.01]), n_e)
    closed = status == 2
    dereg = est + np.floor(rng.random(n_e) * (as_of - est + 1)).astype(np.int64)
    updated = np.maximum(_recent(rng, as_of, n_e), np.where(closed, dereg, est))

    picked = pick(_rng(ctx.seed, chunk, _S_DEFECTS + 1), "SCZTDJ", n_e, ctx.rate)
    rows = picked.rows
    check_out = check.copy()
    bad = rows["bad_check_digit"]
    check_out[bad] = (check[bad] + rng.integers(1, 31, len(bad))) % 31
    capital_out = capital.copy()
    oor = rows["out_of_range"]
    neg = rng.random(len(oor)) < 0.5
    capital_out[oor] = np.where(neg, -capital[oor] - 1.0, 1_000_000.0 + capital[oor] * 10 + 1.0)
    est_out = est.copy()
    fut = rows["future_date"]
    est_out[fut] = _future(rng, as_of, len(fut))
    closed_out = closed.copy()
    closed_out[fut] = False  # a not-yet-founded entity cannot have been deregistered
    status_out = status.copy()
    status_out[fut] = np.where(status[fut] == 2, 0, status[fut])
    updated_out = updated.copy()
    updated_out[rows["stale_record"]] = _stale(rng, as_of, len(rows["stale_record"]))
    industry_s = _gather(div_codes, div)
    unk = rows["unknown_code"]
    industry_s = _scatter(
        industry_s, unk, _gather(P.BAD_INDUSTRY_CODES, rng.integers(0, 5, len(unk)))
    )

    uscc_clean = ids.uscc_strings(prefix, org, check)
    dereg_s = _date_series(dereg).zip_with(
        pl.Series(closed_out), pl.Series([None] * n_e, dtype=pl.Date)
    )
    frame = pl.DataFrame(
        {
            "统一社会信用代码": ids.uscc_strings(prefix, org, check_out)
            if len(bad)
            else uscc_clean,
            "企业名称": _scatter(name, rows["null_required"], None),
            "法定代表人": people.names.gather(rep),
            "法定代表人证件号码": people.ids.gather(rep),
            "注册资本": pl.Series(capital_out, dtype=pl.Float64),
            "成立日期": _date_series(est_out),
            "注销日期": dereg_s.alias("注销日期"),
            "行业代码": industry_s,
            "登记状态": _gather(statuses, status_out),
            "住所": _addresses(rng, district, detailed=False),
            "区划代码": _gather(d_codes, district),
            "更新日期": _date_series(updated_out),
        }
    )
    orig = rows["duplicate_key"]
    k = len(orig)
    if k:
        dups = frame[orig].with_columns(
            企业名称=other_name.gather(orig),
            注册资本=pl.Series(np.round(capital[orig] * rng.uniform(0.5, 2.0, k), 2)),
            住所=_addresses(rng, district[orig], detailed=False),
            更新日期=_date_series(np.maximum(_recent(rng, as_of, k), updated[orig])),
        )
        frame = pl.concat([frame, dups])

    usable = np.ones(n_e, dtype=bool)
    usable[picked.reserved()] = False
    active = usable & (status <= 1)
    emp = np.flatnonzero(active)
    employers = _Employers(
        uscc=uscc_clean.gather(emp),
        est_month=_month_index(est[emp]),
        # Firm sizes are heavy-tailed: a few large employers, many small ones.
        weight=rng.pareto(1.2, len(emp)) + 0.05 + (etype[emp] == 1) * 1.0,
    )
    return frame, employers, _detail(picked, n_e)


def _insurance(ctx: _Ctx, chunk: int, people: _People, employers: _Employers) -> tuple[
    pl.DataFrame, dict
]:  # fmt: skip
    rng = _rng(ctx.seed, chunk, _S_INSURANCE)
    as_of = ctx.as_of
    working = np.flatnonzero(people.usable & (people.age >= 18) & (people.age <= 64))
    if len(employers.uscc) == 0:
        working = working[:0]
    insured = working[rng.random(len(working)) < 0.59]
    m = len(insured)
    last_month = int(_month_index(np.array([as_of]))[0]) - 1
    length = np.minimum(rng.geometric(1 / 40, m), 180)
    active = rng.random(m) < 0.72
    end = np.where(active, last_month, last_month - rng.integers(1, 61, m))
    emp = _choice(rng, employers.weight, m) if m else np.zeros(0, np.int64)
    adult_month = _month_index(people.birth[insured]) + 18 * 12
    start = np.maximum.reduce([end - length + 1, employers.est_month[emp], adult_month,
                               np.full(m, _MONTH_2000)])  # fmt: skip
    keep = start <= end
    insured, start, end, emp, active = (
        insured[keep],
        start[keep],
        end[keep],
        emp[keep],
        active[keep],
    )
    length = end - start + 1
    total = int(length.sum())
    ins_type = _choice(rng, np.array([t[1] for t in P.INSURANCE_TYPES]), len(insured))
    rate = np.array([t[2] for t in P.INSURANCE_TYPES])[ins_type]
    base = np.clip(rng.lognormal(math.log(5200), 0.45, len(insured)), 3500, 30000)

    person_row = np.repeat(np.arange(len(insured)), length)
    first_row = np.repeat(np.cumsum(length) - length, length)
    month = np.repeat(start, length) + (np.arange(total) - first_row)
    years_back = (last_month - month) / 12.0
    base_row = np.round(np.maximum(base[person_row] / 1.05**years_back, 1500.0), 0)
    amount = np.round(base_row * rate[person_row], 2)
    status = np.zeros(total, dtype=np.int64)
    is_last = month == end[person_row]
    status[is_last & ~active[person_row]] = 2
    status[(rng.random(total) < 0.01) & ~is_last] = 1
    month_end = _month_first_day(month + 1) - 1
    lo = as_of - CLEAN_UPDATE_WINDOW_DAYS + 1
    updated = np.clip(month_end + rng.integers(5, 40, total), lo, as_of)

    picked = pick(_rng(ctx.seed, chunk, _S_DEFECTS + 2), "SBCBJF", total, ctx.rate)
    rows = picked.rows
    amount_s = _scatter(pl.Series(amount, dtype=pl.Float64), rows["null_required"], None)
    base_out = base_row.copy()
    oor = rows["out_of_range"]
    neg = rng.random(len(oor)) < 0.5
    base_out[oor] = np.where(neg, -base_row[oor], 60_000.0 + base_row[oor] * 10)
    updated_out = updated.copy()
    updated_out[rows["future_date"]] = _future(rng, as_of, len(rows["future_date"]))
    updated_out[rows["stale_record"]] = _stale(rng, as_of, len(rows["stale_record"]))
    statuses = ["正常参保", "暂停参保", "终止参保"]
    status_s = _scatter(
        _gather(statuses, status),
        rows["unknown_code"],
        _gather(P.BAD_INSURANCE_STATUS, rng.integers(0, 4, len(rows["unknown_code"]))),
    )
    ym = (month // 12) * 100 + month % 12 + 1
    ins_names = [t[0] for t in P.INSURANCE_TYPES]
    frame = pl.DataFrame(
        {
            "公民身份号码": people.ids.gather(insured[person_row]),
            "单位统一社会信用代码": employers.uscc.gather(emp[person_row]),
            "缴费月份": _int_str(ym),
            "险种": _gather(ins_names, ins_type[person_row]),
            "缴费基数": pl.Series(base_out, dtype=pl.Float64),
            "缴费金额": amount_s,
            "参保状态": status_s,
            "更新日期": _date_series(updated_out),
        }
    )
    orig = rows["duplicate_key"]
    k = len(orig)
    if k:
        # A second posting of the same month, e.g. a correction that was never reconciled.
        base2 = np.round(np.minimum(base_row[orig] * rng.uniform(0.8, 1.2, k), 59_000.0), 0)
        dups = frame[orig].with_columns(
            缴费基数=pl.Series(base2, dtype=pl.Float64),
            缴费金额=pl.Series(np.round(base2 * rate[person_row[orig]], 2), dtype=pl.Float64),
            更新日期=_date_series(_recent(rng, as_of, k)),
        )
        frame = pl.concat([frame, dups])
    return frame, _detail(picked, total)


def _visits(ctx: _Ctx, chunk: int, people: _People) -> tuple[pl.DataFrame, dict]:
    rng = _rng(ctx.seed, chunk, _S_VISITS)
    as_of = ctx.as_of
    who = np.flatnonzero(people.usable)
    # Visits over three years rise with age (chronic disease), mean about 1.5 per person.
    lam = np.minimum(0.5 + 2.6 * (people.age[who] / 80.0) ** 2, 5.0)
    n_visits = rng.poisson(lam)
    person = np.repeat(who, n_visits)
    n = len(person)
    visit = np.maximum(as_of - rng.integers(0, 3 * 365, n), people.birth[person])
    h_w = np.array([h[2] for h in P.HOSPITALS])
    hospital = _choice(rng, h_w, n)
    icd = codelists.load("icd10_common")
    dx_codes = list(P.DIAGNOSIS_WEIGHTS)
    dx = _choice(rng, np.array(list(P.DIAGNOSIS_WEIGHTS.values())), n)
    # Births and pregnancy checks only for women of child-bearing age.
    age_at = (visit - people.birth[person]) / 365.2425
    maternity = np.isin(dx, [dx_codes.index("O80.0"), dx_codes.index("Z34.9")])
    wrong = maternity & (people.male[person] | (age_at < 18) | (age_at > 48))
    dx[wrong] = dx_codes.index("J06.9")
    inpatient = np.isin(dx, [dx_codes.index(c) for c in P.INPATIENT_CODES]) | (rng.random(n) < 0.04)
    total_cents = np.where(
        inpatient,
        rng.lognormal(math.log(900_000), 0.7, n),
        rng.lognormal(math.log(18_000), 0.8, n),
    )
    total_cents = np.clip(np.round(total_cents), 500, 150_000_000).astype(np.int64)
    ratio = np.where(inpatient, rng.uniform(0.55, 0.85, n), rng.uniform(0.3, 0.6, n))
    pooled = np.floor(total_cents * ratio).astype(np.int64)
    own = total_cents - pooled
    updated = np.clip(visit + rng.integers(0, 31, n), as_of - CLEAN_UPDATE_WINDOW_DAYS + 1, as_of)

    # 结算单号: 6 random digits + an 11-digit bijective image of the global row index, then a
    # last digit chosen to differ from the GB 11643 check digit, so no number is a valid ID.
    g = chunk * _ROWS_PER_CHUNK_LIMIT + np.arange(n, dtype=np.int64)
    body11 = (g * _SETTLE_MULT + ctx.settle_offset) % 10**11
    body17 = rng.integers(100_000, 1_000_000, n) * 10**11 + body11
    last = rng.integers(0, 10, n)
    last = np.where(last == ids.ric_check_index(body17), (last + 1) % 10, last)
    settle = _int_str(body17 * 10 + last)

    picked = pick(_rng(ctx.seed, chunk, _S_DEFECTS + 3), "YBJS", n, ctx.rate)
    rows = picked.rows
    total = total_cents / 100.0
    total_out = total.copy()
    oor = rows["out_of_range"]
    neg = rng.random(len(oor)) < 0.5
    total_out[oor] = np.where(neg, -total[oor], 2_000_000.0 + total[oor] * 10 + 1.0)
    visit_out = visit.copy()
    visit_out[rows["future_date"]] = _future(rng, as_of, len(rows["future_date"]))
    updated_out = updated.copy()
    updated_out[rows["stale_record"]] = _stale(rng, as_of, len(rows["stale_record"]))
    dx_s = _gather(dx_codes, dx)
    unk = rows["unknown_code"]
    dx_out = _scatter(dx_s, unk, _gather(P.BAD_DIAGNOSIS_CODES, rng.integers(0, 5, len(unk))))
    frame = pl.DataFrame(
        {
            "结算单号": settle,
            "公民身份号码": people.ids.gather(person),
            "姓名": people.names.gather(person),
            "就诊日期": _date_series(visit_out),
            "医疗机构代码": _gather([h[0] for h in P.HOSPITALS], hospital),
            "医疗机构名称": _scatter(
                _gather([h[1] for h in P.HOSPITALS], hospital), rows["null_required"], None
            ),
            "诊断编码": dx_out,
            "诊断名称": _gather([icd[c] for c in dx_codes], dx),
            "医疗总费用": pl.Series(total_out, dtype=pl.Float64),
            "统筹支付金额": pl.Series(pooled / 100.0, dtype=pl.Float64),
            "个人自付金额": pl.Series(own / 100.0, dtype=pl.Float64),
            "更新日期": _date_series(updated_out),
        }
    )
    orig = rows["duplicate_key"]
    k = len(orig)
    if k:
        # The same settlement number posted twice with different amounts.
        t2 = np.maximum(np.round(total_cents[orig] * rng.uniform(0.5, 1.5, k)), 100).astype(
            np.int64
        )
        p2 = np.floor(t2 * ratio[orig]).astype(np.int64)
        dups = frame[orig].with_columns(
            医疗总费用=pl.Series(t2 / 100.0, dtype=pl.Float64),
            统筹支付金额=pl.Series(p2 / 100.0, dtype=pl.Float64),
            个人自付金额=pl.Series((t2 - p2) / 100.0, dtype=pl.Float64),
            更新日期=_date_series(np.maximum(_recent(rng, as_of, k), visit[orig])),
        )
        frame = pl.concat([frame, dups])
    return frame, _detail(picked, n)


def _chunk(ctx: _Ctx, chunk: int, n_persons: int, ent_offset: int, n_e: int) -> _ChunkOut:
    rk, people, d_rk = _population(ctx, chunk, n_persons)
    sc, employers, d_sc = _enterprises(ctx, chunk, n_e, ent_offset, people)
    sb, d_sb = _insurance(ctx, chunk, people, employers)
    yb, d_yb = _visits(ctx, chunk, people)
    frames = {"RKJBXX": rk, "SCZTDJ": sc, "SBCBJF": sb, "YBJS": yb}
    frames = {
        c: f.select([pl.col(k).cast(t) for k, t in SCHEMAS[c].items()]) for c, f in frames.items()
    }
    detail = {"RKJBXX": d_rk, "SCZTDJ": d_sc, "SBCBJF": d_sb, "YBJS": d_yb}
    return _ChunkOut(frames, detail)


# -- orchestration ----------------------------------------------------------------------------


def _validate(persons: int, seed: int, defect_rate: float, as_of: dt.date) -> None:
    if not 1990 <= as_of.year <= 2060:
        raise ValidationError(
            f"--as-of {as_of} is out of range", hint="use a reference date between 1990 and 2060"
        )
    if not 1 <= persons <= MAX_PERSONS:
        raise ValidationError(
            f"--persons {persons} is out of range", hint=f"use 1 to {MAX_PERSONS:,} persons"
        )
    if seed < 0:
        raise ValidationError(f"--seed {seed} is negative", hint="use a seed >= 0")
    if not 0.0 <= defect_rate <= MAX_DEFECT_RATE:
        raise ValidationError(
            f"--defect-rate {defect_rate} is out of range",
            hint=f"use a share between 0 and {MAX_DEFECT_RATE} (e.g. 0.02)",
        )


def _plan(persons: int) -> list[tuple[int, int, int]]:
    """(persons, enterprise offset, enterprises) per chunk; chunks are balanced."""
    n_chunks = max(1, math.ceil(persons / PERSONS_PER_CHUNK))
    sizes = [persons // n_chunks + (1 if i < persons % n_chunks else 0) for i in range(n_chunks)]
    out = []
    offset = 0
    for size in sizes:
        n_e = math.floor(size / 10 + 0.5)
        out.append((size, offset, n_e))
        offset += n_e
    return out


def _chunks(persons: int, seed: int, defect_rate: float, as_of: dt.date) -> Iterator[_ChunkOut]:
    _validate(persons, seed, defect_rate, as_of)
    plan = _plan(persons)
    perm_rng = _rng(seed, 1_000_000, 0)
    ctx = _Ctx(
        seed=seed,
        rate=defect_rate,
        as_of=_days(as_of),
        n_chunks=len(plan),
        seq_perm=perm_rng.permutation(_SEQ_VALUES).astype(np.int64),
        settle_offset=int(perm_rng.integers(0, 10**11)),
        org_offset=int(perm_rng.integers(0, 10**8)),
    )
    for i, (size, ent_offset, n_e) in enumerate(plan):
        yield _chunk(ctx, i, size, ent_offset, n_e)


class _Tally:
    """Accumulates row and defect counts (and optionally row positions) over chunks."""

    def __init__(self, keep_detail: bool) -> None:
        self.rows = dict.fromkeys(CODES, 0)
        self.counts = {c: {s.kind: 0 for s in SPECS[c]} for c in CODES}
        self.keep = keep_detail
        self.detail: dict[str, dict[str, list[np.ndarray]]] = {
            c: {s.kind: [] for s in SPECS[c]} for c in CODES
        }

    def add(self, out: _ChunkOut) -> None:
        for code in CODES:
            for kind, pos in out.detail[code].items():
                self.counts[code][kind] += len(pos)
                if self.keep:
                    self.detail[code][kind].append(pos + self.rows[code])
            self.rows[code] += out.frames[code].height

    def document(self, persons: int, seed: int, defect_rate: float, as_of: dt.date) -> dict:
        return {
            "seed": seed,
            "persons": persons,
            "defect_rate": defect_rate,
            "as_of": as_of.isoformat(),
            "datasets": {
                code: {
                    "rows": self.rows[code],
                    "defects": {
                        s.kind: {
                            "columns": list(s.columns),
                            "rows": self.counts[code][s.kind],
                            "rule": s.rule,
                        }
                        for s in SPECS[code]
                    },
                }
                for code in CODES
            },
        }

    def positions(self) -> dict[str, dict[str, np.ndarray]]:
        return {
            c: {
                k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in kinds.items()
            }
            for c, kinds in self.detail.items()
        }


@dataclass(frozen=True)
class SyntheticFrames:
    frames: dict[str, pl.DataFrame]
    defects: dict
    # Row positions (0-based, in ``frames[code]``) of the rows carrying each defect kind;
    # for duplicate_key the appended copies.
    defects_detail: dict[str, dict[str, np.ndarray]]


def generate_frames_detailed(
    persons: int, seed: int, defect_rate: float, as_of: dt.date | None = None
) -> SyntheticFrames:
    """Like :func:`generate_frames`, plus the row positions of every injected defect."""
    day = as_of or dt.date.today()
    tally = _Tally(keep_detail=True)
    parts: dict[str, list[pl.DataFrame]] = {c: [] for c in CODES}
    for out in _chunks(persons, seed, defect_rate, day):
        tally.add(out)
        for code in CODES:
            parts[code].append(out.frames[code])
    frames = {c: pl.concat(parts[c], rechunk=True) for c in CODES}
    return SyntheticFrames(
        frames, tally.document(persons, seed, defect_rate, day), tally.positions()
    )


def generate_frames(
    persons: int, seed: int, defect_rate: float, as_of: dt.date | None = None
) -> tuple[dict[str, pl.DataFrame], dict]:
    """The four datasets in memory and their defects document (the content of defects.json).

    Deterministic for (persons, seed, defect_rate, as_of); ``as_of`` defaults to today.
    Meant for tests and small sizes; :func:`generate` streams large sizes to disk."""
    result = generate_frames_detailed(persons, seed, defect_rate, as_of)
    return result.frames, result.defects


@dataclass(frozen=True)
class GenerationResult:
    out_dir: Path
    fmt: str
    paths: dict[str, Path]  # a file, or a directory of part-NNNNN.parquet files
    rows: dict[str, int]
    defects: dict
    seconds: float
    chunks: int
    files: int = field(default=0)


def _csv_bytes(frame: pl.DataFrame, header: bool) -> bytes:
    # GB18030 is what government exports commonly use; polars writes UTF-8 only.
    return frame.write_csv(include_header=header, date_format="%Y-%m-%d").encode("gb18030")


def generate(
    out_dir: Path,
    persons: int,
    seed: int,
    defect_rate: float,
    fmt: Format = "parquet",
    as_of: dt.date | None = None,
    progress: Progress | None = None,
) -> GenerationResult:
    """Write the four datasets and ``defects.json`` into ``out_dir``.

    Parquet: ``<CODE>.parquet`` when the population fits one chunk, else a directory
    ``<CODE>/part-00000.parquet ...`` with one part per chunk. ``csv-gb18030``: one
    ``<CODE>.csv`` per dataset encoded GB18030. Each output is staged under a temporary
    name and renamed into place when complete; ``defects.json`` is written last, so its
    presence marks a finished generation. ``progress(done_persons, total_persons)`` is
    called after each chunk.
    """
    if fmt not in ("parquet", "csv-gb18030"):
        raise ValidationError(
            f"unknown format {fmt!r}", hint="use --format parquet or --format csv-gb18030"
        )
    day = as_of or dt.date.today()
    _validate(persons, seed, defect_rate, day)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(persons)
    partitioned = fmt == "parquet" and len(plan) > 1
    staging = Path(tempfile.mkdtemp(prefix=".synth-", suffix=".staging", dir=out_dir))
    tally = _Tally(keep_detail=False)
    files = 0
    try:
        final: dict[str, Path] = {}
        staged: dict[str, Path] = {}
        for code in CODES:
            if fmt == "csv-gb18030":
                name = f"{code}.csv"
            else:
                name = code if partitioned else f"{code}.parquet"
            final[code] = out_dir / name
            staged[code] = staging / name
            if partitioned:
                staged[code].mkdir()
        done = 0
        for i, out in enumerate(_chunks(persons, seed, defect_rate, day)):
            tally.add(out)
            for code in CODES:
                frame = out.frames[code]
                if fmt == "csv-gb18030":
                    with staged[code].open("ab") as fh:
                        fh.write(_csv_bytes(frame, header=i == 0))
                elif partitioned:
                    frame.write_parquet(staged[code] / f"part-{i:05d}.parquet", compression="zstd")
                    files += 1
                else:
                    frame.write_parquet(staged[code], compression="zstd")
            done += plan[i][0]
            del out
            if progress is not None:
                progress(done, persons)
        if not partitioned:
            files = len(CODES)
        # The old ground truth must not outlive the data it described.
        (out_dir / "defects.json").unlink(missing_ok=True)
        for code in CODES:
            target = final[code]
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(staged[code], target)
        # A stale sibling from an earlier run of the other layout would confuse ingestion.
        for code in CODES:
            for other in (out_dir / code, out_dir / f"{code}.parquet", out_dir / f"{code}.csv"):
                if other != final[code] and other.exists():
                    shutil.rmtree(other) if other.is_dir() else other.unlink()
        doc = tally.document(persons, seed, defect_rate, day)
        atomic.write_text(
            out_dir / "defects.json", json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return GenerationResult(
        out_dir=out_dir,
        fmt=fmt,
        paths=final,
        rows=dict(tally.rows),
        defects=doc,
        seconds=time.perf_counter() - t0,
        chunks=len(plan),
        files=files,
    )
