"""The demo's accounts: created when the demo bootstraps a fresh domain, never afterwards.

On a domain without accounts the demo does what ``shuyu init`` does (the OS login becomes the
admin, here also the operator) and creates one reviewer and one account per source unit. On a
domain that already has accounts it only checks that those exist: the demo never creates a
reviewer on a domain someone else administers, since it approves its own releases as that
reviewer.
"""

from __future__ import annotations

from catalogs.catalog import Catalog
from governance import accounts, domain_policy
from governance.actors import Actor, current_actor, set_current
from governance.audit import record
from governance.identity import login_name
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

REVIEWER = "demo-reviewer"


def source_unit_account(unit: str) -> str:
    return f"demo-{unit}"


def demo_accounts(catalog: Catalog) -> dict[str, list[str]]:
    units = sorted({r.source_unit.code for r in catalog.resources.values()})
    found = {REVIEWER: ["reviewer"]}
    found.update({source_unit_account(u): [f"source_unit:{u}"] for u in units})
    return found


def prepare(home: Home, catalog: Catalog | None = None) -> Actor:
    """The operator the demo runs as, after making sure its accounts exist (module doc)."""
    wanted = demo_accounts(catalog or Catalog.load())
    # Fresh means no account was ever made here (the audit chain), not an emptied table.
    if accounts.count(home) == 0 and not accounts.ever_created(home):
        login = login_name()
        boot = Actor(login, "bootstrap")
        accounts.add(home, login, ["admin", "operator"], boot)
        if not domain_policy.is_applied(home):
            path = domain_policy.bootstrap_path()
            domain_policy.apply(
                home,
                domain_policy.load_file(path),
                f"demo: initial policy from {path}",
                login,
                boot,
            )
        admin = Actor(login, "admin")
        for name, roles in wanted.items():
            accounts.add(home, name, roles, admin)
        record(home, "domain.init", login, "ok", {"demo_accounts": sorted(wanted)}, actor=boot)
        set_current(None)
    missing = [n for n in wanted if accounts.get(home, n) is None]
    if missing:
        exc = PermissionDenied(
            f"the demo needs accounts that this domain lacks: {', '.join(missing)}",
            hint="run the demo on a fresh SHUYU_HOME, or an admin creates them "
            "(shuyu users add demo-reviewer --role reviewer, …)",
        )
        record(
            home,
            "demo",
            "domain",
            "refused",
            {"reason": exc.message},
            actor=Actor(login_name(), "none"),
        )
        exc.audited = True
        raise exc
    actor = current_actor()
    if actor.kind != "operator":
        raise PermissionDenied(
            f"the demo runs as an operator, not {actor}",
            hint="run it as an account holding the operator role (--role operator)",
        )
    if not _initialized_by(home, actor.name):
        # The demo approves as demo-reviewer and answers tickets as the units, in-process: on
        # a domain it did not set up for this very login, that is one operator acting as a
        # reviewer (四眼原则) — so it runs only where that login owns every demo account.
        reason = (
            f"the demo acts as its own reviewer and source-unit accounts; this domain was not "
            f"initialized by the demo for {actor.name}"
        )
        record(home, "demo", "domain", "refused", {"reason": reason}, actor=actor)
        exc = PermissionDenied(
            reason, hint="run the demo on a fresh SHUYU_HOME (it creates its own accounts)"
        )
        exc.audited = True
        raise exc
    return actor


def _initialized_by(home: Home, name: str) -> bool:
    """Whether the demo bootstrapped this domain (its ``domain.init`` entry) under ``name``."""
    from governance.audit import entries_for

    return any(
        e["actor"] == name and "demo_accounts" in e["details"]
        for e in entries_for(home, name, ("domain.init",), "ok")
    )
