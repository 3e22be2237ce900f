"""Loading product specs (``catalogs/products/<id>.yaml``) and checking them against the catalog.

``SHUYU_PRODUCTS`` names another spec directory (tests use temporary copies).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import polars as pl
import yaml

from catalogs import codelists
from catalogs.catalog import Catalog
from catalogs.loading import load_model, parse_model
from catalogs.product_models import (
    DimensionSpec,
    ProductSpec,
    month_index,
    month_label,
    quarter_index,
    quarter_label,
)
from shuyu_core import ids
from shuyu_core.errors import NotFoundError, ValidationError
from shuyu_core.hashing import sm3_hex

PACKAGED_PRODUCTS = Path(__file__).resolve().parent.parent / "catalogs" / "products"


def products_dir() -> Path:
    env = os.environ.get("SHUYU_PRODUCTS")
    return Path(env) if env else PACKAGED_PRODUCTS


def spec_path(product_id: str, directory: Path | None = None) -> Path:
    """``<dir>/<product_id>.yaml``; the id is validated first (no path can be smuggled in)."""
    ids.product_id(product_id)
    return (directory or products_dir()) / f"{product_id}.yaml"


def load_all(directory: Path | None = None) -> dict[str, ProductSpec]:
    root = directory or products_dir()
    if not root.is_dir():
        raise NotFoundError(
            f"product spec directory {root} does not exist",
            hint="set SHUYU_PRODUCTS to a directory of product spec YAML files",
        )
    specs: dict[str, ProductSpec] = {}
    for path in sorted(root.glob("*.yaml")):
        spec = load_model(ProductSpec, path)
        if path.stem != spec.id:
            raise ValidationError(
                f"{path}: file name must be the product id ({spec.id}.yaml)",
                hint=f"rename it to {spec.id}.yaml",
            )
        specs[spec.id] = spec
    return specs


def get(product_id: str, directory: Path | None = None) -> ProductSpec:
    path = spec_path(product_id, directory)
    if not path.exists():
        known = ", ".join(sorted(load_all(directory))) or "none"
        raise NotFoundError(
            f"unknown product {product_id!r} (no {path})",
            hint=f"see 'shuyu products list' (known: {known})",
        )
    spec = load_model(ProductSpec, path)
    if spec.id != product_id:
        raise ValidationError(
            f"{path}: declares id {spec.id}, not {product_id}", hint="make them agree"
        )
    return spec


def parse(data: object, source: str = "<spec>") -> ProductSpec:
    return parse_model(ProductSpec, data, source)


def canonical_json(spec: ProductSpec) -> str:
    return json.dumps(
        spec.model_dump(mode="json"), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )


def spec_sm3(spec: ProductSpec) -> str:
    return sm3_hex(canonical_json(spec).encode("utf-8"))


def spec_yaml(spec: ProductSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), allow_unicode=True, sort_keys=False)


def check_against_catalog(spec: ProductSpec, catalog: Catalog) -> None:
    """Inputs and privacy unit exist in the catalog; code lists exist. Raises ValidationError."""
    where = f"product {spec.id}"
    problems: list[str] = []
    for inp in spec.inputs:
        res = catalog.resources.get(inp.resource)
        if res is None:
            problems.append(f"input {inp.resource} is not in the catalog")
            continue
        unknown = [f for f in inp.fields if f not in res.field_names]
        if unknown:
            problems.append(f"{inp.resource} has no field(s) {', '.join(unknown)}")
    if spec.privacy_unit is not None:
        res = catalog.resources.get(spec.privacy_unit.resource)
        if res is not None and res.privacy_unit not in (None, spec.privacy_unit.field):
            problems.append(
                f"privacy unit {spec.privacy_unit.field} differs from the catalog's "
                f"{res.privacy_unit} for {res.code}"
            )
    known = set(codelists.available())
    for dim in spec.dimensions:
        if dim.codelist is not None and dim.codelist not in known:
            problems.append(f"dimension {dim.name}: unknown code list {dim.codelist}")
    if problems:
        raise ValidationError(f"{where}: " + "; ".join(problems), hint="correct the spec")


def dimension_keys(dim: DimensionSpec) -> list[str]:
    """The public key set of a dimension, in display order."""
    if dim.codelist is not None:
        return list(codelists.load(dim.codelist))
    if dim.values is not None:
        return list(dim.values)
    if dim.bands is not None:
        return [b.label for b in sorted(dim.bands, key=lambda b: b.lower)]
    if dim.months is not None:
        first_m, last_m = (month_index(m) for m in dim.months)
        return [month_label(i) for i in range(first_m, last_m + 1)]
    assert dim.quarters is not None
    first, last = (quarter_index(q) for q in dim.quarters)
    return [quarter_label(i) for i in range(first, last + 1)]


def dimension_labels(dim: DimensionSpec) -> dict[str, str]:
    if dim.codelist is not None:
        return dict(codelists.load(dim.codelist))
    return {k: k for k in dimension_keys(dim)}


def key_frame(spec: ProductSpec, by: list[str]) -> pl.DataFrame:
    """The cross product of the public key sets of ``by``, in display order."""
    keys = [dimension_keys(spec.dimension(name)) for name in by]
    rows = list(itertools.product(*keys))
    return pl.DataFrame(rows, schema=dict.fromkeys(by, pl.String), orient="row")
