"""Value pools for the synthetic datasets, built once per process.

Faker zh_CN only contributes word lists here (its provider tables), never per-row calls:
rows are drawn from these pools with numpy indices and assembled with polars expressions.
Region history comes from python-stdnum's GB/T 2260 table, so every generated ID number
names a birth place that existed in the person's birth year.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from faker.providers.company.zh_CN import Provider as CompanyProvider
from faker.providers.person.zh_CN import Provider as PersonProvider

from catalogs import codelists

# Birth years the generator can produce (ages 0-100 around any as_of in 1990-2060).
FIRST_YEAR = 1880
LAST_YEAR = 2070

# -- people -------------------------------------------------------------------------------

# Share of residents by 5-year age band, shaped on Liaoning's ageing 2020 census pyramid.
_BANDS = "2.5 3.2 3.8 3.8 4.2 5.0 7.2 7.0 6.8 8.0 9.3 9.0 7.8 7.5 5.5 3.5 2.4 1.3 0.5 0.15 0.02"
# bands 0-4 ... 95-99, then 100
AGE_BAND_WEIGHTS = np.array([float(x) for x in _BANDS.split()], dtype=np.float64)

# Yingkou's ethnic mix: Manchu is the largest minority in Liaoning, then Hui, Mongol,
# Korean and Xibe; the long tail comes from migration.
ETHNIC_WEIGHTS: dict[str, float] = {
    "汉族": 83.0,
    "满族": 13.2,
    "回族": 1.1,
    "蒙古族": 1.0,
    "朝鲜族": 0.6,
    "锡伯族": 0.35,
    "壮族": 0.1,
    "土家族": 0.08,
    "苗族": 0.06,
    "达斡尔族": 0.04,
    "彝族": 0.03,
    "维吾尔族": 0.02,
    "藏族": 0.02,
    "鄂温克族": 0.02,
    "赫哲族": 0.01,
}

# Values that look like an ethnic group but are not in GB 3304 (unknown_code defects).
BAD_ETHNIC = ["穿青人", "未识别民族", "其他", "外国血统", "汉"]

# Mobile number segments allocated to the three operators plus virtual operators.
MOBILE_PREFIXES = (
    [str(p) for p in range(130, 140)]
    + ["145", "147", "149", "150", "151", "152", "153", "155", "156", "157", "158", "159"]
    + ["162", "165", "166", "167", "170", "171", "172", "173", "175", "176", "177", "178"]
    + [str(p) for p in range(180, 190)]
    + ["190", "191", "192", "193", "195", "196", "197", "198", "199"]
)

EXTRA_GIVEN_CHARS_MALE = "国庆志刚立新振宇泽晓明俊伟博文子轩浩然天佑一鸣家乐嘉伦"
EXTRA_GIVEN_CHARS_FEMALE = "淑秀雅欣怡梓涵思雨佳琪若曦诗婷雪梦玉凤春美晓丽慧颖"

# -- places -------------------------------------------------------------------------------

# Real road names per Yingkou county-level district (a sample; numbers are synthetic).
YINGKOU_STREETS: dict[str, list[str]] = {
    "210802": ["渤海大街", "市府路", "金牛山大街", "民兴街", "八田地街", "跃进街", "新兴大街"],
    "210803": ["渤海大街西", "新华路", "建设街", "西大街", "辽河大街", "清华路", "青年大街"],
    "210804": ["平安大街", "青岛路", "昆仑大街", "海星路", "天山大街", "熊岳大街", "芦屯路"],
    "210811": ["沿海路", "边城路", "柳树镇中心街", "路南镇大街", "二道河路", "营大路"],
    "210881": ["鼓楼路", "建设街", "西城路", "团山路", "东城大街", "熊岳路", "明珠路"],
    "210882": ["哈大路", "钢都路", "石桥大街", "青花大街", "永安路", "金桥大街", "民主路"],
}
DISTRICT_WEIGHTS: dict[str, float] = {
    "210802": 0.14,
    "210803": 0.09,
    "210804": 0.20,
    "210811": 0.07,
    "210881": 0.22,
    "210882": 0.28,
}
ESTATE_SUFFIXES = ["小区", "家园", "花园", "新村", "苑", "公寓", "华府", "嘉园"]

# -- enterprises --------------------------------------------------------------------------

# Trade-name characters; two are drawn per enterprise name (字号).
TRADE_CHARS = (
    "鑫华泰盛达恒隆昌兴源宏顺通利丰博润德裕瑞祥海辽渤鲅营港金银宝龙凤天宇新禾晟弘嘉佳"
    "信诚远航明光亿安益康惠联众合力创"
)
# Industry words by GB/T 4754 section letter; the name's middle part (行业表述).
SECTION_WORDS: dict[str, list[str]] = {
    "A": ["农业科技", "养殖", "果蔬种植", "水产"],
    "B": ["矿业", "石材"],
    "C": ["机械制造", "化工", "镁制品", "钢结构", "食品", "服装", "电子科技", "塑料制品"],
    "D": ["热力", "能源", "供水"],
    "E": ["建筑工程", "建设", "装饰工程", "市政工程"],
    "F": ["商贸", "贸易", "物资", "百货"],
    "G": ["物流", "运输", "港口服务", "仓储"],
    "H": ["酒店管理", "餐饮管理", "宾馆"],
    "I": ["信息技术", "网络科技", "软件"],
    "J": ["投资", "融资担保", "保险代理"],
    "K": ["房地产开发", "物业管理", "置业"],
    "L": ["商务服务", "人力资源", "租赁"],
    "M": ["检测", "工程设计", "技术服务"],
    "N": ["环保科技", "园林绿化", "环境工程"],
    "O": ["家政服务", "汽车维修", "洗涤"],
    "P": ["教育咨询", "培训"],
    "Q": ["医疗管理", "养老服务"],
    "R": ["文化传媒", "体育发展", "广告"],
    "S": ["社会服务"],
    "T": ["国际合作"],
}
# Section shares among Yingkou market entities (trade and manufacturing dominate).
SECTION_WEIGHTS: dict[str, float] = {
    "A": 3, "B": 0.5, "C": 14, "D": 0.6, "E": 7, "F": 38, "G": 5, "H": 8, "I": 3, "J": 0.6,
    "K": 2, "L": 6, "M": 3, "N": 0.8, "O": 5, "P": 1, "Q": 0.7, "R": 1.5, "S": 0.1, "T": 0.01,
}  # fmt: skip
COMPANY_SUFFIXES = ["有限公司", "有限责任公司", "股份有限公司"]
SOLE_TRADER_SUFFIXES = ["商行", "饭店", "超市", "便利店", "经销处", "门市部", "维修部"]
BAD_INDUSTRY_CODES = ["Z99", "C00", "X12", "F5", "99"]

# -- health -------------------------------------------------------------------------------

# (code, name, relative visit volume). Codes follow the national 医保 platform scheme
# H + 6-digit region + 5 digits; names are typical of the city, numbers synthetic.
HOSPITALS: list[tuple[str, str, float]] = [
    ("H21080200011", "营口市中心医院", 14.0),
    ("H21080200023", "营口市中医院", 7.0),
    ("H21080200035", "营口市妇产儿童医院", 5.0),
    ("H21080300017", "营口市第二人民医院", 6.0),
    ("H21080300029", "营口市第四人民医院", 3.0),
    ("H21080300042", "西市区人民医院", 2.5),
    ("H21080400014", "营口经济技术开发区中心医院", 9.0),
    ("H21080400026", "鲅鱼圈区人民医院", 5.0),
    ("H21080400038", "熊岳镇中心卫生院", 1.5),
    ("H21081100013", "老边区人民医院", 2.0),
    ("H21081100025", "柳树镇卫生院", 0.8),
    ("H21088100019", "盖州市人民医院", 6.0),
    ("H21088100021", "盖州市中医院", 3.0),
    ("H21088100033", "盖州市双台子镇卫生院", 0.8),
    ("H21088200015", "大石桥市中心医院", 8.0),
    ("H21088200027", "大石桥市中医院", 3.5),
    ("H21088200039", "大石桥市水源镇卫生院", 0.9),
    ("H21080200047", "站前区跃进社区卫生服务中心", 1.2),
    ("H21080300054", "西市区五台子社区卫生服务中心", 1.0),
    ("H21080400051", "鲅鱼圈区海星社区卫生服务中心", 1.1),
]
# Relative frequency of the common ICD-10 codes in settlements (chronic disease dominates).
DIAGNOSIS_WEIGHTS: dict[str, float] = {
    "I10.x00": 16, "E11.9": 10, "J06.9": 9, "K29.7": 5, "Z00.0": 6, "E78.5": 4,
    "I25.1": 4, "J20.9": 3, "M54.5": 3, "I63.9": 3, "J18.9": 2, "M51.2": 2, "M17.9": 2,
    "A09.9": 2, "R50.9": 2, "J44.9": 2, "N39.0": 1.5, "G47.0": 1.5, "J00.x00": 2,
    "R51.x00": 1, "H52.1": 1, "H25.9": 1, "K21.0": 1, "I48.x01": 1, "I20.0": 1,
    "N18.9": 1, "E03.9": 1, "F32.9": 0.8, "L20.9": 0.6, "B02.9": 0.6, "D64.9": 0.6,
    "K80.2": 0.6, "K35.8": 0.4, "O80.0": 0.5, "Z34.9": 0.8, "S52.5": 0.3, "S82.2": 0.3,
    "C34.9": 0.5, "C50.9": 0.3, "C16.9": 0.3,
}  # fmt: skip
INPATIENT_CODES = {"I63.9", "J18.9", "K35.8", "K80.2", "O80.0", "S52.5", "S82.2", "C34.9"} | {
    "C50.9",
    "C16.9",
    "I20.0",
}
BAD_DIAGNOSIS_CODES = ["U99.999", "X00.000", "I10", "ZZ9.9", "E11"]

# -- social insurance ---------------------------------------------------------------------

# (险种, share of insured persons, contribution rate unit + individual).
INSURANCE_TYPES: list[tuple[str, float, float]] = [
    ("企业职工基本养老保险", 0.70, 0.24),
    ("职工基本医疗保险", 0.20, 0.095),
    ("失业保险", 0.06, 0.01),
    ("工伤保险", 0.04, 0.004),
]
BAD_INSURANCE_STATUS = ["待核定", "冻结", "未知", "正常"]


def _given_name_pools(names: list[str], extra: str) -> list[str]:
    chars = sorted({c for n in names for c in n} | set(extra))
    doubles = [a + b for a in chars for b in chars if a != b]
    # Real given names first so they are over-represented, then the combinations.
    return list(dict.fromkeys([*names, *names, *doubles]))


@dataclass(frozen=True)
class Pools:
    surnames: list[str]
    surname_p: np.ndarray
    given_male: list[str]
    given_female: list[str]
    trade_names: list[str]
    estates: list[str]


@cache
def pools() -> Pools:
    surname_items = list(PersonProvider.last_names.items())
    weights = np.array([float(w) for _, w in surname_items])
    trade = sorted(
        {a + b for a in TRADE_CHARS for b in TRADE_CHARS if a != b}
        | {p for p in CompanyProvider.company_prefixes if len(p) == 2}
    )
    estates = [w + s for w in trade[::7] for s in ESTATE_SUFFIXES]
    return Pools(
        surnames=[s for s, _ in surname_items],
        surname_p=weights / weights.sum(),
        given_male=_given_name_pools(list(PersonProvider.first_names_male), EXTRA_GIVEN_CHARS_MALE),
        given_female=_given_name_pools(
            list(PersonProvider.first_names_female), EXTRA_GIVEN_CHARS_FEMALE
        ),
        trade_names=trade,
        estates=estates,
    )


# -- birth places valid per year -------------------------------------------------------------

_HISTORY = re.compile(r"\[(\d{4})?-(\d{4})?\]([^,]*)")
_NEIGHBOURS = ("22", "23", "37", "13", "15")
# Birth-place category shares: Yingkou, rest of Liaoning, neighbouring provinces, elsewhere.
BIRTHPLACE_SHARES = np.array([0.70, 0.18, 0.08, 0.04])


@dataclass(frozen=True)
class BirthPlaces:
    """Flattened table: codes valid in year y for category k are
    ``codes[offsets[k, y - FIRST_YEAR] : offsets[k, y - FIRST_YEAR] + lengths[k, ...]]``."""

    codes: np.ndarray  # int64 region codes
    offsets: np.ndarray  # (4, years) int64
    lengths: np.ndarray  # (4, years) int64


def _county_history() -> list[tuple[str, int, int]]:
    """(code, first_year, last_year) spans of county-level codes from stdnum's table."""
    text = resources.files("stdnum").joinpath("cn/loc.dat").read_text(encoding="utf-8")
    spans: list[tuple[str, int, int]] = []
    province = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith(" "):
            province = line.split()[0]
            continue
        suffix, _, rest = line.strip().partition(" ")
        code = province + suffix
        if code.endswith(("00", "01")) or province in ("71", "81", "82"):
            continue
        spec = rest.partition("=")[2].strip().strip('"')
        history = _HISTORY.findall(spec)
        if not history:
            spans.append((code, FIRST_YEAR, LAST_YEAR))
            continue
        for start, end, name in history:
            if name in ("市辖区", "市区", "郊区"):
                continue
            lo = int(start) if start else FIRST_YEAR
            hi = int(end) if end else LAST_YEAR
            if lo <= hi:
                spans.append((code, lo, hi))
    return spans


@cache
def birth_places() -> BirthPlaces:
    known = codelists.load("gbt2260_all")
    spans = [s for s in _county_history() if s[0] in known]
    years = LAST_YEAR - FIRST_YEAR + 1
    buckets: list[list[list[int]]] = [[[] for _ in range(years)] for _ in range(4)]
    for code, lo, hi in spans:
        if code.startswith("2108"):
            k = 0
        elif code.startswith("21"):
            k = 1
        elif code.startswith(_NEIGHBOURS):
            k = 2
        else:
            k = 3
        for y in range(lo, hi + 1):
            buckets[k][y - FIRST_YEAR].append(int(code))
    flat: list[int] = []
    offsets = np.zeros((4, years), dtype=np.int64)
    lengths = np.zeros((4, years), dtype=np.int64)
    for k in range(4):
        for y in range(years):
            codes = sorted(set(buckets[k][y]))
            offsets[k, y] = len(flat)
            lengths[k, y] = len(codes)
            flat.extend(codes)
    return BirthPlaces(np.array(flat, dtype=np.int64), offsets, lengths)
