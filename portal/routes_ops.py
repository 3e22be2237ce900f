"""Operator pages (运营机构): products and releases, build, assess, publish, budgets, tickets
across units, the audit log; and the admin's accounts page (安全管理员)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from assessment import engine, publish, review, status
from governance import accounts, api_tokens, audit
from governance.roles import require
from portal import views
from portal.routes_review import DECISION_ZH, manifest
from portal.routes_unit import NOT_FOUND, failing_csv, ticket_list
from portal.web import PageError, check_csrf, page, render
from privacy.dp import ledger
from products import release as rel
from products import specs
from quality import api
from quality.workdays import today_cn
from shuyu_core.errors import NotFoundError, PermissionDenied

router = APIRouter()


@router.get("/ops", response_class=HTMLResponse)
def products_page(request: Request) -> Response:
    ctx = page(request, "operator")
    require(ctx.home, "release.read", "releases/all")
    statuses = status.all_statuses(ctx.home)
    latest = {s.product: s for s in statuses}
    products = [
        {
            "spec": sp,
            "latest": latest.get(sp.id),
            "releases": sum(1 for s in statuses if s.product == sp.id),
        }
        for sp in specs.load_all().values()
    ]
    return render(
        ctx,
        "ops_home.html.j2",
        products=products,
        releases=list(reversed(statuses)),
        decision_zh=DECISION_ZH,
    )


@router.post("/ops/build")
def build(request: Request, product: str = Form(""), csrf: str = Form("")) -> Response:
    ctx = page(request, "operator")
    check_csrf(ctx, csrf)
    from products.engine import build as run_build

    if product not in specs.load_all():
        raise PageError(404, "未找到 Not found", "没有此产品。")
    if os.environ.get("PREFECT_API_URL"):
        # Run it where scheduled builds run: the Prefect deployment, acting for this account
        # (the flow resolves requested_by against the accounts again and audits under it).
        spec = specs.get(product)
        require(ctx.home, "build", spec.id, developer=spec.developer)
        run_id = submit_deployment(
            BUILD_DEPLOYMENT, {"product": spec.id, "requested_by": ctx.actor.name}
        )
        audit.record(
            ctx.home,
            "portal.build",
            spec.id,
            "ok",
            {"deployment": BUILD_DEPLOYMENT, "flow_run": run_id},
        )
        return render(
            ctx,
            "ops_submitted.html.j2",
            product=spec.id,
            run_id=run_id,
            deployment=BUILD_DEPLOYMENT,
        )
    outcome = run_build(ctx.home, product)
    return RedirectResponse(f"/ops/releases/{outcome.manifest.release_id}", status_code=303)


BUILD_DEPLOYMENT = "shuyu-build-product/build-product"


def submit_deployment(name: str, parameters: dict[str, str]) -> str:
    """Start a run of Prefect deployment ``name`` without waiting; its flow run id."""
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters=parameters, timeout=0)
    # called from a worker thread (no event loop): the synchronous form returns the run
    return str(getattr(run, "id"))  # noqa: B009


@router.get("/ops/releases/{release_id}", response_class=HTMLResponse)
def release_page(request: Request, release_id: str) -> Response:
    ctx = page(request, "operator")
    m = manifest(ctx, release_id)
    require(ctx.home, "release.read", m.release_id, developer=m.developer)
    return render(
        ctx,
        "ops_release.html.j2",
        m=m,
        st=status.of(ctx.home, m),
        decisions=review.history(ctx.home, m.release_id),
        decision_zh=DECISION_ZH,
        ledger=ledger.entries_for_release(ctx.home, m.release_id),
        directory=str(rel.release_dir(ctx.home, m.release_id)),
    )


@router.post("/ops/releases/{release_id}/assess")
def assess(request: Request, release_id: str, csrf: str = Form("")) -> Response:
    ctx = page(request, "operator")
    check_csrf(ctx, csrf)
    m = manifest(ctx, release_id)
    engine.assess(ctx.home, m.release_id)
    return RedirectResponse(f"/ops/releases/{m.release_id}", status_code=303)


@router.post("/ops/releases/{release_id}/publish")
def publish_release(request: Request, release_id: str, csrf: str = Form("")) -> Response:
    ctx = page(request, "operator")
    check_csrf(ctx, csrf)
    m = manifest(ctx, release_id)
    publish.publish(ctx.home, m.release_id)
    return RedirectResponse(f"/ops/releases/{m.release_id}", status_code=303)


@router.get("/ops/budgets", response_class=HTMLResponse)
def budgets(request: Request) -> Response:
    ctx = page(request, "operator")
    require(ctx.home, "budget.read", "budgets")
    rows, chart = views.budget_view(ledger.show(ctx.home))
    entries = sorted(ledger.all_entries(ctx.home), key=lambda e: e.charged_at, reverse=True)
    return render(
        ctx,
        "ops_budgets.html.j2",
        rows=rows,
        chart=chart,
        entries=entries[:200],
        total_entries=len(entries),
    )


@router.get("/ops/tickets", response_class=HTMLResponse)
def all_tickets(request: Request, p: int = 1) -> Response:
    ctx = page(request, "operator")
    return ticket_list(
        ctx,
        None,
        p,
        base="/ops/tickets",
        title="全部校核工单 Tickets across units",
        show_unit=True,
    )


@router.get("/ops/tickets/{ticket_id}", response_class=HTMLResponse)
def ticket(request: Request, ticket_id: int) -> Response:
    ctx = page(request, "operator")
    try:
        t, events = api.show_ticket(ctx.home, ticket_id)
    except (NotFoundError, PermissionDenied):
        raise NOT_FOUND from None
    return render(
        ctx,
        "ticket.html.j2",
        t=t,
        events=events,
        rule=views.failing_rule(ctx.home, t),
        receipts=views.receipts(ctx.home, t.id),
        today=today_cn(),
        can_reply=False,
        base="/ops/tickets",
        min_answer=0,
    )


@router.get("/ops/tickets/{ticket_id}/failing.csv")
def ticket_csv(request: Request, ticket_id: int) -> Response:
    ctx = page(request, "operator")
    try:
        t, _ = api.show_ticket(ctx.home, ticket_id)
    except (NotFoundError, PermissionDenied):
        raise NOT_FOUND from None
    return failing_csv(ctx, t)


@router.get("/ops/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> Response:
    ctx = page(request, "operator")
    require(ctx.home, "audit.read", "audit")
    result = audit.verify(ctx.home)
    audit.record(
        ctx.home,
        "audit.verify",
        "audit",
        "ok" if result.ok else "error",
        {"entries": result.entries, "ok": result.ok},
    )
    return render(
        ctx, "ops_audit.html.j2", result=result, entries=list(reversed(audit.tail(ctx.home, 200)))
    )


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    ctx = page(request, "admin")
    require(ctx.home, "accounts.read", "accounts")
    by = require(ctx.home, "tokens.manage", "tokens")
    return render(
        ctx,
        "admin.html.j2",
        accounts=accounts.list_all(ctx.home),
        tokens=api_tokens.list_tokens(ctx.home, by),
        issued=None,
    )


@router.post("/admin/tokens/issue", response_class=HTMLResponse)
def admin_token_issue(
    request: Request, account: str = Form(""), note: str = Form(""), csrf: str = Form("")
) -> Response:
    """Issue an API token; the page shows it once (never in a URL, never stored)."""
    ctx = page(request, "admin")
    check_csrf(ctx, csrf)
    by = require(ctx.home, "tokens.manage", f"account/{account}")
    token_id, token = api_tokens.issue(ctx.home, account.strip(), by, note.strip())
    return render(
        ctx,
        "admin.html.j2",
        accounts=accounts.list_all(ctx.home),
        tokens=api_tokens.list_tokens(ctx.home, by),
        issued={"token_id": token_id, "account": account.strip(), "token": token},
    )


@router.post("/admin/tokens/{token_id}/revoke")
def admin_token_revoke(request: Request, token_id: str, csrf: str = Form("")) -> Response:
    ctx = page(request, "admin")
    check_csrf(ctx, csrf)
    by = require(ctx.home, "tokens.manage", token_id)
    api_tokens.revoke(ctx.home, token_id, by, "revoked on the portal")
    return RedirectResponse("/admin", status_code=303)


@router.post("/admin/accounts/{name}/{op}")
def admin_change(
    request: Request, name: str, op: str, role: str = Form(""), csrf: str = Form("")
) -> Response:
    ctx = page(request, "admin")
    check_csrf(ctx, csrf)
    by = require(ctx.home, "accounts.manage", f"account/{name}")
    if op == "grant":
        accounts.grant(ctx.home, name, accounts.role_string(role.strip()), by)
    elif op == "revoke":
        accounts.revoke(ctx.home, name, role.strip(), by)
    elif op in ("disable", "enable"):
        accounts.set_status(ctx.home, name, op == "enable", by)
    else:
        raise PageError(404, "未找到 Not found", "没有此操作。")
    return RedirectResponse("/admin", status_code=303)
