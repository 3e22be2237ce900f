"""The authorization call site of every build (governance.authorization, 一场景一授权)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from governance.authorization import AuthorizationRequest, VerifyRequest, require_authorized
from shuyu_core.home import Home


def verify_requests(spec: ProductSpec) -> list[VerifyRequest]:
    """The field pairs a verification spec checks (empty for every other kind)."""
    if spec.verification is None:
        return []
    return [
        VerifyRequest(
            resource=c.resource,
            key_field=c.key_field,
            name_field=c.name_field,
            consent_required=c.consent_required,
        )
        for c in spec.verification.checks
    ]


def request_for(
    spec: ProductSpec, at: dt.date, reversible_outputs: bool = False
) -> AuthorizationRequest:
    return AuthorizationRequest(
        agreement_id=spec.agreement_id,
        scenario=spec.scenario,
        developer=spec.developer,
        inputs=spec.declared_fields,
        purpose=spec.purpose_category,
        destination=spec.destination,
        reversible_outputs=reversible_outputs,
        at=at,
        product_kind=spec.kind,
        verify=verify_requests(spec),
        consent_purpose=spec.verification.consent_purpose if spec.verification else None,
    )


def require_build_authorized(
    home: Home,
    spec: ProductSpec,
    at: dt.date,
    catalog: Catalog | None = None,
    reversible_outputs: bool = False,
) -> dict[str, Any]:
    """Raise PermissionDenied (audited by governance) unless the build is authorized.

    Returns the authorization evidence for the release manifest.
    """
    result = require_authorized(home, request_for(spec, at, reversible_outputs), catalog)
    return result.to_dict()
