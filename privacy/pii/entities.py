"""What each personal-information entity looks like: one place for patterns and header words.

Two regex dialects live side by side on purpose. Polars runs Rust's ``regex`` crate, which
has no look-around, so the column scanner matches whole (normalized) values against anchored
patterns and finds identifiers inside free text by extracting maximal tokens first. The
Presidio recognizers run Python's ``re`` over free text and use look-around for boundaries.
Both validate with the same check-digit functions (``privacy.pii.validators``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from catalogs.vocabulary import PiiType
from privacy.pii import validators as v
from privacy.pii.surnames import name_pattern

HAN = "[\u4e00-\u9fff]"
PROVINCE_CHARS = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTER = "[A-HJ-NP-Z]"
# Mobile number segments in service (MIIT allocations: operators, data-only, virtual).
MOBILE = r"1(?:3[0-9]|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8[0-9]|9[0-35-9])[0-9]{8}"
# Area codes: 010, 02x, then 0 + three digits starting 3-9; local numbers start 2-9.
LANDLINE = r"(?:\(0(?:10|2[0-9]|[3-9][0-9]{2})\)|0(?:10|2[0-9]|[3-9][0-9]{2})-?)[2-9][0-9]{6,7}"
LANDLINE_FULL = rf"^{LANDLINE}(?:-[0-9]{{1,6}})?$"
MOBILE_FULL = rf"^{MOBILE}$"
EMAIL_FULL = r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$"
EMAIL_FIND = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
BANK_CARD_FULL = r"^(?:62|60|4|5|3[457]|9)[0-9]{14,18}$"
PASSPORT_FULL = r"^(?:[EG][0-9]{8}|E[A-HJ-NP-Z][0-9]{7}|[DPS]E?[0-9]{7})$"
PLATE_FULL = (
    rf"^[{PROVINCE_CHARS}]{PLATE_LETTER}"
    rf"(?:[A-HJ-NP-Z0-9]{{4}}[A-HJ-NP-Z0-9挂学警港澳]"
    rf"|[DABCEFGHJK][A-HJ-NP-Z0-9][0-9]{{4}}|[0-9]{{5}}[DABCEFGHJK])$"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_FULL = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"
_H16 = "[0-9A-Fa-f]{1,4}"
IPV6_FULL = (
    rf"^(?:{_H16}(?::{_H16}){{7}}"
    rf"|(?:{_H16}(?::{_H16}){{0,6}})?::(?:{_H16}(?::{_H16}){{0,6}})?)$"
)
DATE_FULL = (
    r"^(?:19|20)[0-9]{2}(?:[-/.年])?(?:0?[1-9]|1[0-2])(?:[-/.月])?"
    r"(?:0?[1-9]|[12][0-9]|3[01])日?(?:[ T]00:00(?::00)?)?$"
)
# An address names an administrative level and a street-level element or a house number,
# and is not the name of an organisation (company names also start with a city).
ADDRESS_ADMIN = r"(?:省|自治区|市|自治州|州|盟|地区|区|县|旗|镇|乡|街道)"
ADDRESS_STREET = (
    r"(?:路|街|大街|大道|巷|胡同|弄|村|屯|社区|小区|花园|家园|新村|公寓|大厦|广场"
    r"|[0-9一二三四五六七八九十百零〇]+(?:号|栋|幢|单元|室|楼|层|组))"
)
ADDRESS_NOT = (
    r"(?:公司|厂|店|行|部|中心|医院|卫生院|诊所|药房|学校|小学|中学|大学|学院|幼儿园|银行"
    r"|局|委员会|委|政府|所|站|馆|社|院|会|处|集团|超市|酒店|宾馆|经销处)$"
)
SENTENCE_PUNCT = r"[，。！？；!?;]"


@dataclass(frozen=True)
class HeaderWords:
    """Header evidence: Chinese substrings, and ASCII words matched as whole tokens
    (pinyin initials such as ``sfzh``, English such as ``id_card``)."""

    zh: tuple[str, ...]
    ascii: tuple[str, ...]


HEADERS: dict[PiiType, HeaderWords] = {
    PiiType.CN_RESIDENT_ID: HeaderWords(
        ("身份证", "身份号码", "证件号", "公民身份", "身份证明"),
        (
            "sfzh",
            "sfzhm",
            "sfz",
            "sfzjhm",
            "zjhm",
            "zjh",
            "gmsfhm",
            "idcard",
            "id_card",
            "idno",
            "id_no",
            "id_number",
            "idnumber",
            "identity",
            "citizen_id",
            "national_id",
            "resident_id",
        ),
    ),
    PiiType.CN_MOBILE: HeaderWords(
        ("手机", "移动电话", "联系电话", "联系方式", "电话", "联系号码"),
        (
            "sjhm",
            "sjh",
            "sj",
            "lxdh",
            "lxfs",
            "dh",
            "mobile",
            "phone",
            "tel",
            "cellphone",
            "cell",
            "telephone",
            "phone_no",
            "mobile_no",
        ),
    ),
    PiiType.CN_PHONE: HeaderWords(
        ("电话", "座机", "固话", "固定电话", "联系电话", "联系方式", "传真"),
        ("lxdh", "dh", "gddh", "zj", "tel", "phone", "telephone", "landline", "fax"),
    ),
    PiiType.EMAIL: HeaderWords(
        ("邮箱", "电子邮件", "邮件"), ("email", "mail", "e_mail", "yx", "dzyx", "yxdz")
    ),
    PiiType.CN_BANK_CARD: HeaderWords(
        ("银行卡", "卡号", "银行账号", "银行账户", "账号", "开户账号"),
        ("yhkh", "yhzh", "kh", "card", "card_no", "bank_card", "bankcard", "account", "acct"),
    ),
    PiiType.CN_USCC: HeaderWords(
        ("统一社会信用代码", "信用代码", "社会信用"),
        ("tyshxydm", "shxydm", "xydm", "uscc", "credit_code"),
    ),
    PiiType.CN_PASSPORT: HeaderWords(("护照",), ("hzhm", "hzh", "hz", "passport", "passport_no")),
    PiiType.CN_LICENSE_PLATE: HeaderWords(
        ("车牌", "号牌", "车辆号码"),
        ("cph", "cphm", "hphm", "plate", "license_plate", "plate_no", "car_no"),
    ),
    PiiType.PERSON_NAME: HeaderWords(
        (
            "姓名",
            "名字",
            "法定代表人",
            "法人代表",
            "联系人",
            "负责人",
            "户主",
            "患者",
            "参保人",
            "申请人",
            "经办人",
            "监护人",
        ),
        (
            "xm",
            "name",
            "full_name",
            "fullname",
            "person_name",
            "contact",
            "fddbr",
            "frdb",
            "lxr",
            "fzr",
            "hzxm",
        ),
    ),
    PiiType.ADDRESS: HeaderWords(
        ("地址", "住址", "住所", "居住地", "户籍地", "所在地", "家庭住址", "通讯地址"),
        ("dz", "zz", "jzdz", "hjdz", "xzz", "zs", "txdz", "address", "addr", "residence"),
    ),
    PiiType.IP_ADDRESS: HeaderWords(
        ("ip地址", "IP地址", "ip"), ("ip", "ipdz", "ip_address", "ip_addr")
    ),
    PiiType.DATE_OF_BIRTH: HeaderWords(
        ("出生", "生日", "出生日期", "出生年月"),
        ("csrq", "csny", "birth", "birthday", "dob", "born", "birth_date", "date_of_birth"),
    ),
}

# Headers that name some other kind of identifier or code: lower the confidence of any
# entity the header does not itself support.
NEGATIVE_HEADER = HeaderWords(
    (
        "单号",
        "订单",
        "流水",
        "编号",
        "条码",
        "条形码",
        "序号",
        "批次",
        "区划",
        "编码",
        "代码",
        "名称",
        "企业",
        "机构",
        "单位",
        "金额",
        "版本",
        "商品",
        "产品",
    ),
    (
        "order",
        "order_no",
        "orderid",
        "serial",
        "sn",
        "barcode",
        "ean",
        "sku",
        "code",
        "batch",
        "seq",
        "lsh",
        "ddh",
        "bh",
        "tm",
        "mc",
        "qymc",
        "company",
        "org",
        "product",
        "version",
        "amount",
    ),
)

# How much a whole-column match rate says on its own (checksummed types say most).
STRENGTH: dict[PiiType, float] = {
    PiiType.CN_RESIDENT_ID: 1.0,
    PiiType.CN_USCC: 1.0,
    PiiType.EMAIL: 1.0,
    PiiType.CN_MOBILE: 0.9,
    PiiType.CN_BANK_CARD: 0.9,
    PiiType.CN_LICENSE_PLATE: 0.9,
    PiiType.IP_ADDRESS: 0.85,
    PiiType.CN_PHONE: 0.85,
    PiiType.ADDRESS: 0.8,
    PiiType.PERSON_NAME: 0.75,
    PiiType.CN_PASSPORT: 0.7,
    PiiType.DATE_OF_BIRTH: 0.9,
}

_SPLIT_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def header_tokens(header: str) -> str:
    """``_``-joined lower-case ASCII tokens of a header, padded: ``"_id_card_"``."""
    ascii_part = _SPLIT_CAMEL.sub("_", header)
    return "_" + _NON_ALNUM.sub("_", ascii_part.lower()).strip("_") + "_"


def header_matches(header: str, words: HeaderWords) -> str | None:
    """The first header word found in ``header``, or None."""
    for w in words.zh:
        if w in header:
            return w
    tokens = header_tokens(header)
    for w in words.ascii:
        if f"_{w}_" in tokens:
            return w
    return None


# -- vectorized whole-value matchers (Rust regex dialect) ----------------------------------


def _compact(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(r"[ \-\u00a0]", "")


def normalize_mobile(expr: pl.Expr) -> pl.Expr:
    """Remove spaces, dashes and brackets and a +86 / 0086 / 86 country prefix."""
    s = expr.str.replace_all(r"[ \-()\u00a0]", "")
    return s.str.replace(r"^(?:\+86|0086|86)(1[0-9]{10})$", "$1")


def is_mobile(expr: pl.Expr) -> pl.Expr:
    return normalize_mobile(expr).str.contains(MOBILE_FULL)


def is_landline(expr: pl.Expr) -> pl.Expr:
    # "+86 417 1234567" drops the trunk 0: the country prefix becomes it again.
    s = expr.str.replace_all(r"[ \u00a0]", "").str.replace(r"^(?:\+86|0086)-?", "0")
    return s.str.contains(LANDLINE_FULL)


def is_resident_id(expr: pl.Expr) -> pl.Expr:
    return v.resident_id_valid(expr)


def is_resident_id_legacy(expr: pl.Expr) -> pl.Expr:
    """15-digit first-generation ID: region, YYMMDD (19xx), sequence; no check digit."""
    s = expr.str.strip_chars()
    year = pl.lit(1900) + s.str.slice(6, 2).str.to_integer(strict=False)
    month = s.str.slice(8, 2).str.to_integer(strict=False)
    day = s.str.slice(10, 2).str.to_integer(strict=False)
    return s.str.contains(r"^[1-8][0-9]{14}$") & v.calendar_date_valid(year, month, day).fill_null(
        False
    )


def is_bank_card(expr: pl.Expr) -> pl.Expr:
    s = _compact(expr)
    return s.str.contains(BANK_CARD_FULL) & v.luhn_valid(s, max_length=19).fill_null(False)


def is_uscc(expr: pl.Expr) -> pl.Expr:
    return v.uscc_valid(expr).fill_null(False) & v.uscc_org_code_valid(expr).fill_null(False)


def is_passport(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.to_uppercase().str.contains(PASSPORT_FULL)


def is_plate(expr: pl.Expr) -> pl.Expr:
    s = expr.str.replace_all(r"[ ·\-\u00b7\u2022]", "").str.to_uppercase()
    return s.str.contains(PLATE_FULL)


def is_email(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.contains(EMAIL_FULL)


def is_ip(expr: pl.Expr) -> pl.Expr:
    s = expr.str.strip_chars()
    return s.str.contains(IPV4_FULL) | s.str.contains(IPV6_FULL)


def is_address(expr: pl.Expr) -> pl.Expr:
    s = expr.str.strip_chars()
    n = s.str.len_chars()
    admin_then_street = s.str.contains(f"{ADDRESS_ADMIN}.*{ADDRESS_STREET}")
    return (
        (n >= 6)
        & (n <= 100)
        & admin_then_street
        & ~s.str.contains(ADDRESS_NOT)
        & ~s.str.contains(SENTENCE_PUNCT)
    )


def is_name_shaped(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.contains(name_pattern())


def is_date_like(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.contains(DATE_FULL)


# Whole-value matchers per entity (PERSON_NAME and DATE_OF_BIRTH get extra column logic).
FULL_MATCH = {
    PiiType.CN_RESIDENT_ID: is_resident_id,
    PiiType.CN_MOBILE: is_mobile,
    PiiType.CN_PHONE: is_landline,
    PiiType.EMAIL: is_email,
    PiiType.CN_BANK_CARD: is_bank_card,
    PiiType.CN_USCC: is_uscc,
    PiiType.CN_PASSPORT: is_passport,
    PiiType.CN_LICENSE_PLATE: is_plate,
    PiiType.PERSON_NAME: is_name_shaped,
    PiiType.ADDRESS: is_address,
    PiiType.IP_ADDRESS: is_ip,
    PiiType.DATE_OF_BIRTH: is_date_like,
}

# -- identifiers inside free text ----------------------------------------------------------

# Tokens extracted from free text: maximal alphanumeric runs (IDs, compact mobiles, cards,
# USCC, passports), separated phone and card forms, e-mails, IPv4, plates. Maximal runs give
# boundaries without look-around: a mobile inside an 18-digit number is not a mobile.
TOKEN_PATTERNS = (
    r"[0-9A-Za-z]+",
    r"(?:\+86|0086)?[ \-]?1[0-9]{2}[ \-][0-9]{4}[ \-][0-9]{4}",
    r"\(?0[0-9]{2,3}\)?-[0-9]{7,8}|\(0[0-9]{2,3}\)[0-9]{7,8}",
    r"[0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}(?:[ \-][0-9]{1,3})?",
    EMAIL_FIND,
    r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}",
    rf"[{PROVINCE_CHARS}][A-Za-z][ ·]?[A-Za-z0-9]{{5,6}}",
)
# Entities found in free text by the vectorized path, and the share of values that makes a
# free-text column count as holding them ("a meaningful share").
FREE_TEXT_ENTITIES: dict[PiiType, float] = {
    PiiType.CN_RESIDENT_ID: 0.05,
    PiiType.CN_MOBILE: 0.05,
    PiiType.CN_PHONE: 0.05,
    PiiType.EMAIL: 0.05,
    PiiType.CN_BANK_CARD: 0.05,
    PiiType.CN_USCC: 0.05,
    PiiType.IP_ADDRESS: 0.05,
    PiiType.CN_LICENSE_PLATE: 0.05,
    PiiType.CN_PASSPORT: 0.10,
}
# Found by the Presidio analyzer on a small sample of free-text values.
FREE_TEXT_NLP_ENTITIES: dict[PiiType, float] = {
    PiiType.PERSON_NAME: 0.20,
    PiiType.ADDRESS: 0.20,
    PiiType.DATE_OF_BIRTH: 0.20,
}


def free_text_tokens(expr: pl.Expr) -> pl.Expr:
    """A list of candidate tokens per value."""
    parts = [expr.str.extract_all(p) for p in TOKEN_PATTERNS]
    return pl.concat_list(parts)


def contains_entity(tokens: pl.Expr, entity: PiiType) -> pl.Expr:
    """True when any token of the list is a valid ``entity``."""
    matcher = FULL_MATCH[entity]
    return tokens.list.eval(matcher(pl.element()).fill_null(False)).list.any()
