"""The publication gate: the only code that writes to ``published/`` (the egress).

``publish(home, release_id)`` (operator role) copies a release's outputs to
``published/products/<release-id>/`` only when

1. the release has an assessment, and the latest one's verdict is ``pass``;
2. the latest reviewer decision approves *that* assessment;
3. nothing changed since the assessment: release manifest, output files, the product's spec
   on disk, agreements and blacklist, catalog (the assessment's fingerprint);
4. ``release.json`` and every output still match the build seal in the audit chain
   (``governance.evidence``): a directory not built by shuyu, or one whose files or digests
   were rewritten, is refused. Files are copied only from ``releases/<release-id>/``, whose
   manifest must name that id, and each copy is checked against the sealed SM3.

It then registers the product (登记) in the published product catalog
(``published/catalog.json`` / ``.html``) and refreshes the disclosure listing (信息披露:
products and services, resource usage counts; ``published/disclosure.json`` / ``.html``).
Every write is atomic (a staged directory renamed into place; files written by rename), and
the registry files are rewritten under one lock from the ``publications`` table, so
concurrent publications never lose an entry. Each publication and each refusal is audited.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Column, DateTime, String, Table, Text, select

from assessment import adapters as ad
from assessment import engine, review
from governance import recovery, roles, separation
from governance.audit import record
from shuyu_core import atomic, faults, ids, journal
from shuyu_core.db import METADATA
from shuyu_core.errors import PermissionDenied, ShuyuError
from shuyu_core.home import Home, state_engine

publications = Table(
    "publications",
    METADATA,
    Column("release_id", String(200), primary_key=True),
    Column("product_id", String(200), nullable=False),
    Column("published_at", DateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("assessment_id", String(200), nullable=False),
    Column("registration", Text, nullable=False),
)

CATALOG = "catalog"
DISCLOSURE = "disclosure"
_TEMPLATES = Path(__file__).parent / "templates"


def products_root(home: Home) -> Path:
    return home.published / "products"


def catalog_paths(home: Home) -> dict[str, Path]:
    return {
        "catalog_json": home.published / f"{CATALOG}.json",
        "catalog_html": home.published / f"{CATALOG}.html",
        "disclosure_json": home.published / f"{DISCLOSURE}.json",
        "disclosure_html": home.published / f"{DISCLOSURE}.html",
    }


def _lock(home: Home) -> contextlib.AbstractContextManager[None]:
    return atomic.file_lock(home.work / "assessments" / "publish.lock")


def _refuse(home: Home, release_id: str, message: str, hint: str) -> ShuyuError:
    exc = PermissionDenied(message, hint=hint)
    record(home, "publish", release_id, "refused", {"reason": message})
    exc.audited = True
    return exc


def gate(home: Home, release_id: str) -> tuple[engine.Assessment, review.Review]:
    """The assessment and approval that allow publishing ``release_id``; else refuse."""
    try:
        ad.load_release(home, release_id)
    except ShuyuError as exc:
        record(home, "publish", release_id, "refused", {"reason": exc.message})
        exc.audited = True
        raise
    a = engine.latest(home, release_id)
    if a is None:
        raise _refuse(
            home,
            release_id,
            f"release {release_id} has not been assessed (发布前评估)",
            f"run 'shuyu assess {release_id}', then have a reviewer approve it",
        )
    if a.verdict != "pass":
        raise _refuse(
            home,
            release_id,
            f"release {release_id}: assessment {a.assessment_id} verdict is {a.verdict}",
            "only a release whose assessment passed can be published; see "
            f"'shuyu review show {release_id}'",
        )
    decision = review.latest_decision(home, release_id)
    if decision is None or decision.decision != "approve":
        what = "no reviewer decision" if decision is None else f"decision {decision.decision}"
        raise _refuse(
            home,
            release_id,
            f"release {release_id} is not approved ({what})",
            f"a reviewer runs 'shuyu review approve {release_id} --comment TEXT'",
        )
    forged = review.decision_problems(home, decision)
    if forged:
        raise _refuse(
            home,
            release_id,
            f"release {release_id}: its approval does not match the audit chain: {forged[0]}",
            "a reviewer decides again with 'shuyu review approve'; an admin investigates with "
            "'shuyu audit verify'",
        )
    if decision.assessment_id != a.assessment_id:
        raise _refuse(
            home,
            release_id,
            f"release {release_id}: the approval was given on {decision.assessment_id}, not on "
            f"the latest assessment {a.assessment_id}",
            "the reviewer approves the latest assessment again",
        )
    if a.assessed_for != a.assessed_at.date():
        raise _refuse(
            home,
            release_id,
            f"release {release_id}: assessment {a.assessment_id} was made as of "
            f"{a.assessed_for}, not on the day it ran",
            f"re-run 'shuyu assess {release_id}' without --at",
        )
    today = dt.datetime.now(dt.UTC).date()
    failures = engine.authorization_failures(home, release_id, today)
    if failures:
        raise _refuse(
            home,
            release_id,
            f"release {release_id} is not authorized on {today}: {'; '.join(failures)}",
            f"re-run 'shuyu assess {release_id}' and resolve the legality findings",
        )
    changed = review.unchanged_since(home, a)
    if changed:
        raise _refuse(
            home,
            release_id,
            f"release {release_id}: {', '.join(changed)} changed since assessment "
            f"{a.assessment_id}",
            f"re-run 'shuyu assess {release_id}' and have a reviewer approve it again",
        )
    # Judged against the build seal in the audit chain, never against release.json alone.
    manifest = ad.load_release(home, release_id)
    broken = ad.release_evidence(home, manifest)
    if broken:
        raise _refuse(
            home,
            release_id,
            f"release {release_id} does not match its build seal: {'; '.join(broken[:3])}",
            "only a release built by 'shuyu build' and unchanged since can be published",
        )
    return a, decision


def _registration(
    manifest: ad.ReleaseManifest, a: engine.Assessment, decision: review.Review, at: dt.datetime
) -> dict[str, Any]:
    """The registration record (登记) of one published product."""
    return {
        "product_code": manifest.product_id,
        "name": manifest.name,
        "name_en": manifest.name_en,
        "version": manifest.version,
        "kind": manifest.kind,
        "release": manifest.release_id,
        "sources": [
            {"resource": i.resource, "snapshot": i.snapshot_id, "fields": list(i.fields)}
            for i in manifest.inputs
            if i.resource != "VERIFICATION_QUERIES"
        ],
        "purpose_category": manifest.purpose_category,
        "pricing_note": manifest.pricing_note,
        "developer": manifest.developer,
        "agreement": manifest.agreement_id,
        "scenario": manifest.scenario,
        "release_date": manifest.created_at.date().isoformat(),
        "published_at": at.isoformat(),
        "verdict": a.verdict,
        "assessment": a.assessment_id,
        "reviewer": decision.reviewer,
        "review_comment": decision.comment,
        "files": [
            {"path": o.path, "format": o.format, "rows": o.rows, "sm3": o.sm3}
            for o in manifest.outputs
        ],
    }


def _sealed_files(home: Home, release_id: str) -> dict[str, str]:
    from governance import evidence

    found = evidence.find_seal(home, release_id)
    return dict(found.files) if found is not None else {}


def publish(home: Home, release_id: str) -> dict[str, Any]:
    """Publish an approved release whose assessment passed (see the module doc).

    Crash safety: the recovery sweep runs first (it completes a publication a killed run
    left half-done: entry, registration row, listings); an intent is left before the rename
    into ``published/`` and dropped after the audit entry; an audit that fails takes the
    publication back out. A rerun of an already published release rebuilds the listings.
    """
    who = roles.require(home, "publish", release_id)
    actor = who.name
    try:
        ids.release_id(release_id)
        ad.release_dir(home, release_id)
    except ShuyuError as exc:
        record(home, "publish", str(release_id)[:200], "refused", {"reason": exc.message})
        exc.audited = True
        raise
    recovery.sweep(home)
    with _lock(home):
        a, decision = gate(home, release_id)
        conflicts = separation.publish_conflicts(home, decision.reviewer, who)
        if conflicts:
            raise _refuse(
                home,
                release_id,
                f"release {release_id} (四眼原则): {'; '.join(conflicts)}",
                "an operator other than the approving reviewer publishes it",
            )
        manifest = ad.load_release(home, release_id)
        final = ids.within(products_root(home), release_id)
        existing = publication(home, release_id)
        if existing is not None and final.exists():
            refresh_listings(home)  # idempotent: a listing lost to a crash comes back
            record(home, "publish", release_id, "ok", {"already_published": True})
            return existing
        now = dt.datetime.now(dt.UTC)
        reg = _registration(manifest, a, decision, now)
        # Copy only from releases/<release_id>/ (whose manifest names that id: load_release),
        # each copy checked against the seal in the audit chain, not against release.json.
        src = ad.release_dir(home, release_id)
        sealed = _sealed_files(home, release_id)
        if final.exists():  # a directory without its publication row: an interrupted run
            shutil.rmtree(final)
        details = {
            "product": manifest.product_id,
            "assessment": a.assessment_id,
            "review": decision.id,
            "path": str(final),
            "files": [o.path for o in manifest.outputs],
        }
        with journal.intent(
            home, "publish", "publish", release_id, final, details, (who.name, who.role)
        ):
            with atomic.staged_dir(final, staging_root=home.tmp) as stage:
                for out in manifest.outputs:
                    target = stage / out.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / out.path, target)
                    if ad.file_sm3(target) != sealed.get(out.path, "") or not out.sm3:
                        raise ShuyuError(
                            f"copy of {out.path} does not match its SM3",
                            hint="check the disk and publish again",
                        )
                atomic.write_text(
                    stage / "registration.json", json.dumps(reg, ensure_ascii=False, indent=1)
                )
                faults.point("publish.staged")
            faults.point("publish.after_rename")
            try:
                _register(home, release_id, reg, actor)
                faults.point("publish.registered")
                paths = refresh_listings(home)
                record(home, "publish", release_id, "ok", details)
            except BaseException:
                _withdraw(home, release_id, final)
                raise
            faults.point("publish.audited")
    return reg | {"path": str(final), "listings": {k: str(v) for k, v in paths.items()}}


def _register(home: Home, release_id: str, reg: dict[str, Any], actor: str) -> None:
    """The publication row (登记) the listings are rebuilt from."""
    with state_engine(home).begin() as conn:
        conn.execute(publications.delete().where(publications.c.release_id == release_id))
        conn.execute(
            publications.insert().values(
                release_id=release_id,
                product_id=reg["product_code"],
                published_at=dt.datetime.fromisoformat(reg["published_at"]).replace(tzinfo=None),
                actor=actor,
                assessment_id=reg["assessment"],
                registration=json.dumps(reg, ensure_ascii=False),
            )
        )


def _withdraw(home: Home, release_id: str, final: Path) -> None:
    """Take back a publication whose audit entry could not be written (nothing unaudited
    stays in the egress): row, directory, listings."""
    with state_engine(home).begin() as conn:
        conn.execute(publications.delete().where(publications.c.release_id == release_id))
    if final.exists():
        gone = home.tmp / f".{final.name}{journal.owner_tag()}withdrawn.staging"
        final.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
    with contextlib.suppress(Exception):
        refresh_listings(home)


def complete_publication(home: Home, release_id: str, actor: str) -> bool:
    """Finish a publication a killed run left after its rename: the registration row from the
    published ``registration.json``, then the catalog and disclosure listings. Idempotent;
    False when there is nothing published under ``release_id``."""
    final = products_root(home) / release_id
    with _lock(home):
        if not (final / "registration.json").exists():
            return False
        if publication(home, release_id) is None:
            reg = json.loads((final / "registration.json").read_text(encoding="utf-8"))
            _register(home, release_id, reg, actor)
        refresh_listings(home)
    return True


def publication(home: Home, release_id: str) -> dict[str, Any] | None:
    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(publications.c.registration).where(publications.c.release_id == release_id)
        ).first()
    return json.loads(row[0]) if row else None


def registrations(home: Home) -> list[dict[str, Any]]:
    """Every registration (登记) of a published product, oldest first.

    A row counts only when it is the ``registration.json`` publish wrote into the product's
    directory under ``published/``: the table is writable by any operator's login, and the
    listings built from it are published, so a row inserted or edited in the database would
    otherwise put whatever it holds into the egress. Rows without that match are left out
    (audited as ``publish.listing`` refused)."""
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(publications.c.release_id, publications.c.registration).order_by(
                publications.c.published_at
            )
        ).all()
    found: list[dict[str, Any]] = []
    dropped: list[str] = []
    for release_id, text in rows:
        reg = json.loads(text)
        path = products_root(home) / str(release_id) / "registration.json"
        try:
            ok = (
                ids.is_valid("release", release_id)
                and path.is_file()
                and not path.is_symlink()
                and json.loads(path.read_text(encoding="utf-8")) == reg
            )
        except (OSError, ValueError):
            ok = False
        if ok:
            found.append(reg)
        else:
            dropped.append(str(release_id)[:200])
    if dropped:
        record(
            home,
            "publish.listing",
            "publications",
            "refused",
            {
                "reason": "publication rows without their published registration",
                "rows": dropped[:20],
            },
        )
    return found


def disclosure(home: Home) -> dict[str, Any]:
    """信息披露: products and services, and how often each resource is used."""
    regs = registrations(home)
    catalog = ad.load_catalog()
    built: dict[str, int] = {}
    for m in ad.all_releases(home):
        for i in m.inputs:
            built[i.resource] = built.get(i.resource, 0) + 1
    usage = []
    for res in catalog:
        used_by = sorted(
            {r["product_code"] for r in regs for s in r["sources"] if s["resource"] == res.code}
        )
        usage.append(
            {
                "resource": res.code,
                "name": res.name,
                "source_unit": res.source_unit.name,
                "published_products": len(used_by),
                "products": used_by,
                "releases_built": built.get(res.code, 0),
            }
        )
    items = [
        {
            "product_code": r["product_code"],
            "name": r["name"],
            "name_en": r["name_en"],
            "version": r["version"],
            "type": "service 数据服务" if r["kind"] == "verification" else "product 数据产品",
            "kind": r["kind"],
            "purpose_category": r["purpose_category"],
            "pricing_note": r["pricing_note"],
            "developer": r["developer"],
            "release_date": r["release_date"],
            "published_at": r["published_at"],
            "reviewer": r["reviewer"],
        }
        for r in regs
    ]
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "products_and_services": items,
        "resource_usage": usage,
    }


def refresh_listings(home: Home) -> dict[str, Path]:
    """Rewrite the product catalog and the disclosure listing (caller holds the lock)."""
    paths = catalog_paths(home)
    regs = registrations(home)
    disc = disclosure(home)
    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    cat_doc = {"generated_at": disc["generated_at"], "products": regs}
    atomic.write_text(paths["catalog_json"], json.dumps(cat_doc, ensure_ascii=False, indent=1))
    atomic.write_text(
        paths["catalog_html"], env.get_template("catalog.html.j2").render(doc=cat_doc)
    )
    atomic.write_text(paths["disclosure_json"], json.dumps(disc, ensure_ascii=False, indent=1))
    atomic.write_text(
        paths["disclosure_html"], env.get_template("disclosure.html.j2").render(doc=disc)
    )
    return paths
