"""The personal-information vocabulary shared by the catalog, detection and desensitization."""

from __future__ import annotations

from enum import StrEnum


class PiiType(StrEnum):
    CN_RESIDENT_ID = "CN_RESIDENT_ID"
    CN_MOBILE = "CN_MOBILE"
    CN_PHONE = "CN_PHONE"
    EMAIL = "EMAIL"
    CN_BANK_CARD = "CN_BANK_CARD"
    CN_USCC = "CN_USCC"
    CN_PASSPORT = "CN_PASSPORT"
    CN_LICENSE_PLATE = "CN_LICENSE_PLATE"
    PERSON_NAME = "PERSON_NAME"
    ADDRESS = "ADDRESS"
    IP_ADDRESS = "IP_ADDRESS"
    DATE_OF_BIRTH = "DATE_OF_BIRTH"


class Sensitivity(StrEnum):
    """none / personal information (个人信息) / sensitive personal information (敏感个人信息)."""

    NONE = "none"
    PERSONAL = "personal"
    SENSITIVE_PERSONAL = "sensitive_personal"


class Grade(StrEnum):
    """Classification grade per GB/T 43697-2024: 一般 general, 重要 important, 核心 core."""

    GENERAL = "一般"
    IMPORTANT = "重要"
    CORE = "核心"


class SharingAttribute(StrEnum):
    """共享属性: unconditional, conditional, not shared."""

    UNCONDITIONAL = "无条件共享"
    CONDITIONAL = "有条件共享"
    NOT_SHARED = "不予共享"


class OpenAttribute(StrEnum):
    """开放属性: unconditional, conditional, not open."""

    UNCONDITIONAL = "无条件开放"
    CONDITIONAL = "有条件开放"
    NOT_OPEN = "不予开放"


class UpdateFrequency(StrEnum):
    REALTIME = "realtime"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"

    @property
    def max_age_days(self) -> int:
        """How old a snapshot may be before it counts as stale (时效性)."""
        return {
            "realtime": 1,
            "daily": 2,
            "weekly": 8,
            "monthly": 35,
            "quarterly": 95,
            "yearly": 370,
        }[self.value]
