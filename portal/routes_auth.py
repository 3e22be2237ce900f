"""Log in, choose a role, log out. Every login, failure, lockout and logout is audited."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from governance import accounts
from governance.actors import Actor, set_current
from governance.audit import record
from portal import sessions
from portal.web import (
    COOKIE,
    HOME_PAGE,
    LOGIN_CSRF_COOKIE,
    Ctx,
    PageError,
    Redirect,
    anonymous,
    check_csrf,
    cn_time,
    page,
    policy,
    public,
    render,
    session_of,
    via,
)

router = APIRouter()

# Verifying against a throwaway hash for unknown names keeps the answer time the same as for a
# real account, so the login form does not reveal which account names exist.
_DUMMY = accounts.Account("-", "-", (), "active", accounts._hasher.hash(secrets.token_hex(16)))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )


def _safe_next(nxt: str | None) -> str | None:
    # only a path on this site: never an open redirect to another host
    if nxt and nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return None


def _login_page(ctx: Ctx, status: int = 200, error: str = "", nxt: str = "") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    q = ctx.request.query_params
    info = ""
    if q.get("expired"):
        info = "会话因长时间未操作已结束，请重新登录。"
    elif q.get("ended"):
        info = "会话已结束（账号状态或角色已变更），请重新登录。"
    elif q.get("bye"):
        info = "已安全退出。"
    resp = render(
        ctx,
        "login.html.j2",
        status=status,
        login_csrf=token,
        error=error,
        info=info,
        next=nxt or q.get("next", ""),
    )
    set_cookie(resp, ctx.request, LOGIN_CSRF_COOKIE, token)
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _login_page(public(request))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf: str = Form(""),
    next: str = Form(""),
) -> Response:
    ctx = public(request)
    home = ctx.home
    name = username.strip()[:64]
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not csrf or not cookie or not hmac.compare_digest(csrf, cookie):
        record(home, "portal.csrf", "/login", "refused", {"reason": "missing or wrong CSRF token"})
        raise PageError(
            403, "请求无效 Forbidden", "登录表单已过期（CSRF 校验失败），请刷新后重试。"
        )
    who = Actor(name or "anonymous", "none", via=via())
    obj = f"account/{name}"
    pol = policy(home)
    until = sessions.locked_until(home, name) if name else None
    if until is not None:
        record(home, "portal.login", obj, "refused", {"reason": "locked"}, actor=who)
        return _login_page(
            ctx, 403, f"账号已锁定（连续登录失败），请于 {cn_time(until)} 后再试或联系安全管理员。"
        )
    acc = accounts.get(home, name) if accounts.NAME_PATTERN.match(name) else None
    ok = accounts.check_password(acc or _DUMMY, password) and acc is not None
    if not ok or acc is None or not acc.active:
        reason = "wrong password" if ok is False and acc is not None else "unknown account"
        if acc is not None and not acc.active and ok:
            reason = "account disabled"
        details: dict[str, object] = {"reason": reason}
        if acc is not None:
            count, locked = sessions.failed(home, acc.name, pol)
            details["failures"] = count
            if locked is not None:
                record(
                    home,
                    "portal.lockout",
                    obj,
                    "refused",
                    {"failures": count, "until": locked.isoformat()},
                    actor=who,
                )
        record(home, "portal.login", obj, "refused", details, actor=who)
        return _login_page(ctx, 401, "用户名或密码错误。", next)
    sessions.succeeded(home, acc.name)
    token, s = sessions.create(home, acc.name)
    usable = [r for r in acc.roles if r.split(":", 1)[0] in HOME_PAGE]
    role = usable[0] if len(usable) == 1 else None
    if role is not None:
        s = sessions.set_role(home, s, role)
    actor = Actor(acc.name, role or "none", via=via())
    set_current(actor)
    record(
        home, "portal.login", obj, "ok", {"role": role, "session": sessions.anchor(s)}, actor=actor
    )
    target = _safe_next(next) if role else None
    dest = target or (HOME_PAGE[role.split(":", 1)[0]] if role else "/role")
    resp = RedirectResponse(dest, status_code=303)
    set_cookie(resp, request, COOKIE, token)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return resp


@router.get("/role", response_class=HTMLResponse)
def role_form(request: Request) -> Response:
    ctx = page(request, need_role=False)
    assert ctx.account is not None
    roles = [r for r in ctx.account.roles if r.split(":", 1)[0] in HOME_PAGE]
    return render(ctx, "role.html.j2", roles=roles)


@router.post("/role")
def choose_role(request: Request, role: str = Form(""), csrf: str = Form("")) -> Response:
    ctx = page(request, need_role=False)
    check_csrf(ctx, csrf)
    assert ctx.account is not None and ctx.session is not None
    if not ctx.account.holds(role):
        record(
            ctx.home,
            "portal.role",
            f"account/{ctx.account.name}",
            "refused",
            {"reason": f"account does not hold role {role}"},
        )
        raise PageError(403, "无此角色 Forbidden", "该账号未被授予此角色。")
    sessions.set_role(ctx.home, ctx.session, role)
    actor = Actor(ctx.account.name, role, via=via())
    set_current(actor)
    record(ctx.home, "portal.role", f"account/{ctx.account.name}", "ok", {"role": role})
    return RedirectResponse(HOME_PAGE[role.split(":", 1)[0]], status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    ctx = page(request, need_role=False)
    check_csrf(ctx, csrf)
    assert ctx.session is not None
    sessions.destroy(ctx.home, ctx.session)
    record(ctx.home, "portal.logout", f"account/{ctx.session.account}", "ok", {})
    set_current(anonymous())
    resp = RedirectResponse("/login?bye=1", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/")
def index(request: Request) -> Response:
    _home, s = session_of(request)
    if s is None:
        return RedirectResponse("/public", status_code=303)
    if s.role is None:
        raise Redirect("/role")
    return RedirectResponse(HOME_PAGE[s.role.split(":", 1)[0]], status_code=303)


@router.get("/notices", response_class=HTMLResponse)
def notices_page(request: Request) -> Response:
    from portal import notices, outbox

    ctx = page(request)
    # Queue what happened since the last sweep, then show this role's notification record.
    outbox.sweep(ctx.home)
    sent = outbox.for_roles(ctx.home, [ctx.actor.role])
    return render(ctx, "notices.html.j2", notices=notices.items(ctx), sent=sent)


@router.get("/dev", response_class=HTMLResponse)
def developer_page(request: Request) -> Response:
    ctx = page(request, "developer")
    return render(ctx, "dev.html.j2")
