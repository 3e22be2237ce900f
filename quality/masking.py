"""Masking of the few sample values a quality report shows (never raw personal values).

Only a handful of offending values per rule reach this module (the check keeps at most
``SAMPLES`` per rule), so plain Python per value is fine here. Any field that carries a
PII type or a sensitivity is masked; other fields (amounts, codes, months) are shown as they
are, cut to 40 characters.
"""

from __future__ import annotations

import datetime as dt

from catalogs.models import FieldSpec
from catalogs.vocabulary import PiiType, Sensitivity

SAMPLES = 5


def _keep(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail:
        return "*" * len(text)
    return text[:head] + "*" * (len(text) - head - tail) + (text[-tail:] if tail else "")


def mask_value(spec: FieldSpec | None, value: object) -> str | None:
    """A display form of ``value`` that does not reveal personal information."""
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)
    if spec is None:
        return text[:40]
    pii = spec.pii_type
    if pii == PiiType.CN_RESIDENT_ID or pii == PiiType.CN_PASSPORT:
        # region prefix and the last two characters (the sex digit's neighbour and the check
        # character) help a source unit find the record; birth date and sequence stay hidden
        return _keep(text, 6, 2)
    if pii in (PiiType.CN_MOBILE, PiiType.CN_PHONE):
        return _keep(text, 3, 4)
    if pii == PiiType.CN_BANK_CARD:
        return _keep(text, 4, 4)
    if pii == PiiType.CN_USCC:
        return _keep(text, 8, 2)
    if pii == PiiType.PERSON_NAME:
        return text[:1] + "*" * max(len(text) - 1, 1)
    if pii == PiiType.EMAIL:
        local, _, domain = text.partition("@")
        return (local[:1] + "***@" + domain) if domain else _keep(text, 1, 0)
    if pii == PiiType.DATE_OF_BIRTH:
        return text[:4] + "-**-**" if len(text) >= 4 else "****"
    if pii == PiiType.ADDRESS:
        return text[:6] + "***"
    if pii is not None or spec.sensitivity != Sensitivity.NONE:
        return "***（敏感 sensitive）"
    return text[:40]
