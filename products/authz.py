"""The authorization call site of every build (governance.authorization, 一场景一授权)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from governance.authorization import AuthorizationRequest, require_authorized
from shuyu_core.home import Home


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
