"""Privacy floors of the domain policy (``privacy_floors`` in catalogs/domain_policy.yaml).

Floors are set by the domain (an ``admin`` applies the policy, audited) and bind every product
spec: a spec may ask for *more* protection, never less. Builds refuse a spec below a floor
before anything is charged or drawn (``products.floors``), and the pre-release assessment
measures every value again and shows the floor beside it (``assessment.checks``).

The mask floors describe, per PII type, what a mask may keep in clear (positions counted from
the start and the end of the value) and what a record-level product may do with the column at
all. docs/pii.md ("Mask floors") justifies the shipped defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from catalogs.vocabulary import PiiType

RecordTreatment = Literal["remove", "mask", "keep"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaskFloor(_Strict):
    """What a record-level product may do with one identifier type.

    ``records``: the weakest treatment allowed — ``remove`` (pseudonymize with HMAC-SM3 or
    drop the column), ``mask`` (also a mask within ``max_head``/``max_tail``), ``keep``.
    ``max_head`` / ``max_tail``: characters a mask may keep in clear at the start / end.
    """

    records: RecordTreatment = "remove"
    max_head: int = Field(default=0, ge=0)
    max_tail: int = Field(default=0, ge=0)


def _default_masks() -> dict[PiiType, MaskFloor]:
    return {
        # the 6-digit region only: birth digits, sex digit and check character stay hidden
        PiiType.CN_RESIDENT_ID: MaskFloor(records="remove", max_head=6, max_tail=0),
        PiiType.CN_MOBILE: MaskFloor(records="mask", max_head=3, max_tail=2),
        PiiType.CN_PHONE: MaskFloor(records="mask", max_head=4, max_tail=2),
        PiiType.CN_BANK_CARD: MaskFloor(records="mask", max_head=0, max_tail=4),
        PiiType.CN_USCC: MaskFloor(records="keep", max_head=8, max_tail=0),
        PiiType.CN_PASSPORT: MaskFloor(records="remove", max_head=1, max_tail=0),
        PiiType.CN_LICENSE_PLATE: MaskFloor(records="mask", max_head=2, max_tail=0),
        PiiType.PERSON_NAME: MaskFloor(records="remove", max_head=0, max_tail=0),
        PiiType.EMAIL: MaskFloor(records="remove", max_head=1, max_tail=0),
        PiiType.ADDRESS: MaskFloor(records="mask"),
        PiiType.IP_ADDRESS: MaskFloor(records="mask"),
        PiiType.DATE_OF_BIRTH: MaskFloor(records="mask"),
    }


class PrivacyFloors(_Strict):
    """Floors no product spec can lower (see the module doc)."""

    max_rho_per_release: float = Field(default=1.0, gt=0, description="zCDP ρ of one release")
    max_epsilon_per_release: float = Field(
        default=10.0, gt=0, description="ε of one release at the spec's δ"
    )
    max_delta: float = Field(default=1e-6, gt=0, lt=1e-3, description="largest δ a spec may use")
    max_rho_per_unit_year: float = Field(
        default=2.0,
        gt=0,
        description="ρ per privacy unit (e.g. 公民身份号码) per calendar year, over every "
        "release of every resource that shares the unit",
    )
    min_k: int = Field(default=5, ge=2)
    min_l: int = Field(default=2, ge=1, description="distinct sensitive values per class")
    min_suppression_threshold: float = Field(default=5.0, ge=0)
    min_mask_candidates: int = Field(
        default=10_000,
        ge=1,
        description="a masked identifier must leave at least this many candidate values "
        "after its kept characters, check character and structure are used",
    )
    max_literal_keys: int = Field(
        default=50, ge=1, description="largest literal values: list of a dimension"
    )
    max_quantile_candidates: int = Field(
        default=100, ge=2, description="candidates one DP quantile may choose from"
    )
    masks: dict[PiiType, MaskFloor] = Field(default_factory=_default_masks)

    def mask_floor(self, pii_type: PiiType) -> MaskFloor:
        """The floor of a type; a type the policy does not list may only be removed."""
        return self.masks.get(pii_type, MaskFloor())
