"""Assessment commands: ``shuyu assess``, ``shuyu review …``, ``shuyu publish``,
``shuyu published list|disclosure``.

``register(app)`` adds them to the top-level ``shuyu`` app.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

console = Console()
err = Console(stderr=True)

review_app = typer.Typer(
    help="reviewer decisions on assessed releases (通过 / 未通过 / 限期整改)", no_args_is_help=True
)
published_app = typer.Typer(
    help="the published product catalog and disclosure listing (信息披露)", no_args_is_help=True
)

_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "rectify": "yellow"}


def _fmt(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(
            f"unknown format {value!r}", hint=f"use --format {' | '.join(allowed)}"
        )
    return value


def _print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def assess(
    release: str = typer.Argument(..., help="release id (see 'shuyu releases show')"),
    fmt: str = typer.Option("table", "--format", help="json | table | html | md"),
    at: str | None = typer.Option(
        None, "--at", help="assess as of this date (YYYY-MM-DD; default today)"
    ),
    prefect: bool = typer.Option(
        False, "--prefect", help="run as a Prefect flow run (Markdown report as an artifact)"
    ),
) -> None:
    """Run the pre-release assessment (发布前评估) of a release and print the report."""
    _fmt(fmt, ("json", "table", "html", "md"))
    day = None
    if at is not None:
        try:
            day = dt.date.fromisoformat(at)
        except ValueError:
            raise ValidationError(f"--at {at!r} is not a date", hint="use YYYY-MM-DD") from None
    from assessment.engine import assess as run
    from assessment.engine import report_paths

    home = Home.from_env().ensure()
    if prefect:
        from assessment.engine import require_latest
        from pipelines.flow_support import for_local_flow_run
        from pipelines.flows_assessment import assess_flow

        for_local_flow_run(home)
        assess_flow(release, at)
        a = require_latest(home, release)
    elif fmt == "table":
        with console.status(f"assessing {release}"):
            a = run(home, release, at=day)
    else:
        a = run(home, release, at=day)
    paths = report_paths(home, a)
    if fmt == "json":
        _print_json(a.contract())
        return
    if fmt in ("html", "md"):
        sys.stdout.write(paths[fmt].read_text(encoding="utf-8"))
        err.print(f"report: {paths[fmt]}", highlight=False)
        return
    table = Table(title=f"发布前评估 assessment of {release}")
    for col in ("dimension", "check", "status", "evidence"):
        table.add_column(col, overflow="fold")
    for c in a.checks:
        table.add_row(c.dimension, c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.evidence)
    console.print(table)
    due = f" — rectify by {a.due_date}" if a.due_date else ""
    console.print(f"verdict: [{_STYLE[a.verdict]}]{a.verdict}[/]{due}")
    for reason in a.reasons:
        console.print(f"  - {reason}", highlight=False)
    console.print(f"reports: {paths['html']} {paths['md']} {paths['json']}", highlight=False)


@review_app.command("list")
def review_list(
    show_all: bool = typer.Option(
        False, "--all", help="every assessed release, not only those awaiting a decision"
    ),
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """The reviewers' queue (待办): assessed releases awaiting a decision (full release ids)."""
    _fmt(fmt, ("json", "table"))
    from assessment import status
    from governance import roles

    home = Home.from_env().ensure()
    roles.require(home, "assessment.read", "releases/review-queue")
    rows = [s for s in status.all_statuses(home) if s.assessment is not None]
    if not show_all:
        rows = [s for s in rows if s.awaiting_review and s.stage != "published"]
    if fmt == "json":
        _print_json({"releases": [s.to_dict() for s in rows]})
        return
    table = Table(title="待评审 releases awaiting review" if not show_all else "评审 reviews")
    # a release id is copied into other commands: printed whole on one line, never cut
    table.add_column(
        "release", no_wrap=True, min_width=max((len(s.release) for s in rows), default=0)
    )
    for col in ("product", "verdict", "assessment", "stage"):
        table.add_column(col, overflow="fold")
    for s in rows:
        table.add_row(
            s.release,
            s.name,
            f"[{_STYLE.get(s.verdict or '', 'white')}]{s.verdict}[/]",
            s.assessment or "",
            s.stage_zh,
        )
    console.print(table)
    if not rows:
        console.print("no release awaits review" if not show_all else "no assessed release")


@review_app.command("show")
def review_show(
    release: str = typer.Argument(..., help="release id"),
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """Show the latest assessment of a release, its reports and the decisions so far."""
    _fmt(fmt, ("json", "table"))
    from assessment import review

    doc = review.show(Home.from_env().ensure(), release)
    if fmt == "json":
        _print_json(doc)
        return
    console.print(
        f"{doc['release']} ({doc['product']}): assessment {doc['assessment']} verdict "
        f"[{_STYLE[doc['verdict']]}]{doc['verdict']}[/]"
        + (f", rectify by {doc['due_date']}" if doc["due_date"] else "")
    )
    for c in doc["failing"]:
        console.print(f"  {c['status']}: {c['name']} — {c['evidence']}", highlight=False)
    console.print(f"report: {doc['reports']['html']}", highlight=False)
    for d in doc["decisions"]:
        due = f" (due {d['due_date']})" if d["due_date"] else ""
        console.print(
            f"  {d['decided_at'][:19]} {d['reviewer']}: {d['decision']}{due} — {d['comment']}",
            highlight=False,
        )
    if not doc["decisions"]:
        console.print("  no decision yet")


def _decide(release: str, decision: str, comment: str, fmt: str) -> None:
    _fmt(fmt, ("json", "table"))
    from assessment import review

    r = review.decide(Home.from_env().ensure(), release, decision, comment)  # type: ignore[arg-type]
    if fmt == "json":
        _print_json(r.to_dict())
        return
    due = f", due {r.due_date}" if r.due_date else ""
    console.print(
        f"{release}: {r.decision} by {r.reviewer} on assessment {r.assessment_id}{due}",
        highlight=False,
    )


@review_app.command("approve")
def review_approve(
    release: str = typer.Argument(..., help="release id"),
    comment: str = typer.Option(..., "--comment", help="the reviewer's reasons"),
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """通过: approve a release whose assessment passed (reviewer role)."""
    _decide(release, "approve", comment, fmt)


@review_app.command("reject")
def review_reject(
    release: str = typer.Argument(..., help="release id"),
    comment: str = typer.Option(..., "--comment", help="the reviewer's reasons"),
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """未通过: reject a release (reviewer role)."""
    _decide(release, "reject", comment, fmt)


@review_app.command("rectify")
def review_rectify(
    release: str = typer.Argument(..., help="release id"),
    comment: str = typer.Option(..., "--comment", help="what must be corrected"),
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """限期整改: order rectification within 30 days (reviewer role)."""
    _decide(release, "rectify", comment, fmt)


def publish(
    release: str = typer.Argument(..., help="release id"),
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """Publish an approved release whose assessment passed to published/ (operator role)."""
    _fmt(fmt, ("json", "table"))
    from assessment.publish import publish as run

    doc = run(Home.from_env().ensure(), release)
    if fmt == "json":
        _print_json(doc)
        return
    console.print(f"published {release} to {doc.get('path', '')}", highlight=False)
    for name, path in doc.get("listings", {}).items():
        console.print(f"  {name}: {path}", highlight=False)


@published_app.command("list")
def published_list(fmt: str = typer.Option("table", "--format", help="json | table")) -> None:
    """The published product catalog (产品登记)."""
    _fmt(fmt, ("json", "table"))
    from assessment.publish import registrations

    regs = registrations(Home.from_env().ensure())
    if fmt == "json":
        _print_json({"products": regs})
        return
    table = Table(title="published products 已发布产品目录")
    for col in ("code", "name", "version", "purpose", "release date", "reviewer"):
        table.add_column(col)
    for r in regs:
        table.add_row(
            r["product_code"],
            r["name"],
            r["version"],
            r["purpose_category"],
            r["release_date"],
            r["reviewer"],
        )
    console.print(table)


@published_app.command("disclosure")
def published_disclosure(
    fmt: str = typer.Option("table", "--format", help="json | table"),
) -> None:
    """The disclosure listing (信息披露): products and services, resource usage."""
    _fmt(fmt, ("json", "table"))
    from assessment.publish import disclosure

    doc = disclosure(Home.from_env().ensure())
    if fmt == "json":
        _print_json(doc)
        return
    table = Table(title="resource usage 数据资源使用情况")
    for col in ("resource", "source unit", "published products", "releases built"):
        table.add_column(col)
    for u in doc["resource_usage"]:
        table.add_row(
            f"{u['resource']} {u['name']}",
            u["source_unit"],
            str(u["published_products"]),
            str(u["releases_built"]),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("assess")(assess)
    app.command("publish")(publish)
    app.add_typer(review_app, name="review")
    app.add_typer(published_app, name="published")
