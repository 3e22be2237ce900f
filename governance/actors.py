"""Who is acting: an actor name and a role, from --actor/--role or SHUYU_ACTOR/SHUYU_ROLE."""

from __future__ import annotations

import contextvars
import getpass
import os
import re
from dataclasses import dataclass

from shuyu_core.errors import PermissionDenied

_ROLE = re.compile(r"^(operator|reviewer|source_unit:[A-Za-z0-9_-]+|developer:[A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class Actor:
    name: str
    role: str

    @property
    def kind(self) -> str:
        """operator, reviewer, source_unit or developer."""
        return self.role.split(":", 1)[0]

    @property
    def scope(self) -> str | None:
        """The source-unit code or developer id a scoped role is bound to."""
        return self.role.split(":", 1)[1] if ":" in self.role else None

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"


def _login_name() -> str:
    """The operating-system account, so an unnamed actor is still traceable in the audit log."""
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return "unknown"


def parse_actor(name: str | None, role: str | None) -> Actor:
    actor_name = name or os.environ.get("SHUYU_ACTOR") or _login_name()
    actor_role = role or os.environ.get("SHUYU_ROLE") or "operator"
    if not _ROLE.match(actor_role):
        raise PermissionDenied(
            f"unknown role {actor_role!r}",
            hint="use operator, reviewer, source_unit:<code> or developer:<id>",
        )
    return Actor(actor_name, actor_role)


_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("actor", default=None)


def set_current(actor: Actor | None) -> None:
    """Set the acting actor for this context; None falls back to the environment again."""
    _current.set(actor)


def current_actor() -> Actor:
    """The actor set by the CLI, else one built from the environment."""
    return _current.get() or parse_actor(None, None)
