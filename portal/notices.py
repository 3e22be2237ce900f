"""待办/通知: notices derived from the state at each request, per role.

Nothing is stored: a ticket that is answered, or a release that is decided, leaves the list by
itself. Source units see their own tickets only (new, due within two working days, overdue);
reviewers the releases awaiting a decision; operators approved releases to publish, recent
decisions and overdue tickets across units.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select

from quality import tickets
from quality.store import quality_tickets
from quality.workdays import add_working_days, today_cn
from shuyu_core.home import state_engine


@dataclass(frozen=True)
class Notice:
    kind: str  # 待办 (something to do) or 通知 (for information)
    title: str
    link: str
    when: str = ""
    urgent: bool = False


LIST_LIMIT = 300  # the notice page lists the most urgent tickets; counts cover them all


def _ticket_filter(unit: str | None, today: dt.date, soon: dt.date, operator: bool) -> Any:
    """Waiting tickets worth a notice: overdue (anyone), due within two working days or new
    (the unit itself). The same condition serves the count and the list."""
    t = quality_tickets.c
    cond = t.due_on < today
    if not operator:
        cond = or_(cond, t.due_on <= soon, t.state.in_((tickets.OPEN, tickets.REOPENED)))
    where = [t.state.in_(tickets.WAITING), cond]
    if unit is not None:
        where.append(t.source_unit == unit)
    return and_(*where)


def _ticket_bounds(ctx: Any) -> tuple[str | None, dt.date, dt.date, bool]:
    today = today_cn()
    soon, _ = add_working_days(today, 2)
    operator = ctx.actor.kind == "operator"
    return (None if operator else ctx.actor.scope), today, soon, operator


def items(ctx: object) -> list[Notice]:
    from portal.web import Ctx

    assert isinstance(ctx, Ctx)
    out: list[Notice] = []
    kind = ctx.actor.kind
    if kind in ("source_unit", "operator"):
        unit, today, soon, operator = _ticket_bounds(ctx)
        base = "/ops/tickets" if operator else "/unit/tickets"
        q = (
            select(quality_tickets)
            .where(_ticket_filter(unit, today, soon, operator))
            .order_by(quality_tickets.c.due_on, quality_tickets.c.id)
            .limit(LIST_LIMIT)
        )
        with state_engine(ctx.home).connect() as conn:
            found = [tickets.Ticket.model_validate(dict(r._mapping)) for r in conn.execute(q)]
        for t in found:
            label = f"工单 #{t.id} {t.resource} · {t.rule}"
            link, due = f"{base}/{t.id}", str(t.due_on)
            if t.overdue(today):
                out.append(Notice("待办", f"已逾期：{label}（应于 {due} 前答复）", link, due, True))
            elif t.due_on <= soon:
                out.append(Notice("待办", f"两个工作日内到期：{label}（{due}）", link, due, True))
            else:
                out.append(Notice("待办", f"新工单：{label}", link, str(t.opened_on)))
    if kind in ("reviewer", "operator"):
        from assessment import status

        zh = status.STAGE_ZH
        for rid, stage, when in status.stages_from_state(ctx.home):
            at = str(when or "")
            if kind == "reviewer" and stage == "assessed":
                out.append(Notice("待办", f"待评审：{rid}", f"/review/{rid}", at))
            elif kind == "reviewer" and stage == "published":
                out.append(Notice("通知", f"已发布：{rid}", f"/review/{rid}", at))
            elif kind == "operator" and stage == "approved":
                out.append(Notice("待办", f"已通过，待发布：{rid}", f"/ops/releases/{rid}", at))
            elif kind == "operator" and stage in ("rejected", "rectify"):
                out.append(
                    Notice("通知", f"评审结论（{zh[stage]}）：{rid}", f"/ops/releases/{rid}", at)
                )
    return out


def count(ctx: object) -> int:
    """The number of 待办 for the badge on every page, counted in the database."""
    from portal.web import Ctx

    assert isinstance(ctx, Ctx)
    n = 0
    if ctx.actor.kind in ("source_unit", "operator"):
        unit, today, soon, operator = _ticket_bounds(ctx)
        q = (
            select(func.count())
            .select_from(quality_tickets)
            .where(_ticket_filter(unit, today, soon, operator))
        )
        with state_engine(ctx.home).connect() as conn:
            n += int(conn.execute(q).scalar_one())
    if ctx.actor.kind in ("reviewer", "operator"):
        from assessment import status

        wanted = "assessed" if ctx.actor.kind == "reviewer" else "approved"
        n += sum(1 for _r, stage, _w in status.stages_from_state(ctx.home) if stage == wanted)
    return n
