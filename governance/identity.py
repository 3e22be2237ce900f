"""Resolving who runs a command (the trust model's first rule: identities come from accounts).

- The person is the operating-system login of the process (``pwd`` on the effective uid; the
  ``USER``/``LOGNAME`` variables are not consulted, since anyone can set them).
- ``--actor NAME`` / ``SHUYU_ACTOR`` is honoured only when that login is a service account the
  domain policy names (the Prefect worker's, the portal's). NAME is then the requester, and both
  are recorded (``Actor.via``).
- The account must exist and be active; ``--role`` / ``SHUYU_ROLE`` only selects one of its
  granted roles (``source_unit`` or ``developer`` alone select the account's scoped grant).
  Without one, an account with a single role acts in it, and one that holds ``operator``
  among others acts as operator; otherwise the role must be chosen.

Every refusal exits 5 and is audited under the login that tried.
"""

from __future__ import annotations

import os
import pwd

from governance.actors import Actor
from shuyu_core.errors import PermissionDenied, ShuyuError
from shuyu_core.home import Home


def login_name() -> str:
    """The OS account of this process."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return f"uid-{os.geteuid()}"


def _refuse(home: Home, who: Actor, message: str, hint: str) -> PermissionDenied:
    from governance.audit import record

    exc = PermissionDenied(message, hint=hint)
    try:
        record(home, "identity.resolve", who.name, "refused", {"reason": message}, actor=who)
        exc.audited = True
    except ShuyuError:
        pass
    return exc


def _pick_role(home: Home, who: Actor, roles: tuple[str, ...], wanted: str | None) -> str:
    if wanted:
        matches = [r for r in roles if r == wanted or r.split(":", 1)[0] == wanted]
        if len(matches) == 1:
            return matches[0]
        raise _refuse(
            home,
            who,
            f"account {who.name} does not hold role {wanted}"
            + (f" (its roles: {', '.join(roles)})" if roles else " (it holds no role)"),
            "choose one of the account's roles, or ask an admin: shuyu users grant NAME ROLE",
        )
    if len(roles) == 1:
        return roles[0]
    if "operator" in roles:
        return "operator"
    raise _refuse(
        home,
        who,
        f"account {who.name} holds several roles ({', '.join(roles) or 'none'})",
        "choose one with --role ROLE",
    )


def resolve(home: Home, actor_flag: str | None = None, role_flag: str | None = None) -> Actor:
    """The authenticated actor of this process (see the module doc)."""
    from governance import accounts, domain_policy

    login = login_name()
    requested = actor_flag or os.environ.get("SHUYU_ACTOR") or None
    wanted = role_flag or os.environ.get("SHUYU_ROLE") or None
    via: str | None = None
    name = login
    if requested and requested != login:
        policy = domain_policy.effective(home)
        if not policy.is_service_account(login):
            raise _refuse(
                home,
                Actor(login, "none"),
                f"--actor/SHUYU_ACTOR {requested!r} refused: login {login!r} is not a service "
                "account of the domain policy",
                "run the command under your own login (the actor is the OS account), or through "
                "the portal or a Prefect deployment",
            )
        name, via = requested, login
    acc = accounts.get(home, name)
    who = Actor(name, "none", via)
    if acc is None:
        raise _refuse(
            home,
            who,
            f"{name!r} has no account in this domain",
            "an admin creates it: shuyu users add NAME --role ROLE (first time: shuyu init "
            "--admin NAME)",
        )
    if not acc.active:
        raise _refuse(home, who, f"account {name} is disabled", "ask an admin to enable it")
    return Actor(name, _pick_role(home, who, acc.roles, wanted), via)
