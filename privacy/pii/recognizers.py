"""Presidio recognizers for the Chinese personal-information vocabulary (language ``zh``).

Pattern recognizers find candidates with Python regexes (look-around gives the boundaries
that Chinese text lacks: no spaces between a word and a number) and confirm them with the
same check-digit validators the vectorized scanner uses. ``PERSON_NAME`` is offline: jieba's
segmenter tags person names (``nr``), and the surname table keeps only tokens that start with
a known surname. ``DATE_OF_BIRTH`` starts below the analyzer's threshold and needs context
words (出生, 生日, birth) nearby to count.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cache
from typing import Any

from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts

from catalogs.vocabulary import PiiType
from privacy.pii import entities as E
from privacy.pii import segmenter
from privacy.pii import validators as V
from privacy.pii.surnames import COMPOUND, single_set

LANGUAGE = "zh"
_L = r"(?<![0-9A-Za-z])"
_R = r"(?![0-9A-Za-z])"
_LD = r"(?<![0-9])"
_RD = r"(?![0-9])"
_MOBILE_SPLIT = r"1(?:3[0-9]|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8[0-9]|9[0-35-9])"


def _context(entity: PiiType) -> list[str]:
    words = E.HEADERS[entity]
    return [*words.zh, *words.ascii]


class _Validated(PatternRecognizer):
    """A pattern recognizer whose matches must pass ``check`` (a scalar validator)."""

    ENTITY: PiiType
    PATTERNS: tuple[tuple[str, str, float], ...]

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY.value,
            patterns=[Pattern(n, r, s) for n, r, s in self.PATTERNS],
            context=_context(self.ENTITY),
            supported_language=LANGUAGE,
            name=f"Shuyu{self.ENTITY.value.title().replace('_', '')}Recognizer",
        )

    def check(self, text: str) -> bool | None:
        return None

    def validate_result(self, pattern_text: str) -> bool | None:
        return self.check(pattern_text)


class ResidentIdRecognizer(_Validated):
    ENTITY = PiiType.CN_RESIDENT_ID
    PATTERNS = (
        (
            "ric18",
            _L
            + r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])[0-3][0-9][0-9]{3}[0-9Xx]"
            + _R,
            0.5,
        ),
    )

    def check(self, text: str) -> bool | None:
        return V.resident_id_valid_scalar(text)


class MobileRecognizer(_Validated):
    ENTITY = PiiType.CN_MOBILE
    PATTERNS = (
        (
            "mobile",
            _LD
            + r"(?:(?:\+|00)?86[ \-]?)?"
            + _MOBILE_SPLIT
            + r"[ \-]?[0-9]{4}[ \-]?[0-9]{4}"
            + _RD,
            0.6,
        ),
    )

    def check(self, text: str) -> bool | None:
        digits = re.sub(r"[ \-]", "", text)
        digits = re.sub(r"^(?:\+86|0086|86)(1[0-9]{10})$", r"\1", digits)
        return re.fullmatch(E.MOBILE, digits) is not None


class PhoneRecognizer(_Validated):
    ENTITY = PiiType.CN_PHONE
    PATTERNS = (("landline", _LD + E.LANDLINE + r"(?:-[0-9]{1,6})?" + _RD, 0.5),)

    def check(self, text: str) -> bool | None:
        return re.fullmatch(E.LANDLINE_FULL, text) is not None


class EmailRecognizer(_Validated):
    ENTITY = PiiType.EMAIL
    PATTERNS = (("email", r"(?<![A-Za-z0-9._%+\-])" + E.EMAIL_FIND, 0.7),)

    def check(self, text: str) -> bool | None:
        return re.fullmatch(E.EMAIL_FULL, text) is not None


class BankCardRecognizer(_Validated):
    ENTITY = PiiType.CN_BANK_CARD
    PATTERNS = (
        (
            "card",
            _LD + r"(?:62|60|4|5|3[457]|9)[0-9]{2}(?:[ \-]?[0-9]{4}){3}(?:[ \-]?[0-9]{1,3})?" + _RD,
            0.3,
        ),
    )

    def check(self, text: str) -> bool | None:
        digits = re.sub(r"[ \-]", "", text)
        if V.resident_id_valid_scalar(digits):
            return False  # an ID number is reported as such, not also as a card
        return re.fullmatch(E.BANK_CARD_FULL, digits) is not None and V.luhn_valid_scalar(digits)


class UsccRecognizer(_Validated):
    ENTITY = PiiType.CN_USCC
    PATTERNS = (("uscc", _L + r"[0-9]{8}[0-9A-HJ-NPQRTUWXY]{10}" + _R, 0.5),)

    def check(self, text: str) -> bool | None:
        return V.uscc_valid_scalar(text) and V.uscc_org_code_valid_scalar(text)


class PassportRecognizer(_Validated):
    ENTITY = PiiType.CN_PASSPORT
    PATTERNS = (("passport", _L + r"(?:[EG][0-9]{8}|E[A-HJ-NP-Z][0-9]{7})" + _R, 0.3),)


class LicensePlateRecognizer(_Validated):
    ENTITY = PiiType.CN_LICENSE_PLATE
    PATTERNS = (
        (
            "plate",
            rf"[{E.PROVINCE_CHARS}][A-HJ-NP-Z][ ·]?"
            r"(?:[DABCEFGHJK][A-HJ-NP-Z0-9][0-9]{4}|[0-9]{5}[DABCEFGHJK]"
            r"|[A-HJ-NP-Z0-9]{4}[A-HJ-NP-Z0-9挂学警港澳])" + _R,
            0.6,
        ),
    )

    def check(self, text: str) -> bool | None:
        return re.fullmatch(E.PLATE_FULL, re.sub(r"[ ·]", "", text)) is not None


class IpRecognizer(_Validated):
    ENTITY = PiiType.IP_ADDRESS
    PATTERNS = (
        ("ipv4", r"(?<![0-9.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9.])", 0.5),
        (
            "ipv6",
            r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])",
            0.4,
        ),
    )

    def check(self, text: str) -> bool | None:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return False
        return True


class DateOfBirthRecognizer(_Validated):
    """A date is a birth date only in context: base score below the analyzer threshold."""

    ENTITY = PiiType.DATE_OF_BIRTH
    PATTERNS = (
        (
            "date",
            _LD
            + r"(?:19|20)[0-9]{2}(?:[-/.]|年)(?:0?[1-9]|1[0-2])(?:[-/.]|月)"
            + r"(?:0?[1-9]|[12][0-9]|3[01])日?"
            + _RD,
            0.1,
        ),
        (
            "date8",
            _LD + r"(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])" + _RD,
            0.05,
        ),
    )


class AddressRecognizer(_Validated):
    ENTITY = PiiType.ADDRESS
    PATTERNS = (
        (
            "address",
            rf"{E.HAN}{{2,12}}?(?:省|自治区|市|自治州|地区|区|县|旗)"
            rf"(?:{E.HAN}|[0-9]){{0,30}}?(?:路|街|大道|巷|胡同|弄|村|屯|镇|乡)"
            rf"(?:[0-9一二三四五六七八九十百零〇]+(?:号|栋|幢|单元|室|楼|层|组)"
            rf"|{E.HAN}{{1,8}}?(?:小区|花园|家园|新村|公寓|大厦))+",
            0.6,
        ),
    )

    def check(self, text: str) -> bool | None:
        # An organisation's name is not an address; otherwise keep the pattern's score.
        return None if re.search(E.ADDRESS_NOT, text) is None else False


@cache
def _jieba_posseg() -> Any:
    return segmenter.posseg()


_NAME_FLAGS = ("nr", "nrfg", "nrt")


def starts_with_surname(word: str) -> bool:
    return word[:2] in COMPOUND or word[:1] in single_set()


class PersonNameRecognizer(LocalRecognizer):
    """Person names from jieba's person tags, kept when they start with a known surname."""

    NAME = "ShuyuPersonNameRecognizer"

    def __init__(self) -> None:
        super().__init__(
            supported_entities=[PiiType.PERSON_NAME.value],
            supported_language=LANGUAGE,
            context=_context(PiiType.PERSON_NAME),
            name=self.NAME,
        )

    def load(self) -> None:
        _jieba_posseg()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if entities and PiiType.PERSON_NAME.value not in entities:
            return []
        results: list[RecognizerResult] = []
        pos = 0
        for pair in _jieba_posseg().cut(text):
            word, flag = pair.word, pair.flag
            start = text.find(word, pos)
            if start < 0:
                continue
            pos = start + len(word)
            if flag not in _NAME_FLAGS or not 2 <= len(word) <= 4:
                continue
            if not starts_with_surname(word):
                continue
            explanation = AnalysisExplanation(
                recognizer=self.NAME,
                original_score=0.6,
                textual_explanation=f"jieba tag {flag}, known surname {word[:1]}",
            )
            results.append(
                RecognizerResult(
                    PiiType.PERSON_NAME.value,
                    start,
                    pos,
                    0.6,
                    analysis_explanation=explanation,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                )
            )
        return results


def all_recognizers() -> list[EntityRecognizer]:
    """One recognizer per vocabulary entity."""
    return [
        ResidentIdRecognizer(),
        MobileRecognizer(),
        PhoneRecognizer(),
        EmailRecognizer(),
        BankCardRecognizer(),
        UsccRecognizer(),
        PassportRecognizer(),
        LicensePlateRecognizer(),
        IpRecognizer(),
        DateOfBirthRecognizer(),
        AddressRecognizer(),
        PersonNameRecognizer(),
    ]
