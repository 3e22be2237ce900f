"""Everything the assessment uses from other areas, in one place.

Products, PII detection, risk measures, the budget ledger, quality scores and governance are
developed in parallel; their public functions may still move. Every call the assessment makes
into them goes through this module, so a change there costs one edit here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from catalogs import codelists
from catalogs.agreement_models import Agreement
from catalogs.catalog import Catalog
from catalogs.models import Resource
from catalogs.product_models import ProductSpec, VerificationCheck
from governance import evidence, roles
from governance.agreements import agreements_dir, blacklist_path, load_agreements
from governance.authorization import AuthorizationRequest, AuthorizationResult, authorize
from products import release as rel
from products import specs
from shuyu_core import snapshots
from shuyu_core.hashing import sm3_file, sm3_files
from shuyu_core.home import Home

ReleaseManifest = rel.ReleaseManifest
OutputFile = rel.OutputFile

# -- products ---------------------------------------------------------------------------------


def load_release(home: Home, release_id: str) -> rel.ReleaseManifest:
    return rel.load(home, release_id)


def release_dir(home: Home, release_id: str) -> Path:
    return rel.release_dir(home, release_id)


def release_evidence(home: Home, manifest: rel.ReleaseManifest) -> list[str]:
    """How the release's files differ from its build seal in the audit chain (empty: intact).

    ``governance.evidence.verify_release``: digests recomputed from the files of
    ``releases/<id>/`` and compared with the seal, never with ``release.json`` alone."""
    rid = manifest.release_id
    return evidence.verify_release(home, rid, release_dir(home, rid), list(manifest.outputs))


def seal_digest(home: Home, release_id: str) -> str:
    return evidence.seal_digest(home, release_id)


def releases_of(home: Home, product_id: str) -> list[rel.ReleaseManifest]:
    """Releases of one product, oldest first."""
    return rel.list_releases(home, product_id)


def all_releases(home: Home) -> list[rel.ReleaseManifest]:
    return rel.list_releases(home)


def parse_spec(data: dict[str, Any]) -> ProductSpec:
    return specs.parse(data, "release spec")


def current_spec(product_id: str) -> ProductSpec | None:
    """The product's spec as it is on disk now; None when the spec file is gone."""
    if not specs.spec_path(product_id).exists():
        return None
    return specs.get(product_id)


def spec_digest(spec: ProductSpec) -> str:
    return specs.spec_sm3(spec)


def dimension_keys(spec: ProductSpec, name: str) -> list[str]:
    return specs.dimension_keys(spec.dimension(name))


def verification_index(
    home: Home, check: VerificationCheck, snapshot_id: str
) -> pl.DataFrame | None:
    """The keyed (HMAC-SM3) index a verification check answered from, if still kept (one
    per resource, snapshot and field pair)."""
    from products import verification
    from shuyu_core.keys import PSEUDONYM, load_key

    try:
        key = load_key(home, PSEUDONYM)
    except Exception:
        return None
    path = verification.index_path(home, check, snapshot_id, key)
    return pl.read_parquet(path) if path.exists() else None


def query_id_problems(frame: pl.DataFrame) -> str:
    """Rows of a verification output whose query id looks like an identifier ('' if none)."""
    from products import query_ids

    found = query_ids.problems(frame.select("query_id"))
    return query_ids.summary(found) if found.height else ""


def verification_tokens(key: bytes, values: pl.Series, kind: str) -> pl.Series:
    """Tokens of raw values exactly as the verification product computes them."""
    from products import verification

    return verification.tokens(key, verification.normalize_series(values, kind))


# -- catalog, snapshots, governance -----------------------------------------------------------


def load_catalog() -> Catalog:
    return Catalog.load()


def resource(catalog: Catalog, code: str) -> Resource | None:
    return catalog.resources.get(code)


def snapshot(home: Home, code: str, snapshot_id: str) -> snapshots.Manifest | None:
    try:
        return snapshots.get(home, code, snapshot_id)
    except Exception:
        return None


def verify_inputs(home: Home, manifest: rel.ReleaseManifest, catalog: Catalog) -> None:
    """Recompute the SM3 of every input snapshot still kept (``IntegrityError``, exit 8).

    A snapshot that is gone is left to the checks (they report it); one that is present but
    changed since ingest stops the assessment: nothing may be judged from altered inputs."""
    from shuyu_core.errors import NotFoundError

    for i in manifest.inputs:
        if i.resource not in catalog.resources:
            continue
        try:
            m = snapshots.get(home, i.resource, i.snapshot_id)
        except NotFoundError:
            continue
        evidence.verify_snapshot(home, m)


def latest_snapshot(home: Home, code: str) -> snapshots.Manifest | None:
    found = snapshots.list_snapshots(home, code)
    return found[-1] if found else None


def scan_snapshot(home: Home, code: str, snapshot_id: str, columns: list[str]) -> pl.LazyFrame:
    return snapshots.scan(home, code, snapshot_id, columns=columns)


def codelist(name: str) -> dict[str, str]:
    return codelists.load(name)


def authorization(
    home: Home,
    *,
    agreement_id: str,
    scenario: str,
    developer: str,
    inputs: dict[str, list[str]],
    purpose: str,
    destination: str,
    reversible_outputs: bool,
    at: dt.date,
    catalog: Catalog,
    spec: ProductSpec | None = None,
) -> AuthorizationResult:
    """``governance.authorization.authorize`` (every failed condition, audited); with the
    release's ``spec``, also its product kind and verified field pairs."""
    from products.authz import verify_requests

    req = AuthorizationRequest(
        agreement_id=agreement_id,
        scenario=scenario,
        developer=developer,
        inputs=inputs,
        purpose=purpose,
        destination=destination,
        reversible_outputs=reversible_outputs,
        at=at,
        product_kind=spec.kind if spec is not None else None,
        verify=verify_requests(spec) if spec is not None else [],
        consent_purpose=(spec.verification.consent_purpose if spec and spec.verification else None),
    )
    return authorize(home, req, catalog)


def agreement(agreement_id: str) -> Agreement | None:
    return load_agreements().find(agreement_id)


def governance_digest() -> str:
    """SM3 over the agreement files and the blacklist: a change means re-assess."""
    files = sorted(agreements_dir().glob("*.yaml")) + sorted(agreements_dir().glob("*.yml"))
    bl = blacklist_path()
    if bl.exists():
        files.append(bl)
    return sm3_files(files)


def require_role(home: Home, action: str, obj: str) -> str:
    """``governance.roles.require``; returns the actor as text."""
    return str(roles.require(home, action, obj))


def file_sm3(path: Path) -> str:
    return sm3_file(path)


# -- privacy ----------------------------------------------------------------------------------


def pii_scan(frame: pl.DataFrame) -> list[tuple[str, str | None, float, str]]:
    """(column, detected entity or None, score, evidence) per column."""
    from privacy.pii.scan import scan_frame

    report = scan_frame(frame)
    return [(c.column, c.entity, c.score, c.evidence) for c in report.columns]


def k_anonymity(frame: pl.DataFrame, qis: list[str]) -> int:
    from privacy.risk import k_anonymity as k_anon

    return k_anon(frame, qis).k


def ledger_entries(home: Home, release_id: str) -> list[dict[str, Any]]:
    from privacy.dp import ledger

    return [e.model_dump(mode="json") for e in ledger.entries_for_release(home, release_id)]


def budget_show(home: Home, period: str | None = None) -> dict[str, Any]:
    from privacy.dp import ledger

    return ledger.show(home, period=period)


def pseudonym_key(home: Home) -> bytes | None:
    from shuyu_core.keys import PSEUDONYM, load_key

    try:
        return load_key(home, PSEUDONYM)
    except Exception:
        return None


def consent_count(home: Home, purpose: str) -> int:
    """Active (not revoked, not expired) authorizations recorded for ``purpose``."""
    from sqlalchemy import func, select

    from governance.consent import consent_ledger
    from shuyu_core.home import state_engine

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with state_engine(home).connect() as conn:
        n = conn.execute(
            select(func.count())
            .select_from(consent_ledger)
            .where(
                consent_ledger.c.purpose == purpose,
                consent_ledger.c.revoked.is_(False),
                consent_ledger.c.expires_at >= now,
            )
        ).scalar_one()
    return int(n)


# -- quality ----------------------------------------------------------------------------------


def quality_scores(home: Home, code: str, snapshot_id: str) -> dict[str, float] | None:
    """Dimension scores of the newest quality check of that snapshot, or None."""
    from quality.api import latest_result

    res = latest_result(home, code, snapshot_id)
    return dict(res.dimensions) if res is not None else None


def floors(home: Home) -> Any:
    """The domain policy's privacy floors (governance.floors.PrivacyFloors)."""
    from products.floors import floors as current

    return current(home)


def unit_year_spent(home: Home, units: set[str], year: int) -> dict[str, float]:
    from products.floors import unit_year_spent as spent

    return spent(home, units, year)


def person_names(home: Home, code: str, snapshot_id: str, fields: list[str]) -> pl.Series:
    """Distinct 2–4 character values of the name fields of one input snapshot."""
    lf = scan_snapshot(home, code, snapshot_id, fields)
    frame = lf.select(pl.concat_list([pl.col(c).cast(pl.String) for c in fields]).alias("v"))
    return (
        frame.explode("v")
        .select(pl.col("v").str.strip_chars())
        .filter(pl.col("v").str.len_chars().is_between(2, 4))
        .unique()
        .collect(engine="streaming")["v"]
    )
