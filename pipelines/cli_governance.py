"""Governance commands: ``shuyu audit``, ``agreements``, ``consent``, ``blacklist``, ``keys``.

``register(app)`` adds them to the top-level ``shuyu`` app.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shuyu_core.errors import IntegrityError, ValidationError
from shuyu_core.home import Home

console = Console()

audit_app = typer.Typer(
    help="tamper-evident audit log (操作日志), kept five years", no_args_is_help=True
)
agreements_app = typer.Typer(
    help="agreements and scenario authorization (授权协议, 一场景一授权)", no_args_is_help=True
)
consent_app = typer.Typer(
    help="ledger of data-subject authorizations (信息主体授权台账)", no_args_is_help=True
)
blacklist_app = typer.Typer(help="developer blacklist (黑名单)", no_args_is_help=True)
keys_app = typer.Typer(help="pseudonymization (HMAC-SM3) and SM4 keys", no_args_is_help=True)

FORMAT_HELP = "table (for people) or json (a stable contract on stdout)"


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.add_typer(agreements_app, name="agreements")
    app.add_typer(consent_app, name="consent")
    app.add_typer(blacklist_app, name="blacklist")
    app.add_typer(keys_app, name="keys")


def _home() -> Home:
    return Home.from_env().ensure()


def _format(value: str) -> str:
    if value not in ("table", "json"):
        raise ValidationError(f"unknown format {value!r}", hint="use --format table or json")
    return value


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{option} {value!r} is not a date", hint="write it as YYYY-MM-DD"
        ) from None


# ------------------------------------------------------------------------------ audit


@audit_app.command("verify")
def audit_verify(
    anchor: str | None = typer.Option(
        None, "--anchor", help="SEQ:HASH noted earlier outside the domain; must still match"
    ),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
) -> None:
    """Walk the hash chain; exit 8 and name the first break if anything was altered."""
    from governance import audit, roles

    home = _home()
    _format(fmt)
    roles.require(home, "audit.read", "audit_log")
    parsed: tuple[int, str] | None = None
    if anchor is not None:
        seq, _, digest = anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise ValidationError(
                f"--anchor {anchor!r} is not SEQ:HASH", hint="e.g. --anchor 1200:<64 hex digits>"
            )
        parsed = (int(seq), digest.lower())
    from governance import accounts, domain_policy
    from privacy.dp import ledger_integrity

    result = audit.verify(home, parsed)
    # The budget ledger is evidence anchored in the chain: verify it too.
    books = ledger_integrity.verify(home)
    # So are the accounts (identity) and the stored domain policy versions (floors).
    identity = accounts.problems(home) + domain_policy.problems(home)
    if fmt == "json":
        _emit_json({**result.to_dict(), "ledger": books.to_dict(), "identity_and_policy": identity})
    else:
        if result.ok:
            console.print(f"[green]ok[/] {result.one_line()}", highlight=False)
            console.print(
                "note the head outside the domain to check it later: "
                f"--anchor {result.head_seq}:{result.head_hash}",
                highlight=False,
            )
        mark = "[green]ok[/]" if books.ok else "[red]broken[/]"
        console.print(f"{mark} {books.one_line()}", highlight=False)
        for f in books.findings:
            console.print(f"  {f.kind}: {f.problem}", highlight=False)
        if identity:
            console.print("[red]broken[/] accounts / domain policy:", highlight=False)
            for problem in identity:
                console.print(f"  {problem}", highlight=False)
        else:
            console.print(
                "[green]ok[/] accounts and domain policy versions match their audit record"
            )
    try:
        audit.record(
            home,
            "audit.verify",
            "audit_log",
            "ok" if result.ok and books.ok and not identity else "error",
            {**result.to_dict(), "ledger": books.to_dict(), "identity_and_policy": identity},
        )
    except audit.AuditChainBroken:
        # A broken head refuses every append, this one included; the verdict below (exit 8,
        # first inconsistent entry) is what the operator needs, not the refused append.
        if result.ok:
            raise
    if not result.ok:
        exc = audit.AuditChainBroken(
            result.one_line(),
            hint="export the log ('shuyu audit export') and investigate; never purge it",
        )
        exc.audited = True
        raise exc
    if not books.ok:
        # A break found here holds later charges exactly as one found by a charge.
        ledger_integrity.record_break(home, "dp_ledger", books, "audit.verify")
        exc2 = ledger_integrity.tampered(books, "audit verify")
        exc2.audited = True
        raise exc2
    if identity:
        exc3 = IntegrityError(
            f"{len(identity)} account or domain policy record(s) differ from the audit chain: "
            f"{identity[0]}",
            hint="an admin investigates; the accounts named are refused until then",
        )
        exc3.audited = True
        raise exc3


@audit_app.command("export")
def audit_export(
    since: str | None = typer.Option(None, "--since", help="first day (UTC), YYYY-MM-DD"),
    until: str | None = typer.Option(None, "--until", help="day after the last (UTC)"),
    out: Path | None = typer.Option(None, "--out", help="write to this file instead of stdout"),
) -> None:
    """Write entries as JSON lines (with their hashes, so the export can be re-verified)."""
    from governance import audit, roles
    from shuyu_core import atomic

    home = _home()
    roles.require(home, "audit.export", "audit_log")
    if out is not None:
        from governance.zones import guard_out

        out = guard_out(home, out, "audit export")
    start = _parse_date(since, "--since") if since else None
    end = _parse_date(until, "--until") if until else None
    count = 0
    if out is None:
        for line in audit.export(home, start, end):
            sys.stdout.write(line + "\n")
            count += 1
        sys.stdout.flush()
    else:
        lines = list(audit.export(home, start, end))
        count = len(lines)
        atomic.write_text(out, "".join(line + "\n" for line in lines))
        Console(stderr=True).print(f"wrote {count} entries to {out}", highlight=False)
    audit.record(
        home,
        "audit.export",
        str(out) if out else "stdout",
        "ok",
        {"since": since, "until": until, "entries": count},
    )


@audit_app.command("tail")
def audit_tail(
    n: int = typer.Option(20, "-n", "--lines", min=1, help="how many of the last entries"),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
) -> None:
    """Show the last entries."""
    from governance import audit, roles

    home = _home()
    _format(fmt)
    roles.require(home, "audit.read", "audit_log")
    rows = audit.tail(home, n)
    if fmt == "json":
        _emit_json(rows)
        return
    table = Table("seq", "time (UTC)", "actor", "role", "action", "object", "outcome", "hash")
    for r in rows:
        colour = {"ok": "green", "refused": "yellow", "error": "red"}.get(r["outcome"], "white")
        table.add_row(
            str(r["seq"]),
            r["ts"],
            r["actor"],
            r["role"],
            r["action"],
            r["object"],
            f"[{colour}]{r['outcome']}[/]",
            r["hash"][:12],
        )
    console.print(table)


@audit_app.command("purge")
def audit_purge(
    before: str = typer.Option(..., "--before", help="delete entries older than this day"),
) -> None:
    """Delete entries older than a date; anything younger than five years is refused."""
    from governance import audit, roles

    home = _home()
    roles.require(home, "audit.purge", "audit_log")
    removed = audit.purge(home, _parse_date(before, "--before"))
    console.print(f"purged {removed} entries older than {before}", highlight=False)


# ------------------------------------------------------------------------- agreements


def _agreement_summary(ag: Any, at: dt.date) -> dict[str, Any]:
    return {
        "id": ag.id,
        "kind": ag.kind.value,
        "title": ag.title,
        "grantor": ag.parties.grantor.name,
        "grantee": ag.parties.grantee.name,
        "developer": ag.developer,
        "parent": ag.parent,
        "start": ag.term.start.isoformat(),
        "end": ag.term.end.isoformat(),
        "status": ag.status.value,
        "in_force": ag.term.start <= at <= ag.term.end and ag.status_on(at).value == "active",
        "scenarios": [s.id for s in ag.scenarios],
    }


@agreements_app.command("list")
def agreements_list(fmt: str = typer.Option("table", "--format", help=FORMAT_HELP)) -> None:
    """List agreements with their term, status and scenarios."""
    from governance import roles
    from governance.agreements import load_agreements

    home = _home()
    _format(fmt)
    roles.require(home, "agreements.read", "agreements")
    today = dt.date.today()
    rows = [_agreement_summary(ag, today) for ag in load_agreements()]
    if fmt == "json":
        _emit_json({"agreements": rows})
        return
    table = Table("id", "kind", "grantee", "developer", "term", "status", "in force", "scenarios")
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["grantee"],
            r["developer"] or "",
            f"{r['start']}..{r['end']}",
            r["status"],
            "yes" if r["in_force"] else "[red]no[/]",
            ", ".join(r["scenarios"]),
        )
    console.print(table)


@agreements_app.command("show")
def agreements_show(
    agreement_id: str = typer.Argument(..., help="agreement id, e.g. OA-2025-001"),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
) -> None:
    """Show one agreement: parties, term, scope per resource and per scenario."""
    from governance import roles
    from governance.agreements import load_agreements

    home = _home()
    _format(fmt)
    roles.require(home, "agreements.read", agreement_id)
    ag = load_agreements().get(agreement_id)
    if fmt == "json":
        _emit_json(ag.model_dump(mode="json"))
        return
    s = _agreement_summary(ag, dt.date.today())
    console.print(f"[bold]{ag.id}[/] {ag.title}", highlight=False)
    console.print(
        f"{ag.kind.value}: {ag.parties.grantor.name} ({ag.parties.grantor.role}) → "
        f"{ag.parties.grantee.name} ({ag.parties.grantee.role})"
        + (f", developer {ag.developer}, parent {ag.parent}" if ag.developer else ""),
        highlight=False,
    )
    console.print(
        f"term {s['start']}..{s['end']}, status {s['status']}"
        + (
            f" since {ag.status_change.since}: {ag.status_change.reason}"
            if ag.status_change
            else ""
        )
        + f"; purposes {', '.join(ag.purposes)}; destinations {', '.join(ag.destinations)}; "
        f"reversible outputs {'allowed' if ag.reversible_outputs else 'not allowed'}",
        highlight=False,
    )
    table = Table("scenario", "name", "resource", "fields")
    for sc in ag.scenarios:
        for code, fields in sc.inputs.items():
            table.add_row(sc.id, sc.name, code, ", ".join(fields))
    console.print(table)
    for sc in ag.scenarios:
        pairs = "; verifies " + ", ".join(
            p.label() + ("" if p.consent_required else " (no consent)") for p in sc.verify
        )
        console.print(
            f"{sc.id}: products {', '.join(sc.products)}{pairs if sc.verify else ''}",
            highlight=False,
        )


@agreements_app.command("validate")
def agreements_validate() -> None:
    """Validate every agreement and the blacklist, and check them against the catalog."""
    from catalogs.catalog import Catalog
    from governance import audit, roles
    from governance.agreements import load_agreements, load_blacklist, validate_against_catalog

    home = _home()
    roles.require(home, "agreements.read", "agreements")
    agreements = load_agreements()
    blacklist = load_blacklist()
    problems = validate_against_catalog(agreements, Catalog.load())
    if problems:
        exc = ValidationError(
            f"{len(problems)} agreement problem(s): " + "; ".join(problems),
            hint="align the agreements with the catalog",
        )
        audit.record(
            home, "agreements.validate", str(agreements.directory), "error", {"problems": problems}
        )
        exc.audited = True
        raise exc
    audit.record(
        home,
        "agreements.validate",
        str(agreements.directory),
        "ok",
        {"agreements": len(agreements), "blacklisted": len(blacklist.entries)},
    )
    console.print(
        f"[green]ok[/] {len(agreements)} agreements in {agreements.directory} and "
        f"{len(blacklist.entries)} blacklist entries are valid",
        highlight=False,
    )


def _parse_inputs(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        code, sep, fields = v.partition(":")
        names = [f.strip() for f in fields.split(",") if f.strip()]
        if not sep or not code.strip() or not names:
            raise ValidationError(
                f"--input {v!r} is not CODE:FIELD,FIELD",
                hint="e.g. --input RKJBXX:公民身份号码,姓名",
            )
        out.setdefault(code.strip(), []).extend(names)
    return out


@agreements_app.command("check")
def agreements_check(
    agreement: str = typer.Option(..., "--agreement", help="agreement id"),
    scenario: str = typer.Option(..., "--scenario", help="scenario id"),
    inputs: list[str] = typer.Option(..., "--input", help="CODE:FIELD,FIELD (repeatable)"),
    purpose: str = typer.Option(..., "--purpose", help="public_good or industry"),
    developer: str | None = typer.Option(None, "--developer", help="developer id"),
    destination: str = typer.Option("domestic", "--destination", help="domestic or a region"),
    reversible: bool = typer.Option(False, "--reversible", help="outputs reversible to raw"),
    at: str | None = typer.Option(None, "--at", help="date to check (default today)"),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
) -> None:
    """Run the authorization check for a planned build; exit 5 listing every failure."""
    from governance import roles
    from governance.authorization import AuthorizationRequest, authorize
    from shuyu_core.errors import PermissionDenied

    home = _home()
    _format(fmt)
    roles.require(home, "agreements.read", agreement)
    request = AuthorizationRequest(
        agreement_id=agreement,
        scenario=scenario,
        developer=developer,
        inputs=_parse_inputs(inputs),
        purpose=purpose,
        destination=destination,
        reversible_outputs=reversible,
        at=_parse_date(at, "--at") if at else dt.date.today(),
    )
    result = authorize(home, request)
    if fmt == "json":
        _emit_json(result.to_dict())
    elif result.ok:
        console.print(
            f"[green]authorized[/] scenario {scenario} under {agreement} on {request.at}",
            highlight=False,
        )
    else:
        table = Table("code", "reason")
        for f in result.failures:
            table.add_row(f.code, f.message)
        console.print(table)
    if not result.ok:
        exc = PermissionDenied(
            f"authorization refused: {', '.join(result.codes)}",
            hint=f"see 'shuyu agreements show {agreement}'",
        )
        exc.audited = True
        raise exc


# ---------------------------------------------------------------------------- consent


@consent_app.command("import")
def consent_import(
    path: Path = typer.Argument(..., help="CSV or Parquet with raw subject IDs"),
    id_column: str = typer.Option("subject_id", "--id-column", help="column of subject IDs"),
    purpose: str | None = typer.Option(
        None, "--purpose", help="purpose for every row (else a purpose column)"
    ),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
) -> None:
    """Import authorizations; subject IDs are tokenized (HMAC-SM3) and never stored."""
    from governance import roles
    from governance.consent import ConsentLedger

    home = _home()
    _format(fmt)
    roles.require(home, "consent.import", str(path))
    summary = ConsentLedger(home).import_file(path, id_column=id_column, purpose=purpose)
    if fmt == "json":
        _emit_json(summary)
        return
    console.print(
        f"imported {summary['added']} authorizations for {summary['subjects']} subjects "
        f"({summary['duplicates']} already recorded) from {path}",
        highlight=False,
    )


@consent_app.command("revoke")
def consent_revoke(
    consent_id: int | None = typer.Option(None, "--id", help="consent id (see consent list)"),
    subject: str | None = typer.Option(None, "--subject", help="raw subject ID (tokenized)"),
    token: str | None = typer.Option(None, "--token", help="subject token"),
    purpose: str | None = typer.Option(None, "--purpose", help="only this purpose"),
    reason: str = typer.Option("revoked by the data subject", "--reason"),
) -> None:
    """Revoke one authorization by id, or a subject's authorizations."""
    from governance import roles
    from governance.consent import ConsentLedger

    home = _home()
    given = [x for x in (consent_id, subject, token) if x is not None]
    if len(given) != 1:
        raise ValidationError(
            "give exactly one of --id, --subject and --token", hint="e.g. --id 42"
        )
    roles.require(home, "consent.revoke", f"consent {consent_id or '(subject)'}")
    n = ConsentLedger(home).revoke(
        consent_id=consent_id, subject_id=subject, token=token, purpose=purpose, reason=reason
    )
    console.print(f"revoked {n} authorization(s)", highlight=False)


@consent_app.command("list")
def consent_list(
    purpose: str | None = typer.Option(None, "--purpose"),
    subject: str | None = typer.Option(None, "--subject", help="raw subject ID (tokenized)"),
    active: bool = typer.Option(False, "--active", help="hide revoked authorizations"),
    limit: int = typer.Option(50, "--limit", min=1),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP),
) -> None:
    """List authorizations (subjects appear only as tokens)."""
    from governance import roles
    from governance.consent import ConsentLedger

    home = _home()
    _format(fmt)
    roles.require(home, "consent.read", "consent_ledger")
    ledger = ConsentLedger(home)
    token = ledger.token(subject) if subject else None
    frame = ledger.list(purpose=purpose, token=token, include_revoked=not active, limit=limit)
    if fmt == "json":
        _emit_json({"consents": frame.to_dicts()})
        return
    table = Table("id", "subject token", "purpose", "granted", "expires", "evidence", "revoked")
    for r in frame.iter_rows(named=True):
        table.add_row(
            str(r["id"]),
            r["subject_token"][:16] + "…",
            r["purpose"],
            str(r["granted_at"]),
            str(r["expires_at"]),
            r["evidence_ref"],
            "[red]yes[/]" if r["revoked"] else "no",
        )
    console.print(table)


# -------------------------------------------------------------------------- blacklist


@blacklist_app.command("list")
def blacklist_list(fmt: str = typer.Option("table", "--format", help=FORMAT_HELP)) -> None:
    """List barred developers with reason and dates."""
    from governance import roles
    from governance.agreements import blacklist_path, load_blacklist

    home = _home()
    _format(fmt)
    roles.require(home, "blacklist.read", "blacklist")
    bl = load_blacklist()
    if fmt == "json":
        _emit_json({"file": str(blacklist_path()), **bl.model_dump(mode="json")})
        return
    table = Table("developer", "name", "reason", "since", "until", "in force")
    today = dt.date.today()
    for e in bl.entries:
        table.add_row(
            e.developer,
            e.name,
            e.reason,
            str(e.since),
            str(e.until or "—"),
            "[red]yes[/]" if e.in_force(today) else "no",
        )
    console.print(table)


# ------------------------------------------------------------------------------- keys


@keys_app.command("init")
def keys_init() -> None:
    """Create the pseudonym (HMAC-SM3) and SM4 keys under <home>/keys unless they exist."""
    from governance import audit, roles
    from shuyu_core.keys import ENCRYPTION, PSEUDONYM, init_key

    home = _home()
    roles.require(home, "keys.init", "keys")
    created: dict[str, bool] = {}
    for name in (PSEUDONYM, ENCRYPTION):
        path, new = init_key(home, name)
        created[name] = new
        console.print(f"{name}: {path} ({'created' if new else 'exists, kept'})", highlight=False)
    audit.record(home, "keys.init", "keys", "ok", {"created": created})


__all__ = [
    "agreements_app",
    "audit_app",
    "blacklist_app",
    "consent_app",
    "keys_app",
    "register",
]
