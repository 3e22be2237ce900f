"""``shuyu ops up|check|down``: a one-machine Prefect stack and Shuyu's own health check.

``up`` starts a loopback Prefect server (SQLite in PREFECT_HOME), creates the work pool with a
concurrency limit, deploys prefect.yaml and starts a process worker, all detached, and notes
their pids in ``$PREFECT_HOME/shuyu-ops.json``; ``down`` stops the worker, then the server.
Production runs these as services instead (docs/operations.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from governance import roles
from governance.audit import record
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home

app = typer.Typer(no_args_is_help=True)
console = Console()
_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def _prefect_home(value: Path | None) -> Path:
    raw = value or Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    return raw.expanduser().resolve()


def print_health(home: Home, rows: list[Any]) -> None:
    table = Table(title=f"运行检查 health of {home.root}")
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", r.detail)
    console.print(table)


@app.command("check")
def check(fmt: str = typer.Option("table", "--format", help="table | json")) -> None:
    """Check the home, state database, audit chain, keys, catalog, policy and Prefect API."""
    import json

    from pipelines.ops_health import FAIL, run_checks

    home = Home.from_env().ensure()
    roles.require(home, "ops.check", "domain")
    rows = run_checks(home)
    failed = [r.name for r in rows if r.status == FAIL]
    record(home, "ops.check", "domain", "ok" if not failed else "error", {"failed": failed})
    if fmt == "json":
        typer.echo(json.dumps([r.__dict__ for r in rows], ensure_ascii=False))
    else:
        print_health(home, rows)
    if failed:
        exc = ShuyuError(
            f"health check failed: {', '.join(failed)}", hint="see the detail of each failed row"
        )
        exc.audited = True  # the ops.check entry above records it
        raise exc


@app.command("up")
def up(
    prefect_home: Path | None = typer.Option(
        None, "--prefect-home", help="Prefect's state and logs (default: $PREFECT_HOME)"
    ),
    port: int = typer.Option(4200, "--port", help="server port on 127.0.0.1"),
    pool_limit: int = typer.Option(2, "--pool-limit", help="flow runs at once on the pool"),
    scheduled_by: str | None = typer.Option(
        None, "--scheduled-by", help="the account scheduled runs act for (SHUYU_SCHEDULED_BY)"
    ),
) -> None:
    """Start server → pool → deployments → worker on this machine (loopback only)."""
    from pipelines import ops_stack

    home = Home.from_env().ensure()
    who = roles.require(home, "ops.stack", "prefect-stack")
    ph = _prefect_home(prefect_home)
    state = ops_stack.load_state(ph)
    if state and any(
        ops_stack.is_our_process(pid, role) for role, pid in state.get("pids", {}).items()
    ):
        raise ShuyuError(
            f"a stack from {ph} is already running", hint="shuyu ops down first (or another port)"
        )
    cfg = ops_stack.StackConfig(
        prefect_home=ph,
        port=port,
        shuyu_home=home.root,
        pool_limit=pool_limit,
        extra_env={
            "SHUYU_HOME": str(home.root),
            "SHUYU_DATABASE_URL": os.environ.get("SHUYU_DATABASE_URL", ""),
            "SHUYU_SCHEDULED_BY": scheduled_by or os.environ.get("SHUYU_SCHEDULED_BY") or who.name,
        },
    )
    logs = ph / "logs"
    server = worker = None
    try:
        with console.status("starting the Prefect server"):
            server = ops_stack.start_server(cfg, logs / "server.log")
        with console.status("work pool and deployments"):
            ops_stack.create_pool_and_deploy(cfg)
        worker = ops_stack.start_worker(cfg, logs / "worker.log")
    except BaseException:
        ops_stack.stop(worker)
        ops_stack.stop(server)
        raise
    path = ops_stack.save_state(cfg, {"worker": worker.pid, "server": server.pid})
    record(home, "ops.up", cfg.api_url, "ok", {"prefect_home": str(ph), "pool_limit": pool_limit})
    console.print(
        f"[green]up[/] server {cfg.api_url} (pid {server.pid}), pool {cfg.pool} "
        f"limit {pool_limit}, worker pid {worker.pid}; logs {logs}; state {path}\n"
        f"export PREFECT_API_URL={cfg.api_url}"
    )


@app.command("down")
def down(
    prefect_home: Path | None = typer.Option(
        None, "--prefect-home", help="Prefect's state (default: $PREFECT_HOME)"
    ),
) -> None:
    """Stop the worker, then the server, of the stack `shuyu ops up` started."""
    from pipelines import ops_stack

    home = Home.from_env().ensure()
    roles.require(home, "ops.stack", "prefect-stack")
    ph = _prefect_home(prefect_home)
    state = ops_stack.load_state(ph)
    if state is None:
        raise ShuyuError(f"no stack recorded in {ph}", hint="pass --prefect-home of `ops up`")
    stopped = []
    for role in ("worker", "server"):  # the worker first: no run picked up from a dying server
        pid = int(state["pids"].get(role, 0))
        if pid and ops_stack.is_our_process(pid, role):
            ops_stack.stop_group(pid)
            stopped.append(f"{role} {pid}")
    (ph / ops_stack.STATE_FILE).unlink(missing_ok=True)
    record(home, "ops.down", str(ph), "ok", {"stopped": stopped})
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


stack_app = typer.Typer(no_args_is_help=True)


@stack_app.command("up")
def stack_up(
    prefect_home: Path | None = typer.Option(
        None, "--prefect-home", help="Prefect's state and logs (default: $PREFECT_HOME)"
    ),
    port: int = typer.Option(4200, "--port", help="Prefect server port on 127.0.0.1"),
    portal_port: int = typer.Option(8000, "--portal-port", help="portal port on 127.0.0.1"),
    pool_limit: int = typer.Option(2, "--pool-limit", help="flow runs at once on the pool"),
    scheduled_by: str | None = typer.Option(
        None, "--scheduled-by", help="the account scheduled runs act for (SHUYU_SCHEDULED_BY)"
    ),
    deploy: bool = typer.Option(
        True, "--deploy/--no-deploy", help="deploy prefect.yaml (off: pool only, faster)"
    ),
) -> None:
    """Server, worker and portal in the foreground, health-checked; Ctrl-C stops them in order."""
    from pipelines import ops_foreground, ops_stack

    home = Home.from_env().ensure()
    who = roles.require(home, "ops.stack", "prefect-stack")
    ph = _prefect_home(prefect_home)
    cfg = ops_stack.StackConfig(
        prefect_home=ph,
        port=port,
        shuyu_home=home.root,
        pool_limit=pool_limit,
        extra_env={
            "SHUYU_HOME": str(home.root),
            "SHUYU_DATABASE_URL": os.environ.get("SHUYU_DATABASE_URL", ""),
            "SHUYU_SCHEDULED_BY": scheduled_by or os.environ.get("SHUYU_SCHEDULED_BY") or who.name,
        },
    )
    stack = ops_foreground.ForegroundStack(cfg, portal_port, ph / "logs", deploy=deploy)
    record(home, "stack.up", cfg.api_url, "ok", {"prefect_home": str(ph), "portal": portal_port})

    def say(line: str) -> None:
        console.print(line, highlight=False)

    died = ops_foreground.run(stack, say)
    record(home, "stack.down", cfg.api_url, "ok" if died is None else "error", {"died": died})
    if died is not None:
        exc = ShuyuError(f"{died} of the stack exited on its own", hint=f"see {ph / 'logs'}")
        exc.audited = True
        raise exc


deployments_app = typer.Typer(no_args_is_help=True)


@deployments_app.command("render")
def render(
    out: Path = typer.Option(
        Path("prefect.catalog.yaml"), "--out", help="the prefect.yaml-style file to write"
    ),
    active: bool = typer.Option(
        False, "--active/--inactive", help="render the build schedules active (they spend budget)"
    ),
) -> None:
    """Write scheduled build deployments from the catalog's update frequencies."""
    from catalogs.catalog import Catalog
    from pipelines import schedules
    from products import specs
    from shuyu_core import atomic

    doc = schedules.render(Catalog.load(), specs.load_all(), active=active)
    atomic.write_text(out, schedules.render_text(doc))
    for d in doc["deployments"]:
        s = d["schedules"][0]
        console.print(
            f"{d['name']}: {s['cron']} {s['timezone']}{'' if s['active'] else ' (inactive)'}"
        )
    console.print(f"wrote {out} — prefect --no-prompt deploy --all --prefect-file {out}")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="ops", help="Prefect stack and health checks (运维)")
    parent.add_typer(stack_app, name="stack", help="one-machine trial in the foreground (试运行)")
    parent.add_typer(
        deployments_app, name="deployments", help="deployment schedules from the catalog"
    )
