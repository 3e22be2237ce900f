"""Identity commands: ``shuyu init``, ``users``, ``policy`` and ``whoami``.

Accounts and the domain policy are changed only by an ``admin`` account (``shuyu --role admin
users …``); ``init`` creates the first admin on a domain that has no account yet.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from governance import accounts, domain_policy, roles
from governance.actors import Actor, current_actor
from governance.audit import record
from governance.identity import login_name
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home

console = Console()
users_app = typer.Typer(help="accounts and granted roles (账号与角色)", no_args_is_help=True)
policy_app = typer.Typer(help="the domain privacy policy (域内隐私策略)", no_args_is_help=True)

ROLE_HELP = "operator | reviewer | admin | source_unit (with --unit) | developer (with --developer)"


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("whoami")(whoami)
    app.add_typer(users_app, name="users")
    app.add_typer(policy_app, name="policy")


def _home() -> Home:
    return Home.from_env().ensure()


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(
            f"cannot read password file {path}: {exc.strerror}",
            hint="give a readable file whose first line is the password",
        ) from None
    return lines[0] if lines else ""


def _admin(home: Home, obj: str) -> Actor:
    return roles.require(home, "accounts.manage", obj)


def _sod(home: Home) -> bool:
    return domain_policy.effective(home).separation_of_duties.enabled


def init(
    admin: str = typer.Option(..., "--admin", help="name of the first admin account"),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="file whose first line is the admin's portal password"
    ),
    policy: Path | None = typer.Option(
        None,
        "--policy",
        help="initial domain policy (default: $SHUYU_DOMAIN_POLICY or the shipped one)",
    ),
) -> None:
    """Create the first admin account and store the initial domain policy (a fresh domain only)."""
    home = _home()
    by = Actor(login_name(), "bootstrap")
    if accounts.count(home) or domain_policy.is_applied(home) or accounts.ever_created(home):
        message = (
            "this domain is already initialized (it has accounts or a stored policy, or its "
            "audit chain records accounts made before)"
        )
        record(home, "domain.init", admin, "refused", {"reason": message}, actor=by)
        exc = PermissionDenied(message, hint="an admin manages accounts with 'shuyu users'")
        exc.audited = True
        raise exc
    source = policy or domain_policy.bootstrap_path()
    initial = domain_policy.load_file(source)
    acc = accounts.add(home, admin, ["admin"], by, password=_read_password(password_file))
    version = domain_policy.apply(home, initial, f"initial policy from {source}", admin, by)
    record(home, "domain.init", admin, "ok", {"policy_version": version}, actor=by)
    console.print(
        f"initialized: admin account [bold]{acc.name}[/], domain policy v{version} from {source}"
    )


def whoami(fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    """Who this command runs as: account, role, service account, and the account's roles."""
    home = _home()
    who = current_actor()
    acc = accounts.require_account(home, who.name)
    data = {"account": who.name, "role": who.role, "via": who.via, "roles": list(acc.roles)}
    if fmt == "json":
        _emit_json(data)
    else:
        via = f" via {who.via}" if who.via else ""
        console.print(f"{who.name} acting as {who.role}{via}; granted: {', '.join(acc.roles)}")


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="account name (for people: their OS login name)"),
    role: list[str] = typer.Option(..., "--role", help=ROLE_HELP),
    unit: str | None = typer.Option(None, "--unit", help="source-unit code for source_unit"),
    developer: str | None = typer.Option(None, "--developer", help="developer id for developer"),
    display_name: str | None = typer.Option(None, "--display-name", help="name shown in reports"),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="file whose first line is the portal password"
    ),
    email: str | None = typer.Option(None, "--email", help="notification address (通知邮箱)"),
) -> None:
    """Create an account with granted roles (admin)."""
    home = _home()
    by = _admin(home, name)
    granted = [accounts.role_string(r, unit, developer) for r in role]
    acc = accounts.add(
        home,
        name,
        granted,
        by,
        display_name=display_name,
        password=_read_password(password_file),
        sod=_sod(home),
    )
    if email:
        acc = accounts.set_email(home, acc.name, email, by)
    console.print(f"account {acc.name} created with roles {', '.join(acc.roles)}")


@users_app.command("email")
def users_email(
    name: str = typer.Argument(...),
    address: str | None = typer.Argument(None, help="the address; omit with --clear"),
    clear: bool = typer.Option(False, "--clear", help="remove the address"),
) -> None:
    """Set or clear an account's notification e-mail address (admin)."""
    if (address is None) != clear:
        raise ValidationError("give an address or --clear", hint="shuyu users email NAME ADDRESS")
    home = _home()
    by = _admin(home, name)
    acc = accounts.set_email(home, name, address, by)
    console.print(f"account {acc.name}: e-mail {acc.email or '(none)'}")


@users_app.command("list")
def users_list(fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    """Accounts with their roles and status (never password hashes)."""
    home = _home()
    roles.require(home, "accounts.read", "accounts")
    found = [a.public() for a in accounts.list_all(home)]
    if fmt == "json":
        _emit_json(found)
        return
    table = Table("账号 account", "名称 name", "角色 roles", "状态 status", "口令 password")
    for a in found:
        table.add_row(
            a["name"],
            a["display_name"],
            ", ".join(a["roles"]),
            a["status"],
            "set" if a["password"] else "—",
        )
    console.print(table)


@users_app.command("grant")
def users_grant(
    name: str = typer.Argument(...),
    role: str = typer.Argument(..., help=ROLE_HELP),
    unit: str | None = typer.Option(None, "--unit"),
    developer: str | None = typer.Option(None, "--developer"),
) -> None:
    """Grant a role to an account (admin)."""
    home = _home()
    by = _admin(home, name)
    acc = accounts.grant(
        home, name, accounts.role_string(role, unit, developer), by, sod=_sod(home)
    )
    console.print(f"account {acc.name}: roles {', '.join(acc.roles)}")


@users_app.command("revoke")
def users_revoke(
    name: str = typer.Argument(...),
    role: str = typer.Argument(..., help=ROLE_HELP),
    unit: str | None = typer.Option(None, "--unit"),
    developer: str | None = typer.Option(None, "--developer"),
) -> None:
    """Revoke a role from an account (admin)."""
    home = _home()
    by = _admin(home, name)
    acc = accounts.revoke(home, name, accounts.role_string(role, unit, developer), by)
    console.print(f"account {acc.name}: roles {', '.join(acc.roles) or '(none)'}")


@users_app.command("disable")
def users_disable(name: str = typer.Argument(...)) -> None:
    """Disable an account: it can no longer act or log in (admin)."""
    home = _home()
    accounts.set_status(home, name, False, _admin(home, name))
    console.print(f"account {name} disabled")


@users_app.command("enable")
def users_enable(name: str = typer.Argument(...)) -> None:
    """Enable a disabled account again (admin)."""
    home = _home()
    accounts.set_status(home, name, True, _admin(home, name))
    console.print(f"account {name} enabled")


@users_app.command("passwd")
def users_passwd(
    name: str = typer.Argument(...),
    password_file: Path = typer.Option(
        ..., "--password-file", help="file whose first line is the new portal password"
    ),
) -> None:
    """Set an account's portal password (admin; argon2id hash stored)."""
    home = _home()
    by = _admin(home, name)
    accounts.set_password(home, name, _read_password(password_file) or "", by)
    console.print(f"password of {name} set")


@policy_app.command("show")
def policy_show(fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    """The domain policy in force, where it comes from and its SM3."""
    home = _home()
    roles.require(home, "policy.read", "domain-policy")
    policy, source = domain_policy.effective_with_source(home)
    data = {"source": source.model_dump(mode="json"), "policy": policy.model_dump(mode="json")}
    if fmt == "json":
        _emit_json(data)
        return
    console.print(
        f"domain policy {'v' + str(source.version) if source.version else '(not yet applied)'}"
        f" — {source.origin} — SM3 {source.sm3}"
    )
    console.print_json(json.dumps(data["policy"], ensure_ascii=False))


@policy_app.command("apply")
def policy_apply(
    path: Path = typer.Argument(..., help="the new policy as YAML"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the audit chain)"),
) -> None:
    """Store a new version of the domain policy (admin; audited with its SM3)."""
    home = _home()
    by = roles.require(home, "policy.apply", "domain-policy")
    try:
        new = domain_policy.load_file(path)
    except ValidationError as exc:
        record(home, "policy.apply", "domain-policy", "error", {"error": exc.message}, actor=by)
        exc.audited = True
        raise
    version = domain_policy.apply(home, new, reason, by.name, by)
    console.print(f"domain policy v{version} applied (SM3 {new.digest()})")
