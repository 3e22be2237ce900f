"""Source-unit pages (数源单位): quality over time, tickets, replies and their receipts.

A unit only ever sees its own: the core's ``ticket.read`` check refuses another unit's ticket
(and audits the attempt); the portal answers that refusal with 404, the same page as for a
ticket that does not exist, so a URL cannot be used to learn what other units have.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from catalogs.catalog import Catalog
from governance.audit import entries_for
from governance.roles import require
from portal import views
from portal.web import Ctx, PageError, check_csrf, page, render
from quality import api, tickets
from quality.workdays import today_cn
from shuyu_core.errors import NotFoundError, PermissionDenied

router = APIRouter(prefix="/unit")
NOT_FOUND = PageError(404, "未找到 Not found", "所请求的工单不存在或无权查看。")
# An answer says what was checked or corrected; "ok" or "已处理" alone does not.
MIN_ANSWER_CHARS = 10
PAGE_SIZE = 200


def _ticket(ctx: Ctx, ticket_id: int) -> tuple[tickets.Ticket, list[dict[str, object]]]:
    try:
        return api.show_ticket(ctx.home, ticket_id)
    except (PermissionDenied, NotFoundError):
        raise NOT_FOUND from None


@router.get("", response_class=HTMLResponse)
def unit_home(request: Request) -> Response:
    ctx = page(request, "source_unit")
    unit = ctx.scope or ""
    require(ctx.home, "quality.report.read", f"quality-report/{unit}", unit)
    resources = views.unit_quality(ctx.home, Catalog.load(), unit)
    open_count = tickets.count_tickets(ctx.home, unit=unit, states=tickets.ACTIVE)
    return render(
        ctx,
        "unit_home.html.j2",
        unit=unit,
        resources=resources,
        open_count=open_count,
        today=today_cn(),
    )


@router.get("/tickets", response_class=HTMLResponse)
def unit_tickets(request: Request, p: int = 1) -> Response:
    ctx = page(request, "source_unit")
    return ticket_list(ctx, ctx.scope, p, base="/unit/tickets", title="校核工单 Correction tickets")


def ticket_list(ctx: Ctx, unit: str | None, p: int, **values: Any) -> Response:
    """One page of tickets (PAGE_SIZE a page) with the links to the others."""
    p = max(1, p)
    rows = api.list_tickets(ctx.home, unit, limit=PAGE_SIZE, offset=(p - 1) * PAGE_SIZE)
    total = tickets.count_tickets(ctx.home, unit=unit)
    return render(
        ctx,
        "tickets.html.j2",
        tickets=rows,
        page_no=p,
        pages=max(1, -(-total // PAGE_SIZE)),
        total=total,
        today=today_cn(),
        **values,
    )


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
def unit_ticket(request: Request, ticket_id: int) -> Response:
    ctx = page(request, "source_unit")
    t, events = _ticket(ctx, ticket_id)
    rule = views.failing_rule(ctx.home, t)
    receipts = views.receipts(ctx.home, t.id)
    return render(
        ctx,
        "ticket.html.j2",
        t=t,
        events=events,
        rule=rule,
        receipts=receipts,
        today=today_cn(),
        can_reply=True,
        base="/unit/tickets",
        min_answer=MIN_ANSWER_CHARS,
    )


@router.get("/tickets/{ticket_id}/failing.csv")
def unit_ticket_csv(request: Request, ticket_id: int) -> Response:
    ctx = page(request, "source_unit")
    t, _ = _ticket(ctx, ticket_id)
    return failing_csv(ctx, t)


def _cell(value: str) -> str:
    """A value a spreadsheet will not run as a formula (CSV injection): data from a source
    system may start with = + - @, and a masked value keeps its first characters."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def failing_csv(ctx: Ctx, t: tickets.Ticket) -> Response:
    """The sampled failing rows of the ticket's rule: row numbers and masked values only."""
    rule = views.failing_rule(ctx.home, t)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["resource", "snapshot", "rule", "field", "row", "masked_value"])
    for s in rule.samples if rule else []:
        w.writerow([t.resource, t.snapshot, t.rule, t.field or "", s.row, _cell(s.value or "")])
    from governance.audit import record

    record(
        ctx.home,
        "ticket.export",
        f"ticket/{t.id}",
        "ok",
        {"rows": len(rule.samples) if rule else 0, "masked": True},
    )
    return Response(
        "\ufeff" + buf.getvalue(),  # BOM: spreadsheet programs then read the Chinese right
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ticket-{t.id}-failing-rows.csv"'},
    )


@router.post("/tickets/{ticket_id}/reply")
def unit_reply(
    request: Request,
    ticket_id: int,
    action: str = Form(""),
    note: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    ctx = page(request, "source_unit")
    check_csrf(ctx, csrf)
    t, _ = _ticket(ctx, ticket_id)
    text = note.strip()
    if action == "answer" and views.substantive_length(text) < MIN_ANSWER_CHARS:
        from governance.audit import record

        record(
            ctx.home,
            "ticket.answer",
            f"ticket/{t.id}",
            "error",
            {"error": f"answer note too short ({views.substantive_length(text)} characters)"},
        )
        raise PageError(
            400,
            "答复内容不足",
            f"答复须说明核查或更正了什么（至少 {MIN_ANSWER_CHARS} 个字），"
            "例如“已核对 3 条记录并更正出生日期，下期数据生效”。",
        )
    if action == "ack":
        api.acknowledge(ctx.home, t.id, text or "已收到，正在核查")
    elif action == "answer":
        api.answer(ctx.home, t.id, text)
    else:
        raise PageError(400, "未知操作", "请使用页面上的按钮提交。")
    found = entries_for(ctx.home, f"ticket/{t.id}", ("ticket.ack", "ticket.answer"), "ok")
    seq = found[-1]["seq"] if found else 0
    return RedirectResponse(f"/unit/tickets/{t.id}/receipt/{seq}", status_code=303)


@router.get("/tickets/{ticket_id}/receipt/{seq}", response_class=HTMLResponse)
def unit_receipt(request: Request, ticket_id: int, seq: int) -> Response:
    ctx = page(request, "source_unit")
    t, _ = _ticket(ctx, ticket_id)
    r = next((r for r in views.receipts(ctx.home, t.id) if r["seq"] == seq), None)
    if r is None:
        raise NOT_FOUND
    return render(ctx, "receipt.html.j2", t=t, r=r)
