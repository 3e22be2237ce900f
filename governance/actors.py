"""Who is acting: an account name, the one granted role it acts in, and the service it came
through.

The CLI (and every other entry point outside the core) never trusts a self-declared identity:
``governance.identity.resolve`` derives the actor from the operating-system login and the
accounts table. Inside the process the resolved actor sits in a context variable; trusted
in-process callers (the portal after its login, the demo for its own accounts, tests) may set
it directly with :func:`set_current`. Gates that matter (``governance.roles.require``, the
four-eyes checks) re-check the named account anyway.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass

from shuyu_core.errors import PermissionDenied

_ROLE = re.compile(
    r"^(operator|reviewer|admin|source_unit:[A-Za-z0-9_-]+|developer:[A-Za-z0-9_-]+)$"
)


@dataclass(frozen=True)
class Actor:
    name: str
    role: str
    # The service account (OS login of the Prefect worker or the portal) acting for ``name``.
    via: str | None = None

    @property
    def kind(self) -> str:
        """operator, reviewer, admin, source_unit or developer."""
        return self.role.split(":", 1)[0]

    @property
    def scope(self) -> str | None:
        """The source-unit code or developer id a scoped role is bound to."""
        return self.role.split(":", 1)[1] if ":" in self.role else None

    def __str__(self) -> str:
        via = f" via {self.via}" if self.via else ""
        return f"{self.name} ({self.role}){via}"


def parse_actor(name: str, role: str, via: str | None = None) -> Actor:
    """An actor from an already authenticated name and a role string (syntax checked only)."""
    if not _ROLE.match(role or ""):
        raise PermissionDenied(
            f"unknown role {role!r}",
            hint="use operator, reviewer, admin, source_unit:<code> or developer:<id>",
        )
    return Actor(name, role, via)


@dataclass(frozen=True)
class Request:
    """What the command line asked for: --actor and --role (or SHUYU_ACTOR / SHUYU_ROLE)."""

    actor: str | None = None
    role: str | None = None


_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("actor", default=None)
_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar("request", default=None)


def set_current(actor: Actor | None) -> None:
    """Set the acting actor for this context; None resolves it from the accounts again."""
    _current.set(actor)


def set_request(request: Request | None) -> None:
    """Remember the command line's --actor/--role; resolved on first use (``current_actor``)."""
    _request.set(request)
    _current.set(None)


def current_actor() -> Actor:
    """The actor set in this context, else the one resolved from the login and the accounts."""
    actor = _current.get()
    if actor is not None:
        return actor
    from governance.identity import resolve
    from shuyu_core.home import Home

    req = _request.get() or Request()
    actor = resolve(Home.from_env(), req.actor, req.role)
    _current.set(actor)
    return actor
