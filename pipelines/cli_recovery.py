"""``shuyu doctor``: what interrupted runs left behind, and ``--repair`` to complete it."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

from shuyu_core.home import Home

console = Console()


def doctor(
    repair: bool = typer.Option(
        False, "--repair", help="complete or roll back what killed runs left (else only report)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    health: bool = typer.Option(
        False, "--health", help="also run the health checks of `shuyu ops check` (exit 1 on a fail)"
    ),
) -> None:
    """Check the audit head and list (or, with --repair, fix) what killed runs left:
    results without their audit entry, unfinished publications, stale staging and working
    files. Every command that writes files runs the same repair first (from its intents;
    doctor also scans every zone for results without an entry)."""
    from governance import recovery, roles
    from shuyu_core.errors import ValidationError

    if fmt not in ("table", "json"):
        raise ValidationError(f"unknown format {fmt!r}", hint="use --format table or json")
    home = Home.from_env().ensure()
    roles.require(home, "recover", str(home.root))
    report = recovery.sweep(home, repair=repair, deep=True)
    rows = _health(home) if health else []
    if fmt == "json":
        doc = {"repaired": repair, **report.to_dict()}
        if health:
            doc["health"] = [r.__dict__ for r in rows]
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        _fail_on(home, rows)
        return
    _print_report(report, repair)
    if health:
        from pipelines.cli_ops import print_health

        print_health(home, rows)
    _fail_on(home, rows)


def _health(home: Home) -> list[Any]:
    from governance import roles
    from pipelines.ops_health import run_checks

    roles.require(home, "ops.check", "domain")
    return run_checks(home)


def _fail_on(home: Home, rows: list[Any]) -> None:
    """Audit the health part as `shuyu ops check` does, and fail on a failed check."""
    if not rows:
        return
    from governance.audit import record
    from pipelines.ops_health import FAIL
    from shuyu_core.errors import ShuyuError

    failed = [r.name for r in rows if r.status == FAIL]
    record(home, "ops.check", "domain", "ok" if not failed else "error", {"failed": failed})
    if failed:
        exc = ShuyuError(
            f"health check failed: {', '.join(failed)}", hint="see the detail of each failed row"
        )
        exc.audited = True
        raise exc


def _print_report(report: Any, repair: bool) -> None:
    if report.empty:
        console.print("[green]ok[/] 无待修复项 nothing left by interrupted runs", highlight=False)
        return
    verb = "已修复 repaired" if repair else "待修复 to repair (run with --repair)"
    labels = {
        "recorded": "结果补记审计 result given its missing audit entry",
        "finished": "步骤补完 step finished",
        "dropped": "未生效的意图 intent of a run that changed nothing",
        "removed": "残留文件 stale staging or working files",
    }
    console.print(verb, highlight=False)
    for key, items in report.to_dict().items():
        for item in items:
            console.print(f"  {labels[key]}: {item}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
