"""The release store: ``releases/<release-id>/`` with ``release.json`` (a ``ReleaseManifest``).

A release is computed once. Its id is derived from the product id, the spec version and the
ids of the input snapshots it read, so re-running the same build finds the stored release
instead of drawing new noise. A release directory appears by an atomic rename
(``shuyu_core.atomic.staged_dir``): if it exists, it is complete.

Layout of one release::

    releases/<release-id>/
        release.json        the manifest below (the contract the assessment reads)
        spec.yaml           the product spec exactly as built
        data/<name>.parquet data/<name>.csv ...   the outputs (paths in the manifest are relative)
        accuracy.csv        one row per released cell (also inside release.json)
        report.html         statistical reports and indices
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shuyu_core import ids
from shuyu_core.errors import NotFoundError, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home

MANIFEST = "release.json"
SCHEMA_VERSION = 1

ProductKind = Literal["statistical_report", "index", "verification", "desensitized_dataset"]
PurposeCategory = Literal["public_good", "industry"]
ValueKind = Literal["dp_aggregate", "verification_flag", "desensitized_record"]
OutputFormat = Literal["parquet", "csv", "json", "html"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputRef(_Model):
    """One input snapshot as read by the build (only ``fields`` were projected)."""

    resource: str
    snapshot_id: str
    fields: list[str]
    rows: int
    snapshot_sm3: str


class PrivacyUnit(_Model):
    """Who is protected: one unit is one person (or enterprise) identified by ``field``."""

    resource: str
    field: str
    max_contributions: int = Field(
        default=1, description="rows per unit the DP step may see after bounding"
    )


class ContributionBound(_Model):
    """How one measure's per-unit contribution was bounded before the DP step."""

    resource: str
    measure: str
    source_field: str | None = None
    reduction: str = Field(description="how a unit's rows were reduced to one value")
    lower: float | None = None
    upper: float | None = None
    max_rows_per_unit: int = 1


class LedgerRef(_Model):
    """One ledger entry: the release's privacy loss charged to one resource's budget."""

    resource: str
    unit: str
    period: str
    entry_id: str


class BudgetCharge(_Model):
    """Privacy loss of this release (zCDP ρ, with the (ε, δ) guarantee it implies).

    The same loss is charged to the budget of every input resource (one ledger entry each),
    because every input's units are the persons (or enterprises) the release can reveal.
    """

    rho: float
    epsilon: float = Field(description="ε of the (ε, δ)-DP guarantee implied by rho at delta")
    delta: float
    entries: list[LedgerRef]
    composition: str = "zCDP: rho adds up across releases; ε = ρ + 2·sqrt(ρ·ln(1/δ))"


class MeasureNoise(_Model):
    """The noise one mechanism added to one measure column (public: fixed by the spec)."""

    column: str
    aggregate: str
    distribution: str
    scale: float = Field(description="σ of the (discrete) Gaussian; the same for every cell")
    ci_half_width: float | None = Field(
        description="half-width of the 1−alpha interval of the noise (None for a quantile)"
    )
    alpha: float
    rho: float = Field(description="this measure's share of the release's ρ")
    # Quantiles (report-noisy-max): the Gumbel scale and the interval in ranks (units)
    rank_scale: float | None = None
    rank_error: float | None = Field(
        default=None, description="quantile: ± ranks around the true quantile at alpha"
    )
    candidates: int | None = None


class Mechanism(_Model):
    """One OpenDP measurement: it released the output ``output`` (every cell of every listed
    measure) and was paid for by the release's ledger entries ``ledger_entries``."""

    output: str
    rho: float = Field(description="the table's share of the release's ρ (shares add up)")
    measures: list[MeasureNoise]
    ledger_entries: list[str]


class ColumnLineage(_Model):
    """Where an output column comes from: its source fields and the operator applied."""

    sources: list[str] = Field(default_factory=list, description="RESOURCE.field")
    operator: str
    params: dict[str, Any] = Field(default_factory=dict)


class OutputColumn(_Model):
    name: str
    type: str
    description: str = ""
    sources: list[str] = Field(
        default_factory=list, description="input fields (RESOURCE.field) the column derives from"
    )
    operator: str | None = Field(
        default=None,
        description="the operator that produced the column (keep, mask, pseudonymize, "
        "generalize_*, dp_aggregate …); None: lineage unknown, treated as unsafe",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the operator's parameters")


class OutputFile(_Model):
    name: str
    path: str = Field(description="relative to the release directory")
    format: OutputFormat
    columns: list[OutputColumn] = Field(default_factory=list)
    rows: int
    values: ValueKind
    sm3: str = ""

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str) -> str:
        # An output path is a plain relative path: no '..', no absolute path (ids.within).
        if not ids.is_relative_inside(v):
            raise ValueError(f"output path {v!r} must be relative, without '..'")
        return v


class AccuracyCell(_Model):
    """The accuracy statement of one released value (CI half-width at ``alpha``)."""

    output: str
    key: dict[str, str]
    measure: str
    estimate: float | None
    ci_half_width: float | None
    alpha: float = 0.05
    relative_error: float | None = None
    method: str = Field(
        default="analytic", description="analytic | simulation | interval (index bands)"
    )
    distribution: str | None = Field(default=None, description="noise distribution (mechanism)")
    scale: float | None = Field(default=None, description="noise scale (σ for Gaussian)")
    suppressed: bool = False
    reason: str | None = None
    # Quantiles: no interval on the value, one in ranks (privacy.dp.accuracy.quantile_rank_error)
    rank_error: float | None = Field(
        default=None, description="quantile: ± ranks (units) around the true quantile at alpha"
    )
    relative_rank_error: float | None = Field(
        default=None, description="quantile: rank_error over the cell's noisy count"
    )


class SuppressedCell(_Model):
    output: str
    key: dict[str, str]
    measure: str
    reason: str


class ReversibleColumn(_Model):
    """A column that can be reversed to raw values (e.g. SM4), from the desensitization sidecar."""

    output: str
    column: str
    operator: str


class KAnonymity(_Model):
    quasi_identifiers: list[str] = Field(
        description="QIs by lineage: declared + catalog QIs + weakened identifiers"
    )
    declared_quasi_identifiers: list[str] = Field(default_factory=list)
    sensitive_attributes: list[str] = Field(default_factory=list)
    l_achieved: int | None = None
    target: int
    achieved: int
    records_in: int
    records_out: int
    records_suppressed: int
    generalization: dict[str, str] = Field(default_factory=dict)


class Execution(_Model):
    """Where the build's per-partition work ran — the per-unit bounding of DP products, the
    keyed index of verification (``scaleout.placement``)."""

    backend: Literal["local", "dask"]
    partitions: int = Field(description="co-partitions of the inputs (1: unpartitioned)")
    ran_on: Literal["driver", "workers"]
    note: str | None = Field(default=None, description="why a configured cluster was not used")


class ReleaseManifest(_Model):
    schema_version: int = SCHEMA_VERSION
    release_id: str
    product_id: str
    name: str
    name_en: str
    version: str
    kind: ProductKind
    purpose_category: PurposeCategory
    pricing_note: str
    scenario: str
    agreement_id: str
    developer: str
    destination: str
    spec: dict[str, Any] = Field(description="the full product spec as built")
    spec_sm3: str
    inputs: list[InputRef]
    privacy_unit: PrivacyUnit | None = None
    contribution_bounds: list[ContributionBound] = Field(default_factory=list)
    budget: BudgetCharge | None = Field(
        default=None, description="None for products that draw no noise (verification, k-anon)"
    )
    mechanisms: list[Mechanism] = Field(
        default_factory=list,
        description="one per noisy output table: its noise per measure and its ledger entries",
    )
    derived_from: dict[str, list[str]] = Field(
        default_factory=dict,
        description="aggregate outputs computed only from released tables (post-processing, "
        "no own ledger entry) -> the mechanism outputs they use",
    )
    outputs: list[OutputFile]
    accuracy: list[AccuracyCell] = Field(default_factory=list)
    accuracy_target: float | None = Field(
        default=None, description="max relative CI half-width a released cell may have"
    )
    suppression_threshold: float | None = None
    suppressed: list[SuppressedCell] = Field(default_factory=list)
    reversible_columns: list[ReversibleColumn] = Field(default_factory=list)
    k_anonymity: KAnonymity | None = None
    verification: dict[str, Any] | None = Field(
        default=None, description="verification batches: counts by outcome, refusals, quota"
    )
    authorization: dict[str, Any] | None = Field(
        default=None, description="governance.authorization result at build time (evidence)"
    )
    notes: list[str] = Field(default_factory=list)
    execution: Execution | None = Field(
        default=None, description="backend and partition count of the bounding (DP products)"
    )
    created_at: dt.datetime
    actor: str

    def output(self, name: str) -> OutputFile:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)


def derive_release_id(product_id: str, version: str, snapshots: dict[str, str]) -> str:
    """``<product>-v<version>-<SM3 prefix>`` over product, version and sorted input snapshots.

    Deterministic: the same spec version over the same snapshots is the same release.
    """
    payload = json.dumps(
        {"product": product_id, "version": version, "inputs": sorted(snapshots.items())},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{product_id}-v{version}-{sm3_hex(payload.encode())[:16]}"


def release_dir(home: Home, release_id: str) -> Path:
    """``releases/<release_id>``: the id validated, the path (symlinks resolved) inside."""
    ids.release_id(release_id)
    path = ids.within(home.releases, release_id)
    if path == home.releases.resolve():
        raise ids.OutsideZone(
            f"release id {release_id!r} names the releases/ zone itself",
            hint="give one release id (see 'shuyu products list')",
        )
    return path


def exists(home: Home, release_id: str) -> bool:
    return (release_dir(home, release_id) / MANIFEST).exists()


def load(home: Home, release_id: str) -> ReleaseManifest:
    """The manifest of ``releases/<release_id>/``; refused unless it names that release."""
    path = release_dir(home, release_id) / MANIFEST
    if not path.exists():
        raise NotFoundError(
            f"release {release_id} does not exist in {home.releases}",
            hint="see 'shuyu products list' and build the product with 'shuyu build PRODUCT'",
        )
    try:
        m = ReleaseManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValidationError(
            f"release {release_id}: {MANIFEST} is not a valid release manifest "
            f"({str(exc).splitlines()[0][:160]})",
            hint="a release directory is written only by 'shuyu build'; rebuild the product",
        ) from exc
    if m.release_id != release_id:
        # Assessment, review and publish all read releases/<id>/: a directory must not
        # borrow another release's identity (or its assessment and approval).
        raise ValidationError(
            f"releases/{release_id}/ holds the manifest of release {m.release_id}",
            hint="a release directory is written only by 'shuyu build'; remove the copy",
        )
    return m


def list_releases(home: Home, product_id: str | None = None) -> list[ReleaseManifest]:
    if not home.releases.is_dir():
        return []
    out: list[ReleaseManifest] = []
    for d in sorted(home.releases.iterdir()):
        if d.is_dir() and ids.is_valid("release", d.name) and (d / MANIFEST).exists():
            try:
                m = load(home, d.name)
            except ShuyuError:
                continue  # a copied or broken directory is not a release of anything
            if product_id is None or m.product_id == product_id:
                out.append(m)
    return sorted(out, key=lambda m: m.created_at)


def manifest_json(m: ReleaseManifest) -> str:
    return json.dumps(m.model_dump(mode="json"), ensure_ascii=False, indent=2)
