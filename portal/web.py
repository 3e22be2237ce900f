"""What every portal page shares: templates, local time, the logged-in context, CSRF, errors.

Each handler starts with :func:`page` (or :func:`public`), which resolves the session and sets
``governance.actors`` to the logged-in account in the role chosen for this session, with the
portal's OS login as ``via``. The core functions called afterwards audit under that account and
apply their own permission checks; the portal's role guards only choose which pages to show.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from governance import accounts
from governance.accounts import Account
from governance.actors import Actor, set_current
from governance.audit import record
from governance.domain_policy import PortalPolicy, effective
from governance.identity import login_name
from portal import sessions
from portal.sessions import Session
from shuyu_core.home import Home

COOKIE = "shuyu_session"
LOGIN_CSRF_COOKIE = "shuyu_login_csrf"
CN = ZoneInfo("Asia/Shanghai")
TEMPLATES = Path(__file__).parent / "templates"
ROLE_ZH = {
    "operator": "运营机构",
    "reviewer": "评审",
    "admin": "安全管理员",
    "source_unit": "数源单位",
    "developer": "开发主体",
}
DIM_ZH = {
    "normativity": "规范性",
    "completeness": "完整性",
    "accuracy": "准确性",
    "consistency": "一致性",
    "timeliness": "时效性",
    "accessibility": "可访问性",
}
VERDICT_ZH = {"pass": "通过", "fail": "不通过", "rectify": "需整改", "warn": "警告"}
PURPOSE_ZH = {"public_good": "公益（无偿）", "industry": "产业（有偿）"}
KIND_ZH = {
    "statistical_report": "统计报告",
    "index": "评价指数",
    "verification": "数据核验",
    "desensitized_dataset": "脱敏数据集",
}
# Pages a role lands on after login.
HOME_PAGE = {
    "operator": "/ops",
    "reviewer": "/review",
    "admin": "/admin",
    "source_unit": "/unit",
    "developer": "/dev",
}


class Redirect(Exception):
    def __init__(self, url: str, clear_cookie: bool = False) -> None:
        super().__init__(url)
        self.url = url
        self.clear_cookie = clear_cookie


class PageError(Exception):
    """Shown as an error page with this status (404 hides whether another unit's object exists)."""

    def __init__(self, status: int, title: str, message: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


def cn_time(value: Any) -> str:
    """A moment in Asia/Shanghai, to the second (naive datetimes in the state are UTC)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        if len(value) == 10:  # a calendar day (a due date) has no time zone to convert
            return value
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(CN).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def role_label(role: str | None) -> str:
    if not role:
        return ""
    kind, _, scope = role.partition(":")
    label = ROLE_ZH.get(kind, kind)
    return f"{label}（{scope}）" if scope else label


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


@cache
def env() -> Environment:
    e = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    e.filters["cn_time"] = cn_time
    e.filters["role_label"] = role_label
    e.filters["pct"] = pct
    e.filters["urlq"] = lambda v: quote(str(v), safe="")
    from assessment.models import DIMENSIONS

    check_dims = {k: zh for k, (zh, _en) in DIMENSIONS.items()}
    for name, table in (
        ("dim_zh", DIM_ZH),
        ("check_dim_zh", check_dims),
        ("verdict_zh", VERDICT_ZH),
        ("purpose_zh", PURPOSE_ZH),
        ("kind_zh", KIND_ZH),
    ):
        e.filters[name] = lambda v, t=table: "—" if v is None else str(t.get(str(v), v))
    return e


@dataclass(frozen=True)
class Ctx:
    request: Request
    home: Home
    session: Session | None
    account: Account | None
    actor: Actor

    @property
    def kind(self) -> str:
        return self.actor.kind

    @property
    def scope(self) -> str | None:
        return self.actor.scope


def home_of(request: Request) -> Home:
    home: Home = request.app.state.home
    return home


def policy(home: Home) -> PortalPolicy:
    return effective(home).portal


def via() -> str:
    return login_name()


def anonymous() -> Actor:
    """Who a request without a session acts as: no role, so every core permission check refuses."""
    return Actor("anonymous", "anonymous", via=via())


def public(request: Request) -> Ctx:
    actor = anonymous()
    set_current(actor)
    return Ctx(request, home_of(request), None, None, actor)


def session_of(request: Request) -> tuple[Home, Session | None]:
    """The live session of the request's cookie (an expired one is ended and audited)."""
    home = home_of(request)
    s, expired = sessions.lookup(home, request.cookies.get(COOKIE), policy(home))
    if expired and s is not None:
        record(
            home,
            "portal.session.expire",
            f"account/{s.account}",
            "ok",
            {"last_seen": s.last_seen.isoformat()},
            actor=Actor(s.account, s.role or "none", via=via()),
        )
        raise Redirect("/login?expired=1", clear_cookie=True)
    return home, s


def page(request: Request, *kinds: str, need_role: bool = True) -> Ctx:
    """The logged-in context of this request; redirects to /login (or /role) when needed.

    ``kinds``: the role kinds this page is for (others get 403; the core would refuse them too).
    """
    home, s = session_of(request)
    if s is None:
        nxt = request.url.path
        raise Redirect(f"/login?next={quote(nxt, safe='/')}")
    if not sessions.anchored(home, s):
        # a session row no login made (inserted or re-pointed in the database): refused
        sessions.destroy(home, s)
        record(
            home,
            "portal.session",
            f"account/{s.account}",
            "refused",
            {"reason": "session has no portal.login audit entry"},
            actor=Actor("anonymous", "anonymous", via=via()),
        )
        set_current(anonymous())
        raise Redirect("/login?ended=1", clear_cookie=True)
    acc = accounts.get(home, s.account)
    if acc is None or not acc.active or (s.role is not None and not acc.holds(s.role)):
        # disabled, or a role revoked since login: the session ends now
        sessions.destroy(home, s)
        set_current(anonymous())
        raise Redirect("/login?ended=1", clear_cookie=True)
    if s.role is None:
        set_current(Actor(acc.name, "none", via=via()))
        if need_role:
            raise Redirect("/role")
        return Ctx(request, home, s, acc, Actor(acc.name, "none", via=via()))
    actor = Actor(acc.name, s.role, via=via())
    set_current(actor)
    ctx = Ctx(request, home, s, acc, actor)
    request.state.ctx = ctx  # error pages keep the user's navigation
    if kinds and actor.kind not in kinds:
        record(
            home,
            "portal.page",
            request.url.path,
            "refused",
            {"reason": f"role {actor.role} has no access to this page"},
        )
        raise PageError(
            403, "无权访问 Forbidden", f"当前角色“{role_label(actor.role)}”不能访问此页面。"
        )
    return ctx


def check_csrf(ctx: Ctx, presented: str | None) -> None:
    """Every POST carries the session's CSRF token; a missing or wrong one is refused (403)."""
    if ctx.session is None or not ctx.session.csrf_ok(presented):
        record(
            ctx.home,
            "portal.csrf",
            ctx.request.url.path,
            "refused",
            {"reason": "missing or wrong CSRF token"},
        )
        raise PageError(
            403, "请求无效 Forbidden", "表单已过期或来源不明（CSRF 校验失败），请刷新页面后重试。"
        )


def render(ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    from portal import notices

    base = {
        "ctx": ctx,
        "actor": ctx.actor if ctx.session else None,
        "account": ctx.account,
        "csrf": ctx.session.csrf if ctx.session else "",
        "nav": nav(ctx),
        "now": cn_time(dt.datetime.now(dt.UTC)),
        "notice_count": notices.count(ctx) if ctx.session and ctx.session.role else 0,
    }
    html = env().get_template(template).render(**base, **values)
    return HTMLResponse(html, status_code=status)


def nav(ctx: Ctx) -> list[tuple[str, str]]:
    if ctx.session is None or ctx.session.role is None:
        return [("/public", "公开目录与信息披露")]
    k = ctx.actor.kind
    items: list[tuple[str, str]] = [("/notices", "待办/通知")]
    if k == "source_unit":
        items += [("/unit", "数据质量"), ("/unit/tickets", "校核工单")]
    elif k == "reviewer":
        items += [("/review", "待评审"), ("/review/all", "评审记录")]
    elif k == "operator":
        items += [
            ("/ops", "产品与版本"),
            ("/ops/budgets", "隐私预算"),
            ("/ops/tickets", "校核工单"),
            ("/ops/audit", "审计日志"),
        ]
    elif k == "admin":
        items += [("/admin", "账号与授权")]
    items.append(("/public", "公开目录"))
    return items
