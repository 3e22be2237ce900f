"""待办/通知: notices derived from the state at each request, per role.

Nothing is stored: a ticket that is answered, or a release that is decided, leaves the list by
itself. Source units see their own tickets only (new, due within two working days, overdue);
reviewers the releases awaiting a decision; operators approved releases to publish, recent
decisions and overdue tickets across units.
"""

from __future__ import annotations

from dataclasses import dataclass

from quality import tickets
from quality.workdays import add_working_days, today_cn


@dataclass(frozen=True)
class Notice:
    kind: str  # 待办 (something to do) or 通知 (for information)
    title: str
    link: str
    when: str = ""
    urgent: bool = False


def items(ctx: object) -> list[Notice]:
    from portal.web import Ctx

    assert isinstance(ctx, Ctx)
    today = today_cn()
    out: list[Notice] = []
    kind = ctx.actor.kind
    if kind in ("source_unit", "operator"):
        unit = ctx.actor.scope if kind == "source_unit" else None
        soon, _ = add_working_days(today, 2)
        base = "/unit/tickets" if kind == "source_unit" else "/ops/tickets"
        for t in tickets.list_tickets(ctx.home, unit=unit, states=tickets.WAITING):
            label = f"工单 #{t.id} {t.resource} · {t.rule}"
            if t.overdue(today):
                out.append(
                    Notice(
                        "待办",
                        f"已逾期：{label}（应于 {t.due_on} 前答复）",
                        f"{base}/{t.id}",
                        str(t.due_on),
                        True,
                    )
                )
            elif kind == "source_unit" and t.due_on <= soon:
                out.append(
                    Notice(
                        "待办",
                        f"两个工作日内到期：{label}（{t.due_on}）",
                        f"{base}/{t.id}",
                        str(t.due_on),
                        True,
                    )
                )
            elif kind == "source_unit" and t.state in (tickets.OPEN, tickets.REOPENED):
                out.append(Notice("待办", f"新工单：{label}", f"{base}/{t.id}", str(t.opened_on)))
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
    return sum(1 for n in items(ctx) if n.kind == "待办")
