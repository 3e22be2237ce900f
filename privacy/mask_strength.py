"""How much of an identifier a mask leaves, and whether the rest can be worked out.

A mask is judged by its *parameters*, not by its output: the characters it keeps in clear
(positions from the start and the end of the value) and how many values remain possible once
the kept characters, the check character and the structure of the identifier are used. The
resident-ID mask that keeps region, birth date, sequence and check character hides only the
sex digit, and the check character (GB 11643) gives it back: one candidate, recoverable.

``candidates`` is a count of possible originals per masked value (structure-aware but
approximate: every county-level region code, every birth date of a century, …); a mask is
*recoverable* when that count is below the domain policy's ``min_mask_candidates``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalogs.vocabulary import PiiType

# Resident ID (GB 11643): region 1-6, birth date 7-14, sequence 15-16, sex 17, check 18.
_RIC_SEGMENTS: tuple[tuple[str, range, float], ...] = (
    ("region", range(0, 6), 3_500.0),  # county-level codes (GB/T 2260, incl. historic ones)
    ("birth", range(6, 14), 36_525.0),  # birth dates over a century
    ("sequence", range(14, 16), 100.0),
    ("sex", range(16, 17), 10.0),
)
_RIC_CHECK = 17

# Per identifier type: value length, alphabet size per hidden character, and the position of
# a check character (None: no check character) with the number of values it tells apart.
_SHAPES: dict[PiiType, tuple[int, float, int | None, float]] = {
    PiiType.CN_MOBILE: (11, 10.0, None, 1.0),
    PiiType.CN_BANK_CARD: (16, 10.0, 15, 10.0),  # Luhn digit last; 16 is the shortest
    PiiType.CN_USCC: (18, 31.0, 17, 31.0),  # GB 32100 check character last
    PiiType.CN_PASSPORT: (9, 10.0, None, 1.0),
    PiiType.CN_LICENSE_PLATE: (7, 34.0, None, 1.0),
    PiiType.CN_PHONE: (12, 10.0, None, 1.0),  # area code with trunk 0 + 7-8 digit number
}
# Characters a type's mask keeps by convention (transforms.operators.KEPT_ENDS), and the
# fixed conventions of types whose mask takes no head/tail parameters.
_FIXED_ENDS: dict[PiiType, tuple[int, int]] = {
    PiiType.CN_PHONE: (4, 2),
    PiiType.EMAIL: (1, 0),  # first character of the local part (and the domain)
    PiiType.PERSON_NAME: (1, 0),  # the surname
}


@dataclass(frozen=True)
class MaskStrength:
    pii_type: PiiType
    length: int | None  # None: a type without a positional model (address, date, IP)
    kept: frozenset[int]
    candidates: float | None

    @property
    def kept_count(self) -> int:
        return len(self.kept)

    def kept_head(self) -> int:
        n = 0
        while n in self.kept:
            n += 1
        return n

    def outside(self, max_head: int, max_tail: int) -> list[int]:
        """Kept positions (0-based) that are neither in the first ``max_head`` nor in the
        last ``max_tail`` characters."""
        if self.length is None:
            return []
        allowed = set(range(max_head)) | set(range(self.length - max_tail, self.length))
        return sorted(p for p in self.kept if p not in allowed)

    def describe(self) -> str:
        if self.length is None:
            return f"{self.pii_type.value}: mask by convention"
        shown = "".join("x" if p in self.kept else "*" for p in range(self.length))
        cand = f"{self.candidates:.3g}" if self.candidates is not None else "n/a"
        kept = f"{self.kept_count} of {self.length} kept"
        return f"{self.pii_type.value} {shown} ({kept}, {cand} candidates)"


def _resident_id(params: dict[str, Any]) -> MaskStrength:
    keep = {
        "region": bool(params.get("keep_region", False)),
        "birth": bool(params.get("keep_birth", False)),
        "sequence": bool(params.get("keep_sequence", True)),
        "sex": bool(params.get("keep_sex", False)),
    }
    kept: set[int] = set()
    candidates = 1.0
    for name, positions, size in _RIC_SEGMENTS:
        if keep[name]:
            kept.update(positions)
        else:
            candidates *= size
    if bool(params.get("keep_check", True)):
        kept.add(_RIC_CHECK)
        if candidates > 1:
            candidates /= 11.0  # the check character rules out 10 of every 11 candidates
    return MaskStrength(PiiType.CN_RESIDENT_ID, 18, frozenset(kept), max(candidates, 1.0))


def mask_strength(pii_type: PiiType, params: dict[str, Any]) -> MaskStrength:
    """What ``mask`` with ``params`` keeps of a ``pii_type`` value (see the module doc)."""
    from transforms.operators import KEPT_ENDS

    if pii_type == PiiType.CN_RESIDENT_ID:
        return _resident_id(params)
    if pii_type in KEPT_ENDS or pii_type in _FIXED_ENDS:
        d_head, d_tail = KEPT_ENDS.get(pii_type) or _FIXED_ENDS[pii_type]
        head = int(params.get("keep_head", d_head)) if pii_type in KEPT_ENDS else d_head
        tail = int(params.get("keep_tail", d_tail)) if pii_type in KEPT_ENDS else d_tail
        shape = _SHAPES.get(pii_type)
        if shape is None:
            return MaskStrength(pii_type, None, frozenset(range(head)), None)
        length, alphabet, check_at, check_values = shape
        kept = set(range(min(head, length))) | set(range(max(length - tail, 0), length))
        hidden = length - len(kept)
        candidates = alphabet**hidden
        if check_at is not None and check_at in kept and hidden > 0:
            candidates /= check_values
        if check_at is not None and check_at not in kept and hidden > 0:
            candidates /= alphabet  # a hidden check character is determined by the others
        return MaskStrength(pii_type, length, frozenset(kept), max(candidates, 1.0))
    return MaskStrength(pii_type, None, frozenset(), None)
