"""``shuyu doctor``: what interrupted runs left behind, and ``--repair`` to complete it."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

from shuyu_core.home import Home

console = Console()


def doctor(
    repair: bool = typer.Option(
        False, "--repair", help="complete or roll back what killed runs left (else only report)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
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
    if fmt == "json":
        sys.stdout.write(
            json.dumps({"repaired": repair, **report.to_dict()}, ensure_ascii=False) + "\n"
        )
        return
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
