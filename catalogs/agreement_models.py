"""Typed models of agreements (授权运营协议 / 开发利用协议), their scenarios and the blacklist.

One YAML file per agreement under ``catalogs/agreements/`` (overridable with
``SHUYU_AGREEMENTS``) and one ``catalogs/blacklist.yaml`` (``SHUYU_BLACKLIST``). docs/governance.md
shows an annotated example. Cross-checks against the resource catalog (fields exist, nothing
negative-listed) live in ``governance.agreements.validate_against_catalog`` because the catalog
can change after an agreement is signed.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PurposeCategory = Literal["public_good", "industry"]
# The product kinds of catalogs.product_models (kept literal here: agreements do not import specs).
ProductKind = Literal["statistical_report", "index", "verification", "desensitized_dataset"]
# What a scenario that does not list its product kinds allows: aggregate releases only. Record-
# level extracts and verification answer about persons, so a scenario must name them explicitly
# (a verification scenario also names the field pairs it may verify).
DEFAULT_PRODUCT_KINDS: tuple[ProductKind, ...] = ("statistical_report", "index")

# Term limits from the seeds: operation agreements at most 5 years (Jilin art. 17, Yunnan),
# development agreements at most 3 years (Zhenjiang art. 8, Yunnan).
MAX_TERM_YEARS = {"operation": 5, "development": 3}

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DESTINATION = re.compile(r"^(domestic|[A-Z]{2}(-[A-Z0-9]{1,3})?)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgreementKind(StrEnum):
    """operation: 实施机构 ↔ 运营机构; development: 运营机构 ↔ 开发主体."""

    OPERATION = "operation"
    DEVELOPMENT = "development"


class AgreementStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class Party(Strict):
    id: str = Field(pattern=_ID)
    name: str
    role: Literal["实施机构", "运营机构", "开发主体"]


class Parties(Strict):
    grantor: Party
    grantee: Party


class Term(Strict):
    start: dt.date
    end: dt.date = Field(description="last day on which the agreement is in force (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> Term:
        if self.end < self.start:
            raise ValueError(f"term ends ({self.end}) before it starts ({self.start})")
        return self

    def years_limit_end(self, years: int) -> dt.date:
        """The last allowed end date for a term of at most ``years`` years."""
        try:
            anniversary = self.start.replace(year=self.start.year + years)
        except ValueError:  # 29 February
            anniversary = self.start.replace(year=self.start.year + years, day=28)
        return anniversary - dt.timedelta(days=1)


Scope = dict[str, list[str]]


def _check_scope(scope: Scope, what: str) -> Scope:
    for code, fields in scope.items():
        if not fields:
            raise ValueError(f"{what} {code} lists no fields")
        dupes = sorted({f for f in fields if fields.count(f) > 1})
        if dupes:
            raise ValueError(f"{what} {code} lists {', '.join(dupes)} twice")
    return scope


class VerifyPair(Strict):
    """One check a verification scenario allows: the attribute ``name_field`` of the record
    identified by ``key_field`` in ``resource`` may be confirmed or denied, nothing else."""

    resource: str
    key_field: str = Field(description="the identifier looked up (ID number, USCC)")
    name_field: str = Field(description="the one attribute verified against it (a name)")
    consent_required: bool = Field(
        default=True,
        description="each query needs the data subject's authorization (信息主体授权); only the "
        "scenario, never a product spec, may waive it (e.g. for registration data of enterprises)",
    )

    @model_validator(mode="after")
    def _distinct(self) -> VerifyPair:
        if self.key_field == self.name_field:
            raise ValueError(f"verify pair on {self.resource}: key_field equals name_field")
        return self

    def label(self) -> str:
        return f"{self.resource}.{self.key_field}→{self.name_field}"


class Scenario(Strict):
    """One application scenario (一场景一授权): what it may read, for which purposes, which
    product kinds it may produce and (verification) which field pairs it may verify."""

    id: str = Field(pattern=_ID)
    name: str
    description: str = ""
    purposes: list[PurposeCategory] | None = Field(
        default=None, description="narrows the agreement's purposes for this scenario"
    )
    inputs: Scope = Field(description="resource code -> the exact fields this scenario may read")
    products: list[ProductKind] = Field(
        default_factory=lambda: list(DEFAULT_PRODUCT_KINDS),
        min_length=1,
        description="product kinds this scenario authorizes (default: aggregate kinds only)",
    )
    verify: list[VerifyPair] = Field(
        default_factory=list,
        description="verification scenarios: the only field pairs a verification may check",
    )
    consent_purpose: str | None = Field(
        default=None,
        min_length=1,
        description="verification scenarios: the purpose a subject's authorization must name "
        "(default: the scenario id); a product spec cannot pick another",
    )

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: Scope) -> Scope:
        if not v:
            raise ValueError("a scenario must declare at least one input resource")
        return _check_scope(v, "input")

    @model_validator(mode="after")
    def _kinds_and_pairs(self) -> Scenario:
        _unique_list(list(self.products), f"scenario {self.id} product kind(s)")
        verifies = "verification" in self.products
        if verifies and not self.verify:
            raise ValueError(
                f"scenario {self.id} authorizes verification but names no field pair (verify:)"
            )
        if self.verify and not verifies:
            raise ValueError(
                f"scenario {self.id} names verify pairs but does not list product kind verification"
            )
        _unique_list([p.label() for p in self.verify], f"scenario {self.id} verify pair(s)")
        for pair in self.verify:
            fields = self.inputs.get(pair.resource, [])
            missing = [f for f in (pair.key_field, pair.name_field) if f not in fields]
            if missing:
                raise ValueError(
                    f"scenario {self.id} verifies {pair.label()} but does not read "
                    f"{pair.resource} field(s) {', '.join(missing)}"
                )
        return self

    @property
    def required_consent_purpose(self) -> str:
        return self.consent_purpose or self.id

    def allows_kind(self, kind: str) -> bool:
        return kind in self.products

    def verify_pair(self, resource: str, key_field: str, name_field: str) -> VerifyPair | None:
        return next(
            (
                p
                for p in self.verify
                if (p.resource, p.key_field, p.name_field) == (resource, key_field, name_field)
            ),
            None,
        )


def _unique_list(values: list[str], what: str) -> None:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} {', '.join(dupes)} listed twice")


class StatusChange(Strict):
    """Why and since when the agreement has its current status."""

    since: dt.date
    reason: str


class Agreement(Strict):
    id: str = Field(pattern=_ID)
    kind: AgreementKind
    title: str
    parties: Parties
    parent: str | None = Field(
        default=None, description="development agreements: the operation agreement they rest on"
    )
    developer: str | None = Field(
        default=None, pattern=_ID, description="development agreements: the developer id"
    )
    term: Term
    status: AgreementStatus = AgreementStatus.ACTIVE
    status_change: StatusChange | None = None
    purposes: list[PurposeCategory] = Field(min_length=1)
    destinations: list[str] = Field(
        default_factory=lambda: ["domestic"],
        description="allowed output destinations: domestic, or ISO country/region codes",
    )
    reversible_outputs: bool = Field(
        default=False, description="whether outputs reversible to raw values (SM4) are allowed"
    )
    resources: Scope = Field(description="authorized resources: code -> authorized fields")
    scenarios: list[Scenario] = Field(min_length=1)

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: Scope) -> Scope:
        if not v:
            raise ValueError("an agreement must authorize at least one resource")
        return _check_scope(v, "resource")

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not _DESTINATION.match(d)]
        if bad:
            raise ValueError(
                f"unknown destination(s) {', '.join(bad)}: use domestic or a country/region "
                "code such as HK"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        limit = MAX_TERM_YEARS[self.kind.value]
        last = self.term.years_limit_end(limit)
        if self.term.end > last:
            raise ValueError(
                f"term {self.term.start}..{self.term.end} is longer than {limit} years, the "
                f"limit for a {self.kind.value} agreement (latest end {last})"
            )
        want = (
            ("实施机构", "运营机构")
            if self.kind is AgreementKind.OPERATION
            else ("运营机构", "开发主体")
        )
        got = (self.parties.grantor.role, self.parties.grantee.role)
        if got != want:
            raise ValueError(
                f"a {self.kind.value} agreement is between {want[0]} and {want[1]}, not "
                f"{got[0]} and {got[1]}"
            )
        if self.kind is AgreementKind.DEVELOPMENT:
            if not self.developer or not self.parent:
                raise ValueError("a development agreement names its developer and its parent")
        elif self.developer or self.parent:
            raise ValueError("an operation agreement has no developer and no parent")
        if self.status is not AgreementStatus.ACTIVE and self.status_change is None:
            raise ValueError(f"status {self.status.value} needs a status_change (since, reason)")
        ids = [s.id for s in self.scenarios]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"scenario(s) {', '.join(dupes)} declared twice")
        for s in self.scenarios:
            for code, fields in s.inputs.items():
                allowed = self.resources.get(code)
                if allowed is None:
                    raise ValueError(
                        f"scenario {s.id} reads {code}, which the agreement does not authorize"
                    )
                extra = [f for f in fields if f not in allowed]
                if extra:
                    raise ValueError(
                        f"scenario {s.id} reads {code} field(s) {', '.join(extra)} outside the "
                        "agreement's resources"
                    )
            if s.purposes:
                extra_p = [p for p in s.purposes if p not in self.purposes]
                if extra_p:
                    raise ValueError(
                        f"scenario {s.id} purpose(s) {', '.join(extra_p)} are not among the "
                        "agreement's purposes"
                    )
        return self

    def scenario(self, scenario_id: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.id == scenario_id), None)

    def status_on(self, at: dt.date) -> AgreementStatus:
        """The status in force on ``at``: a suspension or termination counts from its date."""
        if self.status_change is not None and at < self.status_change.since:
            return AgreementStatus.ACTIVE
        return self.status


class BlacklistEntry(Strict):
    """黑名单: a developer barred from development (Yunnan: 运营机构应…建立黑名单制度)."""

    developer: str = Field(pattern=_ID)
    name: str
    reason: str = Field(min_length=1)
    since: dt.date
    until: dt.date | None = Field(default=None, description="end of the bar; none = indefinite")

    @model_validator(mode="after")
    def _ordered(self) -> BlacklistEntry:
        if self.until is not None and self.until < self.since:
            raise ValueError(f"blacklist entry {self.developer}: until is before since")
        return self

    def in_force(self, at: dt.date) -> bool:
        return self.since <= at and (self.until is None or at <= self.until)


class Blacklist(Strict):
    entries: list[BlacklistEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Blacklist:
        ids = [e.developer for e in self.entries]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"developer(s) {', '.join(dupes)} listed twice")
        return self

    def entry_on(self, developer: str, at: dt.date) -> BlacklistEntry | None:
        return next((e for e in self.entries if e.developer == developer and e.in_force(at)), None)
