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
from rich.markup import escape
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from governance.actors import Request, set_request
from shuyu_core.errors import ShuyuError, ValidationError

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
        cli_portal,
        cli_products,
        cli_quality,
        cli_recovery,
        cli_scale,
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
    cli_portal.register(app)
    cli_recovery.register(app)
    cli_ops.register(app)
    cli_scale.register(app)
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


GLOBAL_OPTIONS = ("--home", "--actor", "--role", "--debug")


def _usage_error(exc: Exception) -> ValidationError:
    """A usage error as one line naming the problem, with a hint that fixes it."""
    fmt = getattr(exc, "format_message", None)
    message = (fmt() if callable(fmt) else str(exc)).replace("\n", " ").strip()
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "shuyu") or "shuyu"
    name = getattr(exc, "option_name", None) or ""
    if not message:  # no command given: the help listing was printed just above
        return ValidationError(
            f"usage: {path} needs a command", hint="choose one of the commands listed above"
        )
    if name in GLOBAL_OPTIONS:
        hint = f"global options ({', '.join(GLOBAL_OPTIONS)}) go before the command: shuyu {name} …"
    else:
        hint = f"see '{path} --help'"
    return ValidationError(f"usage: {message}", hint=hint)


def _print_error(exc: ShuyuError) -> None:
    # Escaped: a path or value in the message may contain [brackets] rich would eat.
    err_console.print(
        f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True
    )


def _database_error(exc: Exception) -> ShuyuError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    hint = "check SHUYU_DATABASE_URL (e.g. postgresql+psycopg://user@host:5432/db) and the server"
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return ValidationError(f"state database URL not usable: {first}", hint=hint)
    return ShuyuError(f"state database unavailable: {first}", hint=hint)


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
        _print_error(exc)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except SystemExit:
        raise
    except typer.exceptions.TyperException as exc:
        # Usage errors (typer's vendored click) arrive here in non-standalone mode: a user
        # mistake like any other, so one line, audited, exit 4.
        usage = _usage_error(exc)
        _audit_failure(usage)
        _print_error(usage)
        sys.exit(usage.exit_code)
    except SQLAlchemyError as exc:
        # The state database named by SHUYU_DATABASE_URL is malformed or unreachable: a
        # configuration or operations problem, said in one line (nothing can be audited).
        if _state["debug"]:
            raise
        db = _database_error(exc)
        _print_error(db)
        sys.exit(db.exit_code)
    except OSError as exc:
        # A path the user named that cannot be read or written (permissions, a directory
        # where a file is expected, a full disk): the environment, not a bug.
        if _state["debug"]:
            raise
        io = ValidationError(
            f"{exc.filename or 'file'}: {exc.strerror or type(exc).__name__}",
            hint="check the path, its permissions and the free space",
        )
        _audit_failure(io)
        _print_error(io)
        sys.exit(io.exit_code)
    except Exception as exc:
        if _state["debug"]:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} — rerun with "
            "--debug "
            "and report it",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(70)
