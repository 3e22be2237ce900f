"""``shuyu serve``: the portal (数据运营门户) over HTTP."""

from __future__ import annotations

import typer

from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    tls_cert: str | None = typer.Option(
        None, "--tls-cert", help="PEM certificate: serve HTTPS (session cookies then Secure)"
    ),
    tls_key: str | None = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert"),
) -> None:
    """Serve the portal (login, 待办, tickets, review, publication, public catalog)."""
    import uvicorn

    from governance import domain_policy
    from governance.identity import login_name
    from portal.app import create_app

    home = Home.from_env().ensure()
    login = login_name()
    # The portal acts for the people who log in to it; like the Prefect worker, it must run
    # under a service account the domain policy names, so the audit can say who carried it.
    if not domain_policy.effective(home).is_service_account(login):
        raise PermissionDenied(
            f"the portal may not run under login {login!r}: not a service account of the "
            "domain policy",
            hint="run it as the portal's service account (shuyu-portal), or an admin adds this "
            "login to service_accounts with 'shuyu policy apply'",
        )
    if bool(tls_cert) != bool(tls_key):
        raise ValidationError(
            "--tls-cert and --tls-key go together", hint="give both PEM files, or neither"
        )
    scheme = "https" if tls_cert else "http"
    typer.echo(f"数据运营门户 {scheme}://{host}:{port}/ (home {home.root}, login {login})")
    # proxy headers are not trusted: a client could claim HTTPS with X-Forwarded-Proto
    uvicorn.run(
        create_app(home),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )


def notify_run(
    portal_url: str = typer.Option(
        "", "--portal-url", help="the portal's address, put before each link in the e-mails"
    ),
) -> None:
    """Queue new notifications (待办/通知) and mail them when SHUYU_SMTP_URL is set."""
    from governance.roles import require
    from portal import outbox

    home = Home.from_env().ensure()
    require(home, "notify.run", "notification_outbox")
    counts = outbox.run(home, portal_url)
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()))


notify_app = typer.Typer(help="notifications (通知): outbox and e-mail", no_args_is_help=True)
notify_app.command("run")(notify_run)


def register(app: typer.Typer) -> None:
    from pipelines.cli_tokens import tokens_app

    app.command("serve")(serve)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(notify_app, name="notify")
