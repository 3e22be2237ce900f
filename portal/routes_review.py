"""Reviewer pages (评审): the queue (待办), the assessment in one screen, decisions, sign-off."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from assessment import engine, review, status
from governance.roles import require
from portal import views
from portal.web import Ctx, PageError, check_csrf, page, render
from products import release as rel
from shuyu_core.errors import NotFoundError

router = APIRouter()
RELEASE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
DECISION_ZH = {"approve": "通过", "reject": "未通过", "rectify": "限期整改"}
STATUS_ORDER = {"fail": 0, "rectify": 1, "warn": 2, "pass": 3}


def release_id_ok(release_id: str) -> str:
    if not RELEASE_ID.match(release_id) or ".." in release_id:
        raise PageError(404, "未找到 Not found", "所请求的版本不存在。")
    return release_id


def manifest(ctx: Ctx, release_id: str) -> rel.ReleaseManifest:
    try:
        return rel.load(ctx.home, release_id_ok(release_id))
    except NotFoundError:
        raise PageError(404, "未找到 Not found", "所请求的版本不存在。") from None


def product_report(ctx: Ctx, m: rel.ReleaseManifest) -> Path | None:
    for out in m.outputs:
        if out.format == "html":
            path = rel.release_dir(ctx.home, m.release_id) / out.path
            if path.is_file():
                return path
    return None


@router.get("/review", response_class=HTMLResponse)
def queue(request: Request) -> Response:
    ctx = page(request, "reviewer")
    require(ctx.home, "assessment.read", "releases/review-queue")
    return render(
        ctx,
        "review_queue.html.j2",
        rows=status.awaiting_review(ctx.home),
        title="待评审 Releases awaiting review",
        all=False,
    )


@router.get("/review/all", response_class=HTMLResponse)
def reviewed(request: Request) -> Response:
    ctx = page(request, "reviewer")
    require(ctx.home, "assessment.read", "releases/reviews")
    rows = [s for s in status.all_statuses(ctx.home) if s.assessment is not None]
    return render(
        ctx, "review_queue.html.j2", rows=rows, title="评审记录 All assessed releases", all=True
    )


@router.get("/review/{release_id}", response_class=HTMLResponse)
def assessment_page(request: Request, release_id: str) -> Response:
    ctx = page(request, "reviewer", "operator")
    m = manifest(ctx, release_id)
    doc = review.show(ctx.home, m.release_id)  # role check + audited read
    a = engine.require_latest(ctx.home, m.release_id)
    checks = sorted(a.checks, key=lambda c: STATUS_ORDER.get(c.status, 9))
    previews = []
    for out in m.outputs:
        if out.format in ("csv", "parquet"):
            cols, rows = views.preview(rel.release_dir(ctx.home, m.release_id) / out.path, 10)
            previews.append(
                {
                    "name": out.name,
                    "path": out.path,
                    "rows_total": out.rows,
                    "columns": cols,
                    "rows": rows,
                }
            )
    st = status.of(ctx.home, m)
    return render(
        ctx,
        "review_release.html.j2",
        m=m,
        a=a,
        doc=doc,
        st=st,
        failing=[c for c in checks if c.status != "pass"],
        passing=[c for c in checks if c.status == "pass"],
        previews=previews,
        has_product_report=product_report(ctx, m) is not None,
        decisions=review.history(ctx.home, m.release_id),
        decision_zh=DECISION_ZH,
    )


@router.get("/review/{release_id}/report", response_class=HTMLResponse)
def assessment_report(request: Request, release_id: str) -> Response:
    ctx = page(request, "reviewer", "operator")
    m = manifest(ctx, release_id)
    review.show(ctx.home, m.release_id)
    a = engine.require_latest(ctx.home, m.release_id)
    # Rendered from the assessment verified against its audit entry, never the report.html
    # under work/ (writable by operators: findings could be edited out of what reviewers read).
    from assessment.report import render_html

    return HTMLResponse(render_html(a))


@router.get("/review/{release_id}/product-report", response_class=HTMLResponse)
def release_report(request: Request, release_id: str) -> Response:
    ctx = page(request, "reviewer", "operator")
    m = manifest(ctx, release_id)
    require(ctx.home, "release.read", m.release_id, developer=m.developer)
    path = product_report(ctx, m)
    if path is None:
        raise PageError(404, "未找到 Not found", "该产品没有报告页面。")
    return HTMLResponse(path.read_text(encoding="utf-8"))


@router.post("/review/{release_id}/decide")
def decide(
    request: Request,
    release_id: str,
    decision: str = Form(""),
    comment: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    ctx = page(request, "reviewer")
    check_csrf(ctx, csrf)
    m = manifest(ctx, release_id)
    if decision not in DECISION_ZH:
        raise PageError(400, "未知结论", "请选择 通过、未通过 或 限期整改。")
    review.decide(ctx.home, m.release_id, decision, comment)  # type: ignore[arg-type]
    return RedirectResponse(f"/review/{m.release_id}/signoff", status_code=303)


@router.get("/review/{release_id}/signoff", response_class=HTMLResponse)
def signoff(request: Request, release_id: str) -> Response:
    ctx = page(request, "reviewer", "operator")
    m = manifest(ctx, release_id)
    doc = review.show(ctx.home, m.release_id)
    a = engine.require_latest(ctx.home, m.release_id)
    return render(
        ctx,
        "signoff.html.j2",
        m=m,
        a=a,
        doc=doc,
        decisions=review.history(ctx.home, m.release_id),
        decision_zh=DECISION_ZH,
    )
