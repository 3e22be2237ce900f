"""``shuyu quality``, ``shuyu tickets`` and ``shuyu sources``: checks, feedback, evaluation.

Wire with ``cli_quality.register(app)``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shuyu_core import atomic
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

console = Console()
# progress goes to stderr so --format json leaves stdout clean
err_console = Console(stderr=True)

quality_app = typer.Typer(
    help="data quality checks and source-unit reports (数据质量, GB/T 36344)",
    no_args_is_help=True,
)
tickets_app = typer.Typer(
    help="correction tickets for source units (数据校核, 10 working days)", no_args_is_help=True
)
sources_app = typer.Typer(
    help="source units and their data-supply evaluation (数据供给评估)", no_args_is_help=True
)


def _fmt(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(
            f"unknown --format {value!r}", hint=f"use one of: {', '.join(allowed)}"
        )
    return value


def _date(value: str | None, flag: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{flag} {value!r} is not a date", hint=f"write {flag} as YYYY-MM-DD"
        ) from None


def _sample_text(row: int, value: str | None) -> str:
    if row <= 0:  # not a row: e.g. the name of a missing field
        return str(value)
    return f"row {row}" if value is None else f"row {row}: {value}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f}%"


@quality_app.command("check")
def check_cmd(
    code: str = typer.Argument(..., help="resource code, e.g. RKJBXX"),
    snapshot: str | None = typer.Option(None, "--snapshot", help="snapshot id (default latest)"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    as_of: str | None = typer.Option(
        None, "--as-of", help="judge dates against this day (YYYY-MM-DD, default today in China)"
    ),
    no_tickets: bool = typer.Option(False, "--no-tickets", help="do not open/verify tickets"),
) -> None:
    """Check one snapshot against the catalog's rules; store the result; update tickets."""
    from pipelines.progress import steps
    from quality import api

    _fmt(fmt, ("table", "json"))
    home = Home.from_env().ensure()
    with steps(err_console, f"quality check {code}") as step:
        step("one lazy pass over the snapshot")
        result, changes = api.run_check(
            home, code, snapshot, as_of=_date(as_of, "--as-of"), open_tickets=not no_tickets
        )
    if fmt == "json":
        typer.echo(json.dumps(result.contract(), ensure_ascii=False))
        return
    ratios = result.ratios()
    head = Table(title=f"{code} snapshot {result.snapshot} · {result.rows:,} rows")
    for col in ("dimension", "score", "passed / checked"):
        head.add_column(col)
    for d, r in ratios.items():
        head.add_row(d.label, _pct(r.score), f"{r.passed:,} / {r.total:,}")
    console.print(head)
    rules = Table(title="rules")
    for col in ("rule", "dimension", "failed", "total", "examples (row: masked value)"):
        rules.add_column(col)
    for rr in result.rules:
        samples = "; ".join(_sample_text(s.row, s.value) for s in rr.samples[:3])
        style = "red" if rr.failed else None
        rules.add_row(
            rr.rule,
            rr.dimension.value,
            f"{rr.failed:,}",
            f"{rr.total:,}" if rr.total else "n/a",
            samples or (rr.note or ""),
            style=style,
        )
    console.print(rules)
    for c in changes:
        console.print(f"ticket {c.ticket} {c.rule}: {c.from_state or 'new'} → {c.to_state}")
    console.print(f"checked in {result.seconds:.2f} s")


@quality_app.command("sweep")
def sweep_cmd(
    fmt: str = typer.Option("table", "--format", help="table | json"),
    as_of: str | None = typer.Option(
        None, "--as-of", help="judge dates against this day (YYYY-MM-DD, default today in China)"
    ),
) -> None:
    """Check every resource whose latest snapshot is new; verify/reopen tickets (run after
    each ingestion or on a schedule; a second run does nothing)."""
    from pipelines.progress import steps
    from quality import api

    _fmt(fmt, ("table", "json"))
    home = Home.from_env().ensure()
    with steps(err_console, "quality sweep") as step:
        done = api.check_pending(home, as_of=_date(as_of, "--as-of"), progress=step)
    if fmt == "json":
        doc = [
            {
                **result.contract(),
                "tickets": [
                    {"ticket": c.ticket, "rule": c.rule, "from": c.from_state, "to": c.to_state}
                    for c in changes
                ],
            }
            for result, changes in done
        ]
        typer.echo(json.dumps(doc, ensure_ascii=False))
        return
    if not done:
        console.print("no new snapshot to check (每个资源的最新快照均已检查)")
        return
    table = Table(title="quality sweep (新快照质量检查)")
    for col in ("resource", "snapshot", "rows", "failing rules", "ticket changes"):
        table.add_column(col)
    for result, changes in done:
        moves: dict[str, int] = {}
        for c in changes:
            moves[c.to_state] = moves.get(c.to_state, 0) + 1
        table.add_row(
            result.resource,
            result.snapshot,
            f"{result.rows:,}",
            str(sum(1 for r in result.rules if r.failed)),
            ", ".join(f"{n} {state}" for state, n in sorted(moves.items())) or "—",
        )
    console.print(table)


@quality_app.command("report")
def report_cmd(
    unit: str | None = typer.Option(
        None, "--unit", help="source-unit code, e.g. SU-GA (a source unit: its own by default)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Write the source unit's quality report (HTML + JSON) and print where it is."""
    from quality import api

    _fmt(fmt, ("table", "json"))
    scoped = api.scope_unit(unit)
    if scoped is None:
        raise ValidationError(
            "quality report needs --unit", hint="e.g. --unit SU-GA; see 'shuyu sources evaluate'"
        )
    html_path, json_path, doc = api.write_unit_report(Home.from_env().ensure(), scoped)
    if fmt == "json":
        typer.echo(json.dumps(doc, ensure_ascii=False))
        return
    console.print(doc["summary"]["headline_zh"])
    console.print(doc["summary"]["headline_en"])
    console.print(f"HTML: {html_path}\nJSON: {json_path}")


def _ticket_table(rows: list[dict[str, object]]) -> Table:
    table = Table(title="correction tickets (数据校核)")
    for col in ("id", "unit", "resource", "rule", "state", "failed/total", "opened", "due"):
        table.add_column(col)
    for t in rows:
        table.add_row(
            str(t["id"]),
            str(t["source_unit"]),
            str(t["resource"]),
            str(t["rule"]),
            f"{t['state_zh']} {t['state']}",
            f"{t['failed']:,}/{t['total']:,}",
            str(t["opened_on"]),
            f"{t['due_on']}" + (" OVERDUE 逾期" if t["overdue"] else ""),
            style="red" if t["overdue"] else None,
        )
    return table


@tickets_app.command("list")
def tickets_list(
    unit: str | None = typer.Option(None, "--unit", help="only this source unit's tickets"),
    state: list[str] = typer.Option(
        [], "--state", help="open | acknowledged | answered | verified | reopened (repeatable)"
    ),
    overdue: bool = typer.Option(False, "--overdue", help="only overdue tickets"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """List tickets (a source unit sees only its own)."""
    from quality import api, tickets

    _fmt(fmt, ("table", "json"))
    bad = [s for s in state if s not in tickets.STATE_ZH]
    if bad:
        raise ValidationError(
            f"unknown ticket state {bad[0]!r}", hint=f"use one of: {', '.join(tickets.STATE_ZH)}"
        )
    found = api.list_tickets(Home.from_env().ensure(), unit, tuple(state) or None)
    rows = [t.view() for t in found]
    if overdue:
        rows = [r for r in rows if r["overdue"]]
    if fmt == "json":
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    console.print(_ticket_table(rows))


@tickets_app.command("show")
def tickets_show(
    ticket_id: int = typer.Argument(..., help="ticket id"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """One ticket with its history."""
    from quality import api

    _fmt(fmt, ("table", "json"))
    t, events = api.show_ticket(Home.from_env().ensure(), ticket_id)
    doc = {**t.view(), "events": events}
    if fmt == "json":
        typer.echo(json.dumps(doc, ensure_ascii=False, default=str))
        return
    console.print(_ticket_table([t.view()]))
    for e in events:
        console.print(
            f"{e['ts']} {e['actor']} ({e['role']}): {e['from_state'] or '—'} → {e['to_state']}"
            + (f" — {e['note']}" if e["note"] else "")
        )


@tickets_app.command("ack")
def tickets_ack(
    ticket_id: int = typer.Argument(..., help="ticket id"),
    note: str = typer.Option(..., "--note", help="what the unit will check (确认收到)"),
) -> None:
    """Acknowledge a ticket (source unit of the ticket only)."""
    from quality import api

    t = api.acknowledge(Home.from_env().ensure(), ticket_id, note)
    console.print(f"ticket {t.id} {t.state} (due {t.due_on})")


@tickets_app.command("answer")
def tickets_answer(
    ticket_id: int = typer.Argument(..., help="ticket id"),
    note: str = typer.Option(..., "--note", help="what was verified or corrected (反馈结果)"),
) -> None:
    """Answer a ticket; the next snapshot's check verifies or reopens it."""
    from quality import api

    t = api.answer(Home.from_env().ensure(), ticket_id, note)
    console.print(f"ticket {t.id} {t.state}; the next snapshot's check will verify it")


@sources_app.command("evaluate")
def sources_evaluate(
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    out: Path | None = typer.Option(None, "--out", help="also write the export to this file"),
) -> None:
    """Data-supply evaluation per source unit: quantity, quality, application."""
    from quality import api, evaluation

    _fmt(fmt, ("table", "csv", "json"))
    if out is not None:
        from governance.zones import guard_out

        out = guard_out(Home.from_env(), out, "sources evaluate")
    rows = api.evaluate_sources(Home.from_env().ensure())
    if fmt == "table":
        table = Table(title="data-supply evaluation (数据供给评估)")
        cols = ("unit", "resources", "rows", "freshness", "quality", "products (releases)", "score")
        for col in cols:
            table.add_column(col)
        for r in rows:
            table.add_row(
                f"{r['unit']} {r['name']}",
                f"{r['resources_delivered']}/{r['resources']}",
                f"{r['rows']:,}",
                _pct(r["freshness"]),
                _pct(r["quality"]),
                f"{r['products_using']} ({r['releases_using']})",
                f"{r['score']:.3f}",
            )
        console.print(table)
        return
    text = evaluation.to_csv(rows) if fmt == "csv" else evaluation.to_json(rows)
    if out is not None:
        atomic.write_text(out, text)
        console.print(f"wrote {out}", style="dim")
        return
    typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(quality_app, name="quality", help="data quality checks and reports (数据质量)")
    app.add_typer(tickets_app, name="tickets", help="correction tickets (数据校核)")
    app.add_typer(sources_app, name="sources", help="source-unit evaluation (数据供给评估)")
