"""The ``shuyu`` command. Sub-commands live in ``pipelines/cli_<area>.py`` as typer apps.

User mistakes raise ``ShuyuError``: printed as one line, audited, non-zero exit. ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from governance.actors import Request, set_request
from shuyu_core.errors import ShuyuError

app = typer.Typer(
    name="shuyu",
    help="Shuyu (数域): public-data products inside the operating domain "
    "(原始数据不出域，数据可用不可见).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _global(
    home: Path | None = typer.Option(
        None, "--home", help="operating domain directory (default: $SHUYU_HOME or ./.shuyu)"
    ),
    actor: str | None = typer.Option(
        None,
        "--actor",
        help="the person a service account acts for (honoured only under a service account of "
        "the domain policy; default: $SHUYU_ACTOR); otherwise you act as your OS login",
    ),
    role: str | None = typer.Option(
        None,
        "--role",
        help="one of your account's granted roles: operator | reviewer | admin | source_unit | "
        "developer (default: $SHUYU_ROLE, or your only role)",
    ),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    if home is not None:
        os.environ["SHUYU_HOME"] = str(home)
    _state["debug"] = debug
    # Resolved from the accounts on first use, so 'init' and '--help' need no account.
    set_request(Request(actor, role))


def _register() -> None:
    """Attach every area's commands; each area owns its ``cli_<area>.py``."""
    from pipelines import (
        cli_accounts,
        cli_assessment,
        cli_catalog,
        cli_data,
        cli_governance,
        cli_ops,
        cli_pii,
        cli_products,
        cli_quality,
        cli_synth,
    )

    if getattr(app, "_shuyu_registered", False):
        return
    cli_accounts.register(app)
    cli_data.register(app)
    cli_synth.register(app)
    app.add_typer(cli_catalog.app, name="catalog", help="resource directory (数据资源目录)")
    cli_governance.register(app)
    cli_pii.register(app)
    cli_quality.register(app)
    cli_products.register(app)
    cli_assessment.register(app)
    cli_ops.register(app)
    app._shuyu_registered = True  # type: ignore[attr-defined]


def _audit_failure(exc: ShuyuError) -> None:
    if exc.audited:
        return
    try:
        from governance.audit import record
        from shuyu_core.home import Home

        command = " ".join(a for a in sys.argv[1:] if not a.startswith("-"))[:400]
        outcome = "refused" if exc.exit_code == 5 else "error"
        record(Home.from_env(), "cli.error", command or "shuyu", outcome, {"error": exc.one_line()})
    except Exception:
        pass


def main() -> None:
    # A temporary Prefect server (``--prefect`` without PREFECT_API_URL) needs ~25 s to start
    # on two busy cores; its default timeout is too short, and it must not phone home.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Piped to a log (CI, cron), rich would wrap every table at 80 columns.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "140")
    _register()
    try:
        app(standalone_mode=False)
    except ShuyuError as exc:
        if _state["debug"]:
            raise
        _audit_failure(exc)
        err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except SystemExit:
        raise
    except typer.exceptions.TyperException as exc:
        # Usage errors (typer's vendored click) arrive here in non-standalone mode.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:
        if _state["debug"]:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} — rerun with --debug "
            "and report it",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(70)
