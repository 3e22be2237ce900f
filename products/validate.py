"""``shuyu products validate``: a spec checked before any build, by the same gates a build uses.

A spec is judged against the catalog (inputs exist), its agreement's scenario (the product kind,
and for a verification each field pair it checks: ``governance.authorization``, audited) and
the domain policy's ceilings (``verification.max_quota_per_requester_per_day``). A build runs
the same checks again, so validating is a convenience, never a precondition that could be
skipped.
"""

from __future__ import annotations

import datetime as dt

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from governance.authorization import authorize
from products import specs
from products.authz import request_for
from products.verification import check_quota_ceiling
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home


def problems(home: Home, spec: ProductSpec, catalog: Catalog, at: dt.date) -> list[str]:
    """Every reason the build of ``spec`` would be refused before reading data (none: [])."""
    found: list[str] = []
    try:
        specs.check_against_catalog(spec, catalog)
        if spec.query is not None:  # the product language's static checks (fields, joins)
            from products.language.compile import check as check_query

            check_query(spec, catalog)
    except ShuyuError as exc:
        found.append(exc.message)
    result = authorize(home, request_for(spec, at), catalog)
    found.extend(f"{f.code}: {f.message}" for f in result.failures)
    try:
        check_quota_ceiling(home, spec, action="product.validate")
    except ShuyuError as exc:
        found.append(exc.message)
    return found
