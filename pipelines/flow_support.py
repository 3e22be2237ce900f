"""What the Prefect flow modules (``pipelines/flows*.py``) share.

- :func:`flow_home`: a flow never falls back to ``./.shuyu``. Under a worker the current
  directory is the code checkout (the deployment's pull step), so an unset or relative
  ``SHUYU_HOME`` would write the domain into the repository; it is refused instead.
- :func:`flow_actor`: the audit records the person who asked for the run. A deployment run
  names them in ``requested_by``; the worker's OS login must be a service account of the domain
  policy, and the requester an active account holding the role (``governance.identity``).
- :func:`with_retries`: transient failures are retried here rather than by Prefect, because
  Prefect logs a traceback for every failed attempt, including user errors that cannot heal.
- :func:`user_error`: a ``ShuyuError`` ends the flow run Failed with the CLI's one-line text as
  the state message and one log line, no traceback. Prefect's engine still re-raises the failed
  state's exception at the end of a deployment run and logs it with a traceback; the filter
  installed below turns such records into the one line when the exception is a ShuyuError.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from governance.actors import Actor, current_actor, set_current
from shuyu_core.errors import PermissionDenied, ShuyuError
from shuyu_core.home import Home

T = TypeVar("T")

# What a deployment hands a flow through job_variables.env (prefect.yaml). An unresolved
# "{{ $VAR }}" means the variable was unset when `prefect deploy` ran.
FLOW_ENV = (
    "SHUYU_HOME",
    "SHUYU_DATABASE_URL",
    "SHUYU_PSEUDONYM_KEY_FILE",
    "SHUYU_SM4_KEY_FILE",
    "PREFECT_LOCAL_STORAGE_PATH",
)
_ENV_HINT = (
    "export it before `prefect --no-prompt deploy --all` (prefect.yaml job_variables.env), or in "
    "the worker's environment"
)


class _UserErrorsInOneLine(logging.Filter):
    """A ``ShuyuError`` logged with exc_info (by Prefect's engine) becomes its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ShuyuError):
            record.msg = f"{record.getMessage()}: {exc.one_line()} (user error)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = _UserErrorsInOneLine()
# The loggers Prefect's engines write run records to (flow run, task run, process engine).
for _name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
    if _ONE_LINE not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_ONE_LINE)


def in_deployment_run() -> bool:
    """True when this flow run was created from a deployment (i.e. runs under a worker)."""
    from prefect.runtime import deployment

    return deployment.id is not None


def flow_home() -> Home:
    """The operating domain of this flow run: ``SHUYU_HOME``, set and absolute, or a refusal."""
    for name in FLOW_ENV:
        value = os.environ.get(name, "")
        if "{{" in value:
            raise ShuyuError(
                f"{name} is the unresolved template {value!r} in this flow run's environment",
                hint=_ENV_HINT,
            )
    raw = os.environ.get("SHUYU_HOME", "").strip()
    if not raw:
        raise ShuyuError(
            "SHUYU_HOME is not set for this flow run (a flow never writes into ./.shuyu of the "
            "code checkout)",
            hint=_ENV_HINT + ", as an absolute path",
        )
    if not Path(raw).is_absolute():
        raise ShuyuError(
            f"SHUYU_HOME {raw!r} is relative; a flow run's working directory is the code checkout",
            hint="give an absolute path in the deployment's job_variables.env",
        )
    return Home.from_env(raw).ensure()


def for_local_flow_run(home: Home) -> None:
    """Before the CLI runs a flow in-process (``--prefect``): hand it the resolved home."""
    os.environ["SHUYU_HOME"] = str(home.root)


def flow_actor(home: Home, requested_by: str | None) -> Actor:
    """Who this flow run acts for; refused (and audited) unless an account holds the role.

    A deployment run must name ``requested_by``: otherwise the audit would record whoever
    configured the worker. A local run (``shuyu ingest --prefect``, tests) without it acts as
    the CLI's or the environment's actor, exactly as the command line would.
    """
    from governance.audit import record
    from governance.identity import resolve

    if requested_by and "{{" in requested_by:
        raise ShuyuError(
            f"requested_by is the unresolved template {requested_by!r}",
            hint="export SHUYU_SCHEDULED_BY=ACCOUNT before `prefect deploy` (the account that "
            "scheduled runs act for), or pass -p requested_by=ACCOUNT",
        )
    if requested_by:
        actor = resolve(home, requested_by, None)
    elif in_deployment_run():
        exc = PermissionDenied(
            "this deployment run names no requested_by",
            hint="trigger it with -p requested_by=ACCOUNT (prefect deployment run … / the portal)",
        )
        from governance.identity import login_name

        record(
            home,
            "flow.identity",
            "requested_by",
            "refused",
            {"reason": exc.message},
            actor=Actor(login_name(), "none"),
        )
        exc.audited = True
        raise exc
    else:
        actor = current_actor()
    set_current(actor)
    return actor


@contextmanager
def acting(actor: Actor) -> Iterator[None]:
    """Run a task body as ``actor`` (a task may run in another thread's context)."""
    set_current(actor)
    try:
        yield
    finally:
        set_current(None)


def run_logger() -> Any:
    """The flow/task run's logger inside a run, else this module's (tests, plain calls)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def with_retries(fn: Callable[[], T], *, what: str, retries: int = 2, delay: float = 5.0) -> T:
    """Call ``fn``; retry other errors up to ``retries`` times, never a ``ShuyuError``."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except ShuyuError:
            raise
        except Exception as exc:
            if attempt == retries:
                raise
            run_logger().warning(
                "%s: attempt %d of %d failed (%s: %s); retrying in %.0f s",
                what,
                attempt + 1,
                retries + 1,
                type(exc).__name__,
                exc,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def user_error(exc: ShuyuError) -> Any:
    """The flow's end state for a user error: Failed, its message the CLI's one line."""
    from prefect.states import Failed

    line = exc.one_line()
    # A source that stayed down was retried (pipelines.flows.pull_task) before it got here.
    why = "source down, retried" if getattr(exc, "retried", False) else "user error, not retried"
    run_logger().error("%s (%s)", line, why)
    return Failed(message=line, data=exc)
