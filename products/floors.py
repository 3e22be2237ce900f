"""The build's privacy-floor gate: a spec asking for less protection than the domain policy's
floors (``governance.floors.PrivacyFloors``) is refused before anything is charged or drawn.

What is checked, by product kind:

- noisy products (statistical reports, indices): ρ and ε (at the spec's δ) of the release, δ,
  the ρ already spent this calendar year on each privacy unit the inputs share (every release
  of every resource with that unit, counted once per release) plus this one, and the cell
  suppression threshold;
- record-level products: k, and per identifier column the operator the policy and the spec's
  overrides give it — kept raw, masked, generalized, pseudonymized or removed — against the
  type's mask floor, and every mask for recoverability (``privacy.mask_strength``);
- every product: literal dimension key lists (``public_key_problems``).

A refusal is a ``PermissionDenied`` naming the check ``privacy_floors`` and every violation,
recorded in the audit chain with the violations as details.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec, epsilon_from_rho
from catalogs.vocabulary import PiiType
from governance.audit import record
from governance.domain_policy import effective
from governance.floors import PrivacyFloors
from privacy.mask_strength import mask_strength
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

GENERALIZING_OPS = frozenset(
    {"generalize_date", "generalize_age", "generalize_region", "generalize_amount"}
)
REMOVING_OPS = frozenset({"suppress", "pseudonymize"})


def floors(home: Home) -> PrivacyFloors:
    return effective(home).privacy_floors


def unit_year_spent(
    home: Home, units: set[str], year: int, exclude_release: str | None = None
) -> dict[str, float]:
    """ρ charged per privacy unit for calendar ``year`` (of the period paid): each release
    counted once (its largest entry for the unit), over every resource sharing the unit;
    void charges spent nothing. The charge itself re-checks this under the ledger lock."""
    from privacy.dp import ledger
    from shuyu_core.home import state_engine

    with state_engine(home).connect() as conn:
        return ledger.unit_year_spent(conn, units, year, exclude_release)


def dp_problems(
    home: Home,
    spec: ProductSpec,
    catalog: Catalog,
    fl: PrivacyFloors,
    exclude_release: str | None = None,
    year: int | None = None,
) -> list[str]:
    if spec.budget is None:
        return []
    out: list[str] = []
    rho, delta = spec.budget.zcdp_rho, spec.budget.delta
    eps = epsilon_from_rho(rho, delta)
    if rho > fl.max_rho_per_release * (1 + 1e-9):
        out.append(f"ρ={rho:.4g} per release exceeds the ceiling {fl.max_rho_per_release:g}")
    if eps > fl.max_epsilon_per_release * (1 + 1e-9):
        out.append(
            f"ε={eps:.4g} (at δ={delta:g}) per release exceeds the ceiling "
            f"{fl.max_epsilon_per_release:g}"
        )
    if delta > fl.max_delta:
        out.append(f"δ={delta:g} exceeds the ceiling {fl.max_delta:g}")
    units = {
        catalog.get(i.resource).privacy_unit or ""
        for i in spec.inputs
        if i.resource in catalog.resources
    } - {""}
    data_year = spec.reference_period[1].year if spec.reference_period else None
    when = year or data_year or dt.datetime.now(dt.UTC).year
    for unit, spent in sorted(unit_year_spent(home, units, when, exclude_release).items()):
        if spent + rho > fl.max_rho_per_unit_year * (1 + 1e-9):
            out.append(
                f"ρ per {unit} in {when} would reach {spent + rho:.4g} "
                f"({spent:.4g} spent + {rho:.4g}), above the ceiling {fl.max_rho_per_unit_year:g}"
            )
    for t in spec.tables:
        for m in t.measures:
            if m.aggregate == "quantile" and len(m.candidates or []) > fl.max_quantile_candidates:
                out.append(
                    f"quantile {t.name}.{m.name}: {len(m.candidates or [])} candidates exceed "
                    f"the ceiling {fl.max_quantile_candidates}"
                )
    if spec.suppression.min_count < fl.min_suppression_threshold:
        out.append(
            f"suppression threshold {spec.suppression.min_count:g} is below the floor "
            f"{fl.min_suppression_threshold:g}"
        )
    return out


def identifier_treatment(
    pii_type: PiiType, op: str, params: dict[str, Any], fl: PrivacyFloors, where: str
) -> list[str]:
    """Problems of one identifier column's operator in a record-level output."""
    floor = fl.mask_floor(pii_type)
    t = pii_type.value
    if op in REMOVING_OPS or op == "encrypt_sm4":  # SM4: the reversible-output gate decides
        return []
    if op == "keep":
        if floor.records == "keep":
            return []
        return [f"{where} keeps {t} values raw (the floor allows {floor.records} only)"]
    removal = f"{where}: {t} must be pseudonymized or removed in records, not {op}"
    if op != "mask":
        # a generalization: allowed when the type's floor allows more than removal
        return [removal] if floor.records == "remove" else []
    out: list[str] = [removal] if floor.records == "remove" else []
    strength = mask_strength(pii_type, params)
    outside = strength.outside(floor.max_head, floor.max_tail)
    if outside:
        out.append(
            f"{where}: mask keeps {t} position(s) {', '.join(str(p + 1) for p in outside)} "
            f"(floor: at most {floor.max_head} leading and {floor.max_tail} trailing)"
        )
    if strength.candidates is not None and strength.candidates < fl.min_mask_candidates:
        out.append(
            f"{where}: mask leaves {t} recoverable ({strength.describe()}; floor "
            f"{fl.min_mask_candidates} candidates)"
        )
    return out


def mask_problems(spec: ProductSpec, catalog: Catalog, fl: PrivacyFloors) -> list[str]:
    """Record-level products: k and every identifier column's operator (module doc)."""
    d = spec.desensitize
    if d is None:
        return []
    from products.desensitized import policy_for

    out: list[str] = []
    if d.k < fl.min_k:
        out.append(f"k={d.k} is below the floor {fl.min_k}")
    policy = policy_for(d)
    for inp in spec.inputs:
        res = catalog.get(inp.resource)
        for name in inp.fields:
            f = res.field(name)
            if f.pii_type is None:
                continue
            rule, _src = policy.resolve(inp.resource, name, f.pii_type, f.sensitivity)
            out += identifier_treatment(
                f.pii_type, rule.op, dict(rule.params), fl, f"{inp.resource}.{name}"
            )
    return out


def literal_key_problems(values: list[str], name: str, fl: PrivacyFloors) -> list[str]:
    """A literal ``values:`` key list must look public: few keys, none an identifier."""
    from privacy.pii.textscreen import identifier_hits

    out: list[str] = []
    if len(values) > fl.max_literal_keys:
        out.append(
            f"dimension {name}: {len(values)} literal values exceed the ceiling "
            f"{fl.max_literal_keys} (use a catalog code list, bands or quarters)"
        )
    hits = identifier_hits(pl.Series(values, dtype=pl.String))
    if hits.height:
        kinds = ", ".join(sorted(set(hits["entity"].to_list())))
        out.append(
            f"dimension {name}: {hits['r'].n_unique()} literal value(s) are identifiers ({kinds})"
        )
    return out


def public_key_problems(spec: ProductSpec, fl: PrivacyFloors) -> list[str]:
    out: list[str] = []
    for dim in spec.dimensions:
        if dim.values is not None:
            out += literal_key_problems(list(dim.values), dim.name, fl)
    return out


def violations(
    home: Home, spec: ProductSpec, catalog: Catalog, exclude_release: str | None = None
) -> list[str]:
    fl = floors(home)
    return [
        *dp_problems(home, spec, catalog, fl, exclude_release),
        *mask_problems(spec, catalog, fl),
        *public_key_problems(spec, fl),
    ]


def require_within_floors(
    home: Home, spec: ProductSpec, catalog: Catalog, release_id: str | None = None
) -> None:
    """Raise PermissionDenied (audited) when the spec is below any floor (module doc)."""
    found = violations(home, spec, catalog, exclude_release=release_id)
    if not found:
        return
    exc = PermissionDenied(
        f"product {spec.id} v{spec.version} is below the domain privacy floors "
        f"(privacy_floors): {'; '.join(found)}",
        hint="ask for at least the floor (see 'shuyu policy show'); only an admin changes floors",
    )
    record(
        home,
        "product.build",
        spec.id,
        "refused",
        {"check": "privacy_floors", "version": spec.version, "violations": found},
    )
    exc.audited = True
    raise exc
