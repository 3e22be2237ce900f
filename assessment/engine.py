"""Running the pre-release assessment of one release and keeping its record.

``assess(home, release_id)`` runs every check (``assessment.checks.CHECKS``), decides the
verdict (``assessment.models.decide``), writes the reports (JSON, HTML, Markdown) under
``work/assessments/<release-id>/<assessment-id>/`` and records the assessment, with a
fingerprint of everything it saw, in the state database. The release directory itself is
never touched: a release is immutable.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Date, DateTime, Integer, String, Table, Text, select
from sqlalchemy.engine import Connection

from assessment import adapters as ad
from assessment import checks as ck
from assessment.models import Assessment, Check, Fingerprint, decide
from governance.actors import current_actor
from governance.audit import record
from shuyu_core import atomic
from shuyu_core.db import METADATA
from shuyu_core.errors import IntegrityError, NotFoundError, ShuyuError
from shuyu_core.hashing import sm3_file, sm3_hex
from shuyu_core.home import Home, state_engine

assessment_runs = Table(
    "assessment_runs",
    METADATA,
    Column("assessment_id", String(200), primary_key=True),
    Column("release_id", String(200), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("assessed_at", DateTime(), nullable=False),
    Column("verdict", String(20), nullable=False),
    Column("due_date", Date(), nullable=True),
    Column("fingerprint", Text, nullable=False),
    Column("report_dir", String(1000), nullable=False),
    Column("actor", String(200), nullable=False),
)


REPORT_JSON = "assessment.json"


def reports_root(home: Home) -> Path:
    return home.work / "assessments"


def fingerprint(home: Home, manifest: ad.ReleaseManifest, catalog_version: str) -> Fingerprint:
    """Everything a publication must find unchanged since the assessment."""
    rdir = ad.release_dir(home, manifest.release_id)
    manifest_path = rdir / "release.json"
    outs = []
    for out in sorted(manifest.outputs, key=lambda o: o.path):
        path = rdir / out.path
        outs.append(f"{out.path}:{ad.file_sm3(path) if path.is_file() else 'missing'}")
    problems = ad.release_evidence(home, manifest)
    seal = ad.seal_digest(home, manifest.release_id)
    seal_state = f"{seal}:{'intact' if not problems else f'{len(problems)} problem(s)'}"
    try:
        cur = ad.current_spec(manifest.product_id)
        cur_sm3 = ad.spec_digest(cur) if cur is not None else "missing"
    except ShuyuError:
        cur_sm3 = "invalid"
    return Fingerprint(
        release_manifest_sm3=ad.file_sm3(manifest_path),
        outputs_sm3=sm3_hex("\n".join(outs).encode("utf-8")),
        release_spec_sm3=manifest.spec_sm3,
        current_spec_sm3=cur_sm3,
        governance_sm3=ad.governance_digest(),
        catalog_version=catalog_version,
        release_seal=seal_state,
    )


def _run_checks(ctx: ck.Ctx) -> list[Check]:
    out: list[Check] = []
    for fn in ck.CHECKS:
        try:
            out.append(fn(ctx))
        except Exception as exc:  # a check that cannot run must not pass silently
            dim = _DIM_OF.get(fn.__name__, "legality")
            out.append(
                Check(
                    dimension=dim,
                    name=fn.__name__,
                    title=fn.__name__,
                    status="fail",
                    evidence=f"the check could not be evaluated ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:160] if str(exc) else ''})",
                    rule="a check that cannot be evaluated fails",
                    rectifiable=False,
                )
            )
    return out


_DIM_OF = {
    "pii_scan": "desensitization",
    "raw_identifiers": "desensitization",
    "public_keys": "desensitization",
    "ledger_tied": "desensitization",
    "small_cells": "desensitization",
    "k_anonymity": "desensitization",
    "dp_ceilings": "desensitization",
    "mask_strength": "desensitization",
    "free_text_screening": "desensitization",
    "reversible_columns": "desensitization",
    "result_only": "desensitization",
    "subject_consent": "consent",
}


def _context(ctx: ck.Ctx) -> dict[str, Any]:
    """Budget, lineage and spec for the report (public metadata and numbers only)."""
    m = ctx.manifest
    budgets = []
    if m.budget is not None:
        # Each entry's own budget period (the data's reference period it was charged to).
        periods = {e.period for e in m.budget.entries}
        shown = {
            (b["resource"], b["unit"], p): b
            for p in periods
            for b in ad.budget_show(ctx.home, p)["budgets"]
        }
        for e in m.budget.entries:
            b = shown.get((e.resource, e.unit, e.period))
            budgets.append(
                {
                    "resource": e.resource,
                    "unit": e.unit,
                    "period": e.period,
                    "charged_rho": m.budget.rho,
                    "charged_epsilon": m.budget.epsilon,
                    "delta": m.budget.delta,
                    "spent_rho": b["spent"]["rho"] if b else None,
                    "total_rho": b["total"]["rho"] if b else None,
                    "remaining_rho": b["remaining"]["rho"] if b else None,
                    "remaining_epsilon": b["remaining"]["epsilon"] if b else None,
                    "budget_delta": b["total"]["delta"] if b else None,
                }
            )
    inputs = []
    for i in m.inputs:
        res = ad.resource(ctx.catalog, i.resource)
        inputs.append(
            {
                "resource": i.resource,
                "name": res.name if res else "",
                "source_unit": res.source_unit.name if res else "",
                "snapshot": i.snapshot_id,
                "rows": i.rows,
                "sm3": i.snapshot_sm3,
                "fields": list(i.fields),
            }
        )
    return {
        "budget": budgets,
        "composition": m.budget.composition if m.budget else None,
        "inputs": inputs,
        "outputs": [
            {"name": o.name, "path": o.path, "format": o.format, "rows": o.rows, "values": o.values}
            for o in m.outputs
        ],
        "spec_yaml": _spec_yaml(ctx),
        "release_created_at": m.created_at.isoformat(),
        "release_actor": m.actor,
        "agreement": m.agreement_id,
        "scenario": m.scenario,
        "developer": m.developer,
        "purpose_category": m.purpose_category,
        "pricing_note": m.pricing_note,
        "destination": m.destination,
        "catalog_version": ctx.catalog.version,
        "notes": list(m.notes),
    }


def _spec_yaml(ctx: ck.Ctx) -> str:
    path = ctx.rdir / "spec.yaml"
    if path.exists():
        return path.read_text(encoding="utf-8")
    return json.dumps(ctx.manifest.spec, ensure_ascii=False, indent=2)


def assess(home: Home, release_id: str, at: dt.date | None = None) -> Assessment:
    """Run every check on ``release_id``; store and audit the assessment; return it."""
    ad.require_role(home, "assessment.run", release_id)
    try:
        manifest = ad.load_release(home, release_id)
        catalog = ad.load_catalog()
        ad.verify_inputs(home, manifest, catalog)
    except ShuyuError as exc:
        record(home, "assessment.run", release_id, "error", {"error": exc.one_line()})
        exc.audited = True
        raise
    day = at or dt.datetime.now(dt.UTC).date()
    ctx = ck.Ctx(home=home, manifest=manifest, catalog=catalog, at=day)
    ctx.load_frames()
    results = _run_checks(ctx)
    verdict, due, reasons = decide(results, day)
    now = dt.datetime.now(dt.UTC)
    fp = fingerprint(home, manifest, catalog.version)
    with state_engine(home).connect() as conn:
        # Number the assessment and record it in one exclusive step: concurrent runs on the
        # same release get distinct ids.
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            conn.exec_driver_sql("LOCK TABLE assessment_runs IN EXCLUSIVE MODE")
        try:
            seq = _next_seq(conn, release_id)
            assessment_id = f"{release_id}-A{seq:03d}"
            out_dir = reports_root(home) / release_id / assessment_id
            conn.execute(
                assessment_runs.insert().values(
                    assessment_id=assessment_id,
                    release_id=release_id,
                    seq=seq,
                    assessed_at=now.replace(tzinfo=None),
                    verdict=verdict,
                    due_date=due,
                    fingerprint=fp.model_dump_json(),
                    report_dir=str(out_dir),
                    actor=str(current_actor()),
                )
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    result = Assessment(
        assessment_id=assessment_id,
        release=release_id,
        product=manifest.product_id,
        product_name=manifest.name,
        product_name_en=manifest.name_en,
        version=manifest.version,
        kind=manifest.kind,
        verdict=verdict,
        due_date=due,
        reasons=reasons,
        checks=results,
        assessed_at=now,
        assessed_for=day,
        actor=str(current_actor()),
        fingerprint=fp,
        context=_context(ctx),
    )
    write_reports(result, out_dir)
    record(
        home,
        "assessment.run",
        release_id,
        "ok",
        {
            "assessment": assessment_id,
            "product": manifest.product_id,
            "verdict": verdict,
            "due_date": due.isoformat() if due else None,
            "failed": [c.name for c in results if c.status == "fail"],
            "warned": [c.name for c in results if c.status == "warn"],
            "reports": str(out_dir),
            # The report file the reviewer reads and publish trusts lies in work/, which any
            # operator can write: its digest here is what it is judged against later.
            "sm3": sm3_file(out_dir / REPORT_JSON),
        },
    )
    return result


def authorization_failures(home: Home, release_id: str, at: dt.date) -> list[str]:
    """The authorization failures of ``release_id`` on ``at`` (as the assessment checks them)."""
    manifest = ad.load_release(home, release_id)
    ctx = ck.Ctx(home=home, manifest=manifest, catalog=ad.load_catalog(), at=at)
    return [f"{f.code}: {f.message}" for f in ctx.auth.failures]


def write_reports(result: Assessment, out_dir: Path) -> None:
    from assessment import report

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(
        out_dir / REPORT_JSON,
        json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=1),
    )
    atomic.write_text(out_dir / "report.html", report.render_html(result))
    atomic.write_text(out_dir / "report.md", report.render_markdown(result))


def _next_seq(conn: Connection, release_id: str) -> int:
    rows = conn.execute(
        select(assessment_runs.c.seq).where(assessment_runs.c.release_id == release_id)
    ).all()
    return max((r[0] for r in rows), default=0) + 1


def latest(home: Home, release_id: str) -> Assessment | None:
    """The newest stored assessment of ``release_id``, or None; verified against its
    ``assessment.run`` audit entry (``verified_report``)."""
    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(assessment_runs.c.assessment_id, assessment_runs.c.verdict)
            .where(assessment_runs.c.release_id == release_id)
            .order_by(assessment_runs.c.seq.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return verified_report(home, release_id, str(row[0]), str(row[1]))


def verified_report(home: Home, release_id: str, assessment_id: str, verdict: str) -> Assessment:
    """The report of ``assessment_id``, read from its one place under ``work/assessments/``
    and checked against the SM3 and verdict its ``assessment.run`` entry recorded.

    The file and the ``assessment_runs`` row are both writable by any operator; a verdict
    rewritten to pass, findings removed, or a row pointed at another report would otherwise
    be what the reviewer reads and publish relies on. A mismatch exits 8 and is audited."""
    from governance.evidence import anchored_entries

    out_dir = reports_root(home) / release_id / assessment_id
    entries, problems = anchored_entries(
        home, release_id, ("assessment.run",), "the assessment entry"
    )
    mine = [e for e in entries if e["details"].get("assessment") == assessment_id]
    path = out_dir / REPORT_JSON
    if len(mine) != 1:
        problems.append(f"assessment {assessment_id} has no single assessment.run audit entry")
    elif entries[-1]["details"].get("assessment") != assessment_id:
        # the newest row was deleted to bring back an older (approved) assessment
        problems.append(
            f"the newest audited assessment is {entries[-1]['details'].get('assessment')}, "
            f"not {assessment_id} (a newer one is missing from the table)"
        )
    else:
        d = mine[0]["details"]
        if d.get("verdict") != verdict:
            problems.append(f"the stored verdict {verdict} is not the audited {d.get('verdict')}")
        if not d.get("sm3"):
            problems.append(f"the audit entry of {assessment_id} records no report SM3")
        elif not path.is_file() or path.is_symlink() or sm3_file(path) != d["sm3"]:
            problems.append(f"{REPORT_JSON} of {assessment_id} differs from its audited SM3")
    if problems:
        exc = IntegrityError(
            f"assessment {assessment_id} does not match its audit record: {problems[0]}",
            hint=f"re-run 'shuyu assess {release_id}'; an admin investigates with "
            "'shuyu audit verify'",
        )
        record(home, "assessment.evidence", release_id, "refused", {"problems": problems[:10]})
        exc.audited = True
        raise exc
    report = load_report(out_dir)
    if report.assessment_id != assessment_id or report.release != release_id:
        raise IntegrityError(
            f"{path} is not the report of {assessment_id}", hint="re-run the assessment"
        )
    return report


def load_report(out_dir: Path) -> Assessment:
    path = out_dir / "assessment.json"
    if not path.exists():
        raise NotFoundError(
            f"assessment report {path} is missing", hint="re-run 'shuyu assess RELEASE'"
        )
    return Assessment.model_validate_json(path.read_text(encoding="utf-8"))


def require_latest(home: Home, release_id: str) -> Assessment:
    found = latest(home, release_id)
    if found is None:
        raise NotFoundError(
            f"release {release_id} has not been assessed",
            hint=f"run 'shuyu assess {release_id}' first",
        )
    return found


def report_paths(home: Home, assessment: Assessment) -> dict[str, Path]:
    base = reports_root(home) / assessment.release / assessment.assessment_id
    return {
        fmt: base / name
        for fmt, name in (("json", "assessment.json"), ("html", "report.html"), ("md", "report.md"))
    }
