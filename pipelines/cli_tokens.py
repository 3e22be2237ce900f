"""``shuyu tokens issue|list|revoke``: API tokens of the verification service (admin)."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from governance import api_tokens
from governance.actors import current_actor
from shuyu_core.home import Home

console = Console()
tokens_app = typer.Typer(
    help="API tokens of the verification service (数据核验接口令牌, admin)", no_args_is_help=True
)


def _home() -> Home:
    return Home.from_env().ensure()


@tokens_app.command("issue")
def issue(
    account: str = typer.Argument(..., help="a developer account"),
    note: str = typer.Option("", "--note", help="what the token is for (shown in the list)"),
) -> None:
    """Issue a token for a developer account; it is printed once and never stored."""
    home = _home()
    token_id, token = api_tokens.issue(home, account, current_actor(), note)
    typer.echo(f"令牌 token {token_id} for {account} (shown once, keep it secret):")
    typer.echo(token)


@tokens_app.command("revoke")
def revoke(
    token_id: str = typer.Argument(...),
    reason: str = typer.Option("", "--reason", help="why (recorded in the audit chain)"),
) -> None:
    """Revoke a token: the next request with it gets 401."""
    info = api_tokens.revoke(_home(), token_id, current_actor(), reason)
    typer.echo(f"令牌 token {info.token_id} of {info.account} revoked at {info.revoked_at}")


@tokens_app.command("list")
def list_(
    account: str | None = typer.Option(None, "--account"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Tokens with account, note, issue and revocation times (never the secret)."""
    found = api_tokens.list_tokens(_home(), current_actor(), account)
    rows = [
        {
            "token_id": t.token_id,
            "account": t.account,
            "note": t.note,
            "created_at": t.created_at.isoformat(timespec="seconds"),
            "revoked_at": t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else None,
        }
        for t in found
    ]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table("令牌 token", "账号 account", "说明 note", "签发 issued (UTC)", "吊销 revoked")
    for r in rows:
        table.add_row(
            r["token_id"], r["account"], r["note"], r["created_at"], r["revoked_at"] or "—"
        )
    console.print(table)
