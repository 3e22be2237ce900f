"""A table of hard cases for column-level PII detection, with its ground truth.

Negatives that classic detectors get wrong: 18-digit order numbers whose check digit fails
(their middle digits even look like a birth date), 11-digit serials outside mobile ranges,
EAN-13 barcodes, 6-digit region codes, company names (some starting with a surname or
holding 路), ordinary dates, category columns of two-character words, passport-shaped
product codes under a product-code header. Positives in less common forms: pinyin-initial
and English headers, +86 / spaced / dashed mobiles, landlines with extensions, compound
surnames and ``·`` names, addresses in other cities, birth dates as text in three formats,
15-digit legacy IDs, spaced card numbers, 8-character new-energy plates, a column of IDs
with a meaningless header, and free-text remarks holding phone numbers or names.

Built with numpy draws and polars expressions (no per-row Python), deterministic per seed.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from synthetic_data import ids
from synthetic_data import pools as P

# column -> the entity a correct detector reports (None: no personal identifier)
TRUTH: dict[str, str | None] = {
    # negatives
    "订单号": None,
    "交易流水号": None,
    "商品条码": None,
    "行政区划代码": None,
    "企业名称": None,
    "交易日期": None,
    "办理日期": None,
    "金额": None,
    "办理结果": None,
    "职业": None,
    "产品编号": None,
    "医院名称": None,
    "版本号": None,
    "统计月份": None,
    "批次号": None,
    "年龄": None,
    "联系电话_未填": None,
    "诊断名称": None,
    # positives
    "sfzh": "CN_RESIDENT_ID",
    "zjhm_old": "CN_RESIDENT_ID",
    "col_7": "CN_RESIDENT_ID",
    "lxdh": "CN_MOBILE",
    "contact_phone": "CN_MOBILE",
    "办公电话": "CN_PHONE",
    "xm": "PERSON_NAME",
    "customer_name": "PERSON_NAME",
    "jzdz": "ADDRESS",
    "csrq": "DATE_OF_BIRTH",
    "email": "EMAIL",
    "银行卡号": "CN_BANK_CARD",
    "hzhm": "CN_PASSPORT",
    "车牌号": "CN_LICENSE_PLATE",
    "登录IP": "IP_ADDRESS",
    "统一社会信用代码": "CN_USCC",
    "备注": "CN_MOBILE",
    "情况说明": "PERSON_NAME",
}

_CITIES = [
    ("北京市", ["朝阳区", "海淀区", "东城区"], ["建国路", "中关村大街", "东长安街"]),
    ("上海市", ["浦东新区", "徐汇区", "静安区"], ["世纪大道", "漕溪北路", "南京西路"]),
    ("辽宁省沈阳市", ["和平区", "沈河区", "皇姑区"], ["青年大街", "北京街", "黄河南大街"]),
    ("广东省广州市", ["天河区", "越秀区", "海珠区"], ["天河路", "中山五路", "江南大道"]),
    ("辽宁省大连市", ["中山区", "西岗区", "甘井子区"], ["人民路", "长江路", "华北路"]),
]
_COMPOUND_NAMES = ["欧阳娜娜", "司马光明", "诸葛亮", "上官婉儿", "慕容复兴", "东方明珠"]
_DOT_NAMES = ["买买提·艾力", "阿依古丽·吐尔逊", "热依拉·艾买提", "古丽·克里木"]
_OCCUPATIONS = ["教师", "工人", "农民", "司机", "医生", "护士", "会计", "律师", "厨师", "保安"]
_RESULTS = ["已办结", "材料齐全，准予受理", "退回补正", "审核通过", "不予受理，材料不全"]
_HOSPITALS = ["营口市中心医院", "营口市第二人民医院", "鲅鱼圈区人民医院", "大石桥市中医院"]
_DIAGNOSES = ["原发性高血压", "急性上呼吸道感染", "2型糖尿病", "支气管炎", "腰椎间盘突出"]
_INDUSTRY = ["商贸", "物流", "铁路器材", "路桥工程", "餐饮", "科技", "建材", "机械制造"]
_SUFFIX = ["有限公司", "有限责任公司", "股份有限公司", "经销处", "超市"]
_DOMAINS = ["example.com", "163.com", "qq.com", "yk.gov.cn", "mail.example.org"]
_AREA_CODES = ["010", "024", "0417", "021", "0411", "020", "0755"]
_NON_MOBILE_PREFIXES = ["100", "110", "120", "140", "141", "143", "144", "154", "160", "161"]
_REMARKS_PLAIN = ["客户来电咨询社保缴费", "已电话回访", "材料已归档", "需补交证明材料", "无"]
_MEETING = ["申请人{}已到场核验", "经办人{}已审核", "由{}代为办理", "{}本人签字确认"]


def _pick(rng: np.random.Generator, values: list[str], n: int) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(rng.integers(0, len(values), n))


def _digits(rng: np.random.Generator, n: int, width: int) -> pl.Series:
    return pl.Series(rng.integers(0, 10**width, n), dtype=pl.Int64).cast(pl.String).str.zfill(width)


def _join_digits(digits: np.ndarray) -> pl.Series:
    frame = pl.DataFrame(digits, schema=[f"d{i}" for i in range(digits.shape[1])])
    return frame.select(pl.concat_str(pl.all().cast(pl.String))).to_series()


def _bodies(rng: np.random.Generator, n: int) -> np.ndarray:
    """17-digit ID bodies: a Liaoning county, a real date 1940-2005, a sequence number."""
    counties = np.array([210802, 210803, 210804, 210881, 210882, 210102, 210202, 110105])
    region = counties[rng.integers(0, len(counties), n)]
    days = rng.integers(
        np.datetime64("1940-01-01").astype(int), np.datetime64("2005-12-31").astype(int), n
    )
    dates = np.datetime64("1970-01-01") + days.astype("timedelta64[D]")
    ymd = pl.Series(dates).dt.strftime("%Y%m%d").cast(pl.Int64).to_numpy()
    return region * 10**11 + ymd * 1000 + rng.integers(0, 1000, n)


def _luhn_cards(rng: np.random.Generator, n: int, length: int) -> pl.Series:
    body = rng.integers(0, 10, (n, length - 1))
    body[:, 0], body[:, 1] = 6, 2
    # Luhn: double every second digit counted from the right of the full number.
    doubled = (np.arange(length - 1)[::-1] % 2) == 0
    d2 = body * 2
    s = np.where(doubled[None, :], d2 - 9 * (d2 > 9), body).sum(axis=1)
    check = (10 - s % 10) % 10
    return _join_digits(np.concatenate([body, check[:, None]], axis=1))


def _ean13(rng: np.random.Generator, n: int) -> pl.Series:
    body = rng.integers(0, 10, (n, 12))
    body[:, 0], body[:, 1] = 6, 9
    body[:, 2] = rng.integers(0, 10, n)
    weights = np.tile([1, 3], 6)
    check = (10 - (body @ weights) % 10) % 10
    return _join_digits(np.concatenate([body, check[:, None]], axis=1))


def tricky_frame(rows: int = 1000, seed: int = 0) -> tuple[pl.DataFrame, dict[str, str | None]]:
    """The hard-case table and its ground truth (column -> entity or None)."""
    rng = np.random.default_rng(seed)
    n = rows
    pools = P.pools()

    bodies = _bodies(rng, n)
    check = ids.ric_check_index(bodies)
    good_ids = ids.ric_strings(bodies, check)
    order_bodies = _bodies(rng, n)
    wrong = (ids.ric_check_index(order_bodies) + rng.integers(1, 11, n)) % 11
    wrong = np.where(wrong == 10, (wrong + 1) % 11, wrong)  # keep order numbers all-digit
    order_numbers = ids.ric_strings(order_bodies, wrong)
    legacy = (
        pl.Series(bodies // 10**11, dtype=pl.Int64).cast(pl.String)
        + pl.Series((bodies // 1000) % 10**6, dtype=pl.Int64).cast(pl.String).str.zfill(6)
        + pl.Series(bodies % 1000, dtype=pl.Int64).cast(pl.String).str.zfill(3)
    )
    lower_x = good_ids.str.replace("X", "x")

    mobile = _pick(rng, P.MOBILE_PREFIXES, n) + _digits(rng, n, 8)
    fmt = rng.integers(0, 4, n)
    mobile_mixed = pl.select(
        pl.when(pl.lit(fmt) == 0)
        .then(pl.lit(mobile))
        .when(pl.lit(fmt) == 1)
        .then(
            pl.concat_str(
                [
                    pl.lit("+86 "),
                    pl.lit(mobile).str.slice(0, 3),
                    pl.lit(" "),
                    pl.lit(mobile).str.slice(3, 4),
                    pl.lit(" "),
                    pl.lit(mobile).str.slice(7, 4),
                ]
            )
        )
        .when(pl.lit(fmt) == 2)
        .then(
            pl.concat_str(
                [
                    pl.lit(mobile).str.slice(0, 3),
                    pl.lit("-"),
                    pl.lit(mobile).str.slice(3, 4),
                    pl.lit("-"),
                    pl.lit(mobile).str.slice(7, 4),
                ]
            )
        )
        .otherwise(pl.lit("86") + pl.lit(mobile))
    ).to_series()

    area = _pick(rng, _AREA_CODES, n)
    local = pl.Series(rng.integers(2, 9, n), dtype=pl.Int64).cast(pl.String) + _digits(rng, n, 6)
    local8 = local + _digits(rng, n, 1)
    landline = pl.select(
        pl.when(pl.lit(area).str.len_chars() == 3)
        .then(pl.lit(area) + "-" + pl.lit(local8))
        .otherwise(pl.lit(area) + "-" + pl.lit(local))
    ).to_series()
    ext = rng.random(n) < 0.2
    landline = pl.select(
        pl.when(pl.lit(ext))
        .then(pl.lit(landline) + "-" + _digits(rng, n, 3))
        .otherwise(pl.lit(landline))
    ).to_series()

    surnames = _pick(rng, pools.surnames[:200], n)
    given = _pick(rng, pools.given_male + pools.given_female, n)
    names = surnames + given
    special = rng.random(n) < 0.1
    names = pl.select(
        pl.when(pl.lit(special))
        .then(_pick(rng, _COMPOUND_NAMES + _DOT_NAMES, n))
        .otherwise(pl.lit(names))
    ).to_series()

    city = rng.integers(0, len(_CITIES), n)
    district = rng.integers(0, 3, n)
    prefix = pl.Series([c[0] for c in _CITIES]).gather(city)
    dist = pl.Series([d for c in _CITIES for d in c[1]]).gather(city * 3 + district)
    road = pl.Series([r for c in _CITIES for r in c[2]]).gather(city * 3 + rng.integers(0, 3, n))
    addresses = (
        prefix
        + dist
        + road
        + pl.Series(rng.integers(1, 400, n)).cast(pl.String)
        + "号"
        + pl.Series(rng.integers(1, 30, n)).cast(pl.String)
        + "栋"
        + pl.Series(rng.integers(101, 2500, n)).cast(pl.String)
        + "室"
    )

    born = pl.Series(
        np.datetime64("1940-01-01") + rng.integers(0, 24000, n).astype("timedelta64[D]")
    )
    dob_fmt = rng.integers(0, 3, n)
    dob_text = pl.select(
        pl.when(pl.lit(dob_fmt) == 0)
        .then(pl.lit(born).dt.strftime("%Y-%m-%d"))
        .when(pl.lit(dob_fmt) == 1)
        .then(pl.lit(born).dt.strftime("%Y年%-m月%-d日"))
        .otherwise(pl.lit(born).dt.strftime("%Y%m%d"))
    ).to_series()

    user = _pick(rng, ["zhang", "li", "wang", "liu", "chen", "yang", "zhao"], n) + _digits(
        rng, n, 4
    )
    emails = user + "@" + _pick(rng, _DOMAINS, n)

    cards = pl.concat([_luhn_cards(rng, n // 2, 16), _luhn_cards(rng, n - n // 2, 19)])
    spaced = rng.random(n) < 0.3
    cards = pl.select(
        pl.when(pl.lit(spaced))
        .then(pl.lit(cards).str.replace_all(r"(\d{4})", "$1 ").str.strip_chars())
        .otherwise(pl.lit(cards))
    ).to_series()

    passports = pl.select(
        pl.when(pl.lit(rng.random(n) < 0.5))
        .then("E" + _digits(rng, n, 8))
        .otherwise("E" + _pick(rng, list("ABCDEFGHJK"), n) + _digits(rng, n, 7))
    ).to_series()

    letters = list("ABCDEFGHJKLMNPQRSTUVWXYZ")
    province = _pick(rng, list("辽京沪粤吉黑鲁"), n)
    plates = pl.select(
        pl.when(pl.lit(rng.random(n) < 0.3))
        .then(
            pl.lit(province)
            + _pick(rng, letters, n)
            + "D"
            + _pick(rng, letters, n)
            + _digits(rng, n, 4)
        )
        .otherwise(
            pl.lit(province) + _pick(rng, letters, n) + _pick(rng, letters, n) + _digits(rng, n, 4)
        )
    ).to_series()

    octets = [pl.Series(rng.integers(1, 255, n)).cast(pl.String) for _ in range(4)]
    ips = octets[0] + "." + octets[1] + "." + octets[2] + "." + octets[3]

    prefix16 = (
        pl.Series(rng.choice([9121, 9221, 9321], n) * 10**12, dtype=pl.Int64)
        + pl.Series(rng.choice([802, 803, 804, 881], n) * 10**8, dtype=pl.Int64)
        + pl.Series(rng.integers(0, 10**8, n), dtype=pl.Int64)
    ).to_numpy()
    org, uscc_check = ids.uscc_parts(prefix16)
    uscc = ids.uscc_strings(prefix16, org, uscc_check)

    remark_phone = rng.random(n) < 0.3
    remarks = pl.select(
        pl.when(pl.lit(remark_phone))
        .then("请回电" + pl.lit(mobile) + "，" + _pick(rng, _REMARKS_PLAIN, n))
        .otherwise(_pick(rng, _REMARKS_PLAIN, n))
    ).to_series()
    meeting_template = _pick(rng, _MEETING, n)
    with_name = rng.random(n) < 0.6
    notes = pl.select(
        pl.when(pl.lit(with_name))
        .then(
            pl.lit(meeting_template).str.replace("{}", pl.lit(names), literal=True)
            + "，"
            + _pick(rng, _RESULTS, n)
        )
        .otherwise(_pick(rng, _RESULTS, n) + "，等待下一步处理")
    ).to_series()

    trade = _pick(rng, pools.trade_names, n)
    person_trade = _pick(rng, ["王记", "张记", "李氏", "刘家"], n)
    trade = pl.select(
        pl.when(pl.lit(rng.random(n) < 0.2)).then(person_trade).otherwise(trade)
    ).to_series()
    companies = (
        _pick(rng, ["营口", "营口市", "鲅鱼圈区", "大石桥市"], n)
        + trade
        + _pick(rng, _INDUSTRY, n)
        + _pick(rng, _SUFFIX, n)
    )

    regions = _pick(
        rng, ["210802", "210803", "210804", "210811", "210881", "210882", "210100", "110105"], n
    )
    day = pl.Series(np.datetime64("2020-01-01") + rng.integers(0, 1800, n).astype("timedelta64[D]"))

    frame = pl.DataFrame(
        {
            "订单号": order_numbers,
            "交易流水号": _pick(rng, _NON_MOBILE_PREFIXES, n) + _digits(rng, n, 8),
            "商品条码": _ean13(rng, n),
            "行政区划代码": regions,
            "企业名称": companies,
            "交易日期": day,
            "办理日期": day.dt.strftime("%Y-%m-%d"),
            "金额": pl.Series(rng.gamma(2.0, 300.0, n)).round(2),
            "办理结果": _pick(rng, _RESULTS, n),
            "职业": _pick(rng, _OCCUPATIONS, n),
            "产品编号": "E" + _digits(rng, n, 8),
            "医院名称": _pick(rng, _HOSPITALS, n),
            "版本号": pl.Series(rng.integers(1, 12, n)).cast(pl.String)
            + "."
            + pl.Series(rng.integers(0, 20, n)).cast(pl.String)
            + "."
            + pl.Series(rng.integers(0, 99, n)).cast(pl.String),
            "统计月份": day.dt.strftime("%Y%m"),
            "批次号": "2" + _digits(rng, n, 10),
            "年龄": pl.Series(rng.integers(0, 100, n)),
            "联系电话_未填": _pick(rng, ["无", "-", "不详", "暂无"], n),
            "诊断名称": _pick(rng, _DIAGNOSES, n),
            "sfzh": lower_x,
            "zjhm_old": pl.select(
                pl.when(pl.lit(rng.random(n) < 0.5)).then(legacy).otherwise(good_ids)
            ).to_series(),
            "col_7": good_ids.sample(n, seed=seed, shuffle=True),
            "lxdh": mobile_mixed,
            "contact_phone": mobile.sample(n, seed=seed + 1, shuffle=True),
            "办公电话": landline,
            "xm": names,
            "customer_name": names.sample(n, seed=seed + 2, shuffle=True),
            "jzdz": addresses,
            "csrq": dob_text,
            "email": emails,
            "银行卡号": cards,
            "hzhm": passports,
            "车牌号": plates,
            "登录IP": ips,
            "统一社会信用代码": uscc,
            "备注": remarks,
            "情况说明": notes,
        }
    )
    return frame, dict(TRUTH)
