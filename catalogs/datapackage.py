"""Export of the resource directory as a Frictionless Data Package (datapackage.json).

Chosen over W3C DCAT because the catalog's substance is field-level — types, required,
unique, patterns, code lists, foreign keys — which Table Schema describes natively, while
DCAT stops at the dataset and would need CSVW on top. Shuyu-specific attributes (grade,
sharing and open attributes, source unit, PI types, negative list) go in ``shuyu:``-prefixed
properties, which the Data Package spec allows as extensions.
"""

from __future__ import annotations

from typing import Any

from catalogs import codelists
from catalogs.catalog import Catalog
from catalogs.models import FieldSpec, Resource

_TYPES = {
    "string": "string",
    "int": "integer",
    "float": "number",
    "date": "date",
    "datetime": "datetime",
    "bool": "boolean",
}
# Large code lists are referenced by name instead of being inlined as enums.
_MAX_ENUM = 200


def _field(spec: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "type": _TYPES[spec.type]}
    if spec.description:
        out["description"] = spec.description
    constraints: dict[str, Any] = {}
    if spec.required:
        constraints["required"] = True
    r = spec.rules
    if r.unique:
        constraints["unique"] = True
    if r.pattern:
        constraints["pattern"] = r.pattern
    if r.allowed:
        constraints["enum"] = list(r.allowed)
    if r.codelist:
        values = codelists.load(r.codelist)
        if len(values) <= _MAX_ENUM:
            constraints["enum"] = sorted(values)
        out["shuyu:codelist"] = r.codelist
    if r.min is not None:
        constraints["minimum"] = r.min
    if r.max is not None:
        constraints["maximum"] = r.max
    if constraints:
        out["constraints"] = constraints
    if r.check_digit:
        out["shuyu:checkDigit"] = r.check_digit
    out["shuyu:piiType"] = spec.pii_type.value if spec.pii_type else None
    out["shuyu:sensitivity"] = spec.sensitivity.value
    if spec.quasi_identifier:
        out["shuyu:quasiIdentifier"] = True
    return out


def _resource(res: Resource) -> dict[str, Any]:
    schema: dict[str, Any] = {"fields": [_field(f) for f in res.fields]}
    if res.primary_key:
        schema["primaryKey"] = list(res.primary_key)
    fks = [
        {
            "fields": [f.name],
            "reference": {
                "resource": f.rules.references.resource,
                "fields": [f.rules.references.field],
            },
        }
        for f in res.fields
        if f.rules.references is not None
    ]
    if fks:
        schema["foreignKeys"] = fks
    return {
        # Data Package resource names must be lower-case; the code is kept as shuyu:code.
        "name": res.code.lower(),
        "title": f"{res.name} ({res.name_en})",
        "description": res.description,
        # Raw data never leaves the domain: the path names the zone, not a downloadable file.
        "path": f"raw/{res.code}/",
        "format": "parquet",
        "profile": "tabular-data-resource",
        "schema": schema,
        "shuyu:code": res.code,
        "shuyu:sourceUnit": res.source_unit.model_dump(),
        "shuyu:sector": res.sector,
        "shuyu:updateFrequency": res.update_frequency.value,
        "shuyu:sharing": res.sharing.value,
        "shuyu:open": res.open.value,
        "shuyu:grade": res.grade.value,
        "shuyu:privacyUnit": res.privacy_unit,
        "shuyu:location": res.location,
        "shuyu:negativeList": res.negative_list.model_dump(mode="json"),
    }


def to_datapackage(catalog: Catalog) -> dict[str, Any]:
    """The whole directory as one Data Package descriptor."""
    pkg: dict[str, Any] = {
        "name": "shuyu-resource-directory",
        "title": "数据资源目录 (Shuyu resource directory)",
        "version": catalog.version,
        "profile": "tabular-data-package",
        "resources": [_resource(r) for r in catalog],
    }
    # Foreign keys in Table Schema name the target resource by its (lower-case) name.
    for res in pkg["resources"]:
        for fk in res["schema"].get("foreignKeys", []):
            fk["reference"]["resource"] = fk["reference"]["resource"].lower()
    return pkg
