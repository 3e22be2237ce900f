"""The portal application: routers, error pages and the headers every response carries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from portal import (
    routes_api,
    routes_auth,
    routes_ops,
    routes_public,
    routes_review,
    routes_unit,
)
from portal.web import COOKIE, Ctx, PageError, Redirect, anonymous, env, home_of, nav
from shuyu_core.errors import NotFoundError, PermissionDenied, ShuyuError
from shuyu_core.home import Home

# Everything is served from here, styles inline: no script runs, nothing loads from elsewhere.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    found = getattr(request.state, "ctx", None)
    ctx = (
        found if isinstance(found, Ctx) else Ctx(request, home_of(request), None, None, anonymous())
    )
    logged_in = ctx.session is not None
    html = (
        env()
        .get_template("error.html.j2")
        .render(
            ctx=ctx,
            actor=ctx.actor if logged_in else None,
            account=ctx.account,
            csrf=ctx.session.csrf if ctx.session else "",
            nav=nav(ctx),
            status=status,
            title=title,
            message=message,
            notice_count=0,
            now="",
        )
    )
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def create_app(home: Home | None = None) -> FastAPI:
    app = FastAPI(title="Shuyu 数据运营门户", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.home = (home or Home.from_env()).ensure()

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/public"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(Redirect)
    async def _redirect(request: Request, exc: Redirect) -> Response:
        resp = RedirectResponse(exc.url, status_code=303)
        if exc.clear_cookie:
            resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return _error_page(request, exc.status, exc.title, exc.message)

    @app.exception_handler(ShuyuError)
    async def _shuyu_error(request: Request, exc: ShuyuError) -> Response:
        if isinstance(exc, NotFoundError):
            return _error_page(request, 404, "未找到 Not found", "所请求的对象不存在或无权查看。")
        status = 403 if isinstance(exc, PermissionDenied) else 400
        if exc.exit_code == 8:
            status = 500
        return _error_page(request, status, "操作未完成", exc.one_line())

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return PlainTextResponse("", status_code=204)

    app.include_router(routes_auth.router)
    app.include_router(routes_public.router)
    app.include_router(routes_unit.router)
    app.include_router(routes_review.router)
    app.include_router(routes_ops.router)
    app.include_router(routes_api.router)
    return app
