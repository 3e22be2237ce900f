"""The one authorization check used by every build and query (一场景一授权, 最小必要).

``authorize`` evaluates every condition and returns all that fail, each with a code and a
one-line reason; it writes one audit entry per call. ``require_authorized`` raises
PermissionDenied listing the reasons. After a pass, the build reads exactly the declared
columns (``shuyu_core.snapshots.scan(..., columns=fields)``), so an undeclared field cannot be
read at all.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from catalogs.agreement_models import (
    Agreement,
    AgreementKind,
    AgreementStatus,
    Blacklist,
    Scenario,
)
from catalogs.catalog import Catalog
from governance.agreements import AgreementSet, load_agreements, load_blacklist
from governance.audit import record
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

FAILURE_CODES = (
    "agreement_unknown",
    "agreement_not_yet_valid",
    "agreement_expired",
    "agreement_suspended",
    "agreement_terminated",
    "developer_mismatch",
    "scenario_not_authorized",
    "purpose_not_authorized",
    "resource_out_of_scope",
    "field_out_of_scope",
    "negative_listed",
    "developer_blacklisted",
    "destination_not_allowed",
    "reversible_not_allowed",
    "product_kind_not_authorized",
    "verification_pair_not_authorized",
    "consent_purpose_not_authorized",
)


class VerifyRequest(BaseModel):
    """One check a verification build asks to run (catalogs.product_models.VerificationCheck)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str
    key_field: str
    name_field: str
    consent_required: bool = True

    def label(self) -> str:
        return f"{self.resource}.{self.key_field}→{self.name_field}"


class AuthorizationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agreement_id: str
    scenario: str
    developer: str | None = None
    inputs: dict[str, list[str]] = Field(
        description="resource code -> the exact fields the build reads"
    )
    purpose: str = Field(description="purpose category: public_good or industry")
    destination: str = "domestic"
    reversible_outputs: bool = False
    at: dt.date = Field(default_factory=dt.date.today)
    # The product kind built (every build and assessment gives it; None: scope check only).
    product_kind: str | None = None
    # Verification builds: the field pairs checked (each must be named by the scenario) and
    # the consent purpose queries are checked against (the scenario's, never another).
    verify: list[VerifyRequest] = Field(default_factory=list)
    consent_purpose: str | None = None


class AuthorizationFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class AuthorizationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    request: AuthorizationRequest
    failures: list[AuthorizationFailure]
    agreement_kind: str | None = None
    parent_agreement: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.failures]

    def reasons(self) -> str:
        return "; ".join(f"{f.code}: {f.message}" for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        """Evidence for the assessment report (JSON-ready)."""
        return {
            "ok": self.ok,
            "agreement": self.request.agreement_id,
            "agreement_kind": self.agreement_kind,
            "parent_agreement": self.parent_agreement,
            "scenario": self.request.scenario,
            "developer": self.request.developer,
            "purpose": self.request.purpose,
            "destination": self.request.destination,
            "at": self.request.at.isoformat(),
            "inputs": self.request.inputs,
            "product_kind": self.request.product_kind,
            "verify": [v.label() for v in self.request.verify],
            "failures": [f.model_dump() for f in self.failures],
        }


def _term_and_status(ag: Agreement, at: dt.date, label: str) -> list[AuthorizationFailure]:
    out: list[AuthorizationFailure] = []
    if at < ag.term.start:
        out.append(
            AuthorizationFailure(
                code="agreement_not_yet_valid",
                message=f"{label} {ag.id} is in force from {ag.term.start}, not on {at}",
            )
        )
    if at > ag.term.end:
        out.append(
            AuthorizationFailure(
                code="agreement_expired",
                message=f"{label} {ag.id} expired on {ag.term.end} (checked for {at})",
            )
        )
    status = ag.status_on(at)
    if status is not AgreementStatus.ACTIVE:
        change = ag.status_change
        why = f" since {change.since}: {change.reason}" if change else ""
        out.append(
            AuthorizationFailure(
                code=f"agreement_{status.value}",
                message=f"{label} {ag.id} is {status.value}{why}",
            )
        )
    return out


def _scope(
    ag: Agreement, req: AuthorizationRequest, catalog: Catalog
) -> list[AuthorizationFailure]:
    out: list[AuthorizationFailure] = []
    scenario = ag.scenario(req.scenario)
    if scenario is None:
        known = ", ".join(s.id for s in ag.scenarios)
        out.append(
            AuthorizationFailure(
                code="scenario_not_authorized",
                message=f"scenario {req.scenario!r} is not authorized by {ag.id} "
                f"(authorized: {known})",
            )
        )
    purposes = scenario.purposes if scenario and scenario.purposes else ag.purposes
    if req.purpose not in purposes:
        out.append(
            AuthorizationFailure(
                code="purpose_not_authorized",
                message=f"purpose {req.purpose!r} is not authorized "
                f"(allowed: {', '.join(purposes)})",
            )
        )
    for code, fields in sorted(req.inputs.items()):
        # The scenario's inputs are the scope (they are a subset of the agreement's
        # resources); without a known scenario, the agreement's resources still bound it.
        scope = scenario.inputs if scenario is not None else ag.resources
        where = f"scenario {req.scenario}" if scenario is not None else f"agreement {ag.id}"
        res = catalog.resources.get(code)
        if code not in scope:
            extra = "" if res is not None else " (and it is not in the catalog)"
            out.append(
                AuthorizationFailure(
                    code="resource_out_of_scope",
                    message=f"resource {code} is outside the scope of {where}{extra}",
                )
            )
            continue
        outside = [f for f in fields if f not in scope[code]]
        if outside:
            out.append(
                AuthorizationFailure(
                    code="field_out_of_scope",
                    message=f"{code} field(s) {', '.join(outside)} are outside the scope of "
                    f"{where} (最小必要: allowed {', '.join(scope[code])})",
                )
            )
    if req.destination not in ag.destinations:
        out.append(
            AuthorizationFailure(
                code="destination_not_allowed",
                message=f"output destination {req.destination!r} is not allowed by {ag.id} "
                f"(allowed: {', '.join(ag.destinations)}; 数据出境 needs explicit agreement)",
            )
        )
    if req.reversible_outputs and not ag.reversible_outputs:
        out.append(
            AuthorizationFailure(
                code="reversible_not_allowed",
                message=f"{ag.id} does not allow outputs reversible to raw values "
                "(不得通过可逆模型或算法还原)",
            )
        )
    return out


def authorized_party(ag: Agreement) -> str:
    """The one party an agreement authorizes to build: a development agreement's developer,
    an operation agreement's grantee (the operator). The grantor grants; it does not build."""
    if ag.kind is AgreementKind.DEVELOPMENT and ag.developer:
        return ag.developer
    return ag.parties.grantee.id


def _party(
    ag: Agreement, req: AuthorizationRequest, agreements: AgreementSet
) -> list[AuthorizationFailure]:
    """The building developer must be the party the agreement authorizes, under every kind.

    Builds and assessments always name the developer (a spec's ``developer`` is required);
    only an agreement-level ``shuyu agreements check`` without ``--developer`` skips this.
    """
    party = authorized_party(ag)
    if req.developer is None or req.developer == party:
        return []
    own = sorted(a.id for a in agreements if authorized_party(a) == req.developer)
    where = f"it is party to {', '.join(own)}" if own else "it is party to no agreement at all"
    message = (
        f"{ag.id} ({ag.kind.value} agreement) authorizes {party}, not developer "
        f"{req.developer} ({where})"
    )
    return [AuthorizationFailure(code="developer_mismatch", message=message)]


def _products(
    label: str, scenario: Scenario, req: AuthorizationRequest
) -> list[AuthorizationFailure]:
    """The scenario authorizes the product kind and, for verification, every checked pair."""
    out: list[AuthorizationFailure] = []
    if req.product_kind is not None and not scenario.allows_kind(req.product_kind):
        out.append(
            AuthorizationFailure(
                code="product_kind_not_authorized",
                message=f"{label} scenario {scenario.id} does not authorize {req.product_kind} "
                f"products (authorized: {', '.join(scenario.products)})",
            )
        )
    if req.verify and req.product_kind != "verification":
        # A request that names pairs is a verification whatever kind it claims.
        out.append(
            AuthorizationFailure(
                code="product_kind_not_authorized",
                message=f"only a verification product checks field pairs, not "
                f"{req.product_kind or 'an unnamed kind'}",
            )
        )
    wanted = scenario.required_consent_purpose
    if req.verify and req.consent_purpose is not None and req.consent_purpose != wanted:
        out.append(
            AuthorizationFailure(
                code="consent_purpose_not_authorized",
                message=f"{label} scenario {scenario.id} checks consents for purpose "
                f"{wanted!r}, not {req.consent_purpose!r}",
            )
        )
    allowed = ", ".join(p.label() for p in scenario.verify) or "none"
    for v in req.verify:
        pair = scenario.verify_pair(v.resource, v.key_field, v.name_field)
        if pair is None:
            out.append(
                AuthorizationFailure(
                    code="verification_pair_not_authorized",
                    message=f"{label} scenario {scenario.id} does not authorize verifying "
                    f"{v.label()} (authorized: {allowed})",
                )
            )
        elif pair.consent_required and not v.consent_required:
            out.append(
                AuthorizationFailure(
                    code="verification_pair_not_authorized",
                    message=f"{label} scenario {scenario.id} requires the data subject's "
                    f"authorization for {v.label()}; a product spec cannot waive it",
                )
            )
    return out


def evaluate(
    request: AuthorizationRequest,
    agreements: AgreementSet,
    catalog: Catalog,
    blacklist: Blacklist,
) -> AuthorizationResult:
    """Every failed condition of ``request`` (pure: no I/O, no audit)."""
    req = request
    failures: list[AuthorizationFailure] = []
    ag = agreements.find(req.agreement_id)
    parent: Agreement | None = None
    if ag is None:
        failures.append(
            AuthorizationFailure(
                code="agreement_unknown",
                message=f"agreement {req.agreement_id!r} does not exist in {agreements.directory}",
            )
        )
    else:
        failures += _term_and_status(ag, req.at, f"{ag.kind.value} agreement")
        if ag.kind is AgreementKind.DEVELOPMENT and ag.parent is not None:
            parent = agreements.find(ag.parent)
            if parent is not None:
                failures += _term_and_status(parent, req.at, "parent operation agreement")
        failures += _party(ag, req, agreements)
        failures += _scope(ag, req, catalog)
        # Product kinds and verify pairs: the agreement's scenario, and the parent operation
        # agreement's scenario of the same id when there is one (a development agreement
        # never reaches beyond its parent).
        for label, owner in ((ag.id, ag), (f"parent {ag.parent}", parent)):
            sc = owner.scenario(req.scenario) if owner is not None else None
            if sc is not None:
                failures += _products(label, sc, req)
    for code in sorted(req.inputs):
        res = catalog.resources.get(code)
        if res is not None and res.negative_list.listed:
            failures.append(
                AuthorizationFailure(
                    code="negative_listed",
                    message=f"resource {code} is on the negative list (负面清单): "
                    f"{res.negative_list.reason}",
                )
            )
    developers = {d for d in (req.developer, ag.developer if ag else None) if d}
    for dev in sorted(developers):
        entry = blacklist.entry_on(dev, req.at)
        if entry is not None:
            failures.append(
                AuthorizationFailure(
                    code="developer_blacklisted",
                    message=f"developer {dev} is blacklisted (黑名单) since {entry.since}: "
                    f"{entry.reason}",
                )
            )
    return AuthorizationResult(
        request=req,
        failures=failures,
        agreement_kind=ag.kind.value if ag else None,
        parent_agreement=parent.id if parent else None,
    )


def authorize(
    home: Home, request: AuthorizationRequest, catalog: Catalog | None = None
) -> AuthorizationResult:
    """Check ``request`` against the agreements, the catalog's negative list and the
    blacklist; return every failure and record one audit entry."""
    cat = catalog or Catalog.load()
    result = evaluate(request, load_agreements(), cat, load_blacklist())
    record(
        home,
        "authorization.check",
        f"{request.agreement_id}/{request.scenario}",
        "ok" if result.ok else "refused",
        {
            "developer": request.developer,
            "purpose": request.purpose,
            "destination": request.destination,
            "reversible_outputs": request.reversible_outputs,
            "at": request.at.isoformat(),
            "inputs": request.inputs,
            "product_kind": request.product_kind,
            "verify": [v.label() for v in request.verify],
            "consent_purpose": request.consent_purpose,
            "failures": [f.model_dump() for f in result.failures],
        },
    )
    return result


def require_authorized(
    home: Home, request: AuthorizationRequest, catalog: Catalog | None = None
) -> AuthorizationResult:
    """``authorize``, raising PermissionDenied (already audited) when anything fails."""
    result = authorize(home, request, catalog)
    if not result.ok:
        exc = PermissionDenied(
            f"authorization refused for scenario {request.scenario} under "
            f"{request.agreement_id}: {result.reasons()}",
            hint="fix the request or the agreement (see 'shuyu agreements show "
            f"{request.agreement_id}')",
        )
        exc.audited = True
        raise exc
    return result
