"""数据核验接口: ``POST /api/v1/verify`` for callers' systems (JSON, API token, no session).

Request: ``Authorization: Bearer <token>`` and ``{"product": "<verification product id>",
"query": {...}}`` for one query or ``{"product": ..., "queries": [{...}, ...]}`` for a batch;
a query has ``query_id``, ``kind`` (person | enterprise), ``name``, ``id_number``,
``consent_ref``. Answer: per query only ``match`` / ``mismatch`` / ``not_found`` /
``refused`` (with ``quota_exceeded`` or ``consent_not_verified``).

Status: 401 for a missing, malformed, unknown, wrong or revoked token (one answer for all,
the reason goes to the audit log); 403 when the token's account may not verify this product
(no developer role, another developer's product, disabled); 429 over the token's rate
(``portal.api_requests_per_minute``); 400 for a malformed batch. Every refusal is audited.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from governance import accounts, api_tokens
from governance.actors import Actor, set_current
from governance.audit import record
from portal.web import anonymous, home_of, policy, via
from products import verification_service
from shuyu_core.errors import IntegrityError, NotFoundError, PermissionDenied, ShuyuError

router = APIRouter()
_window: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
_window_lock = threading.Lock()


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def allow(token_id: str, per_minute: int, now: float | None = None) -> bool:
    """Sliding one-minute window per token (in this process)."""
    t = time.monotonic() if now is None else now
    with _window_lock:
        q = _window[token_id]
        while q and q[0] <= t - 60.0:
            q.popleft()
        if len(q) >= per_minute:
            return False
        q.append(t)
        return True


def _developer_role(acc: accounts.Account, developer: str | None) -> str | None:
    """The account's role for this product's developer, else any developer role it holds."""
    devs = [r for r in acc.roles if r.startswith("developer:")]
    wanted = f"developer:{developer}" if developer else None
    if wanted in devs:
        return wanted
    return devs[0] if devs else None


@router.post("/api/v1/verify")
async def verify(request: Request) -> JSONResponse:
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    # The lookups and the audit block: run them off the event loop.
    return await run_in_threadpool(_verify, request, body)


def _verify(request: Request, body: Any) -> JSONResponse:
    home = home_of(request)
    set_current(anonymous())
    header = request.headers.get("authorization", "")
    presented = header[7:].strip() if header[:7].lower() == "bearer " else None
    name, token_id = api_tokens.authenticate(home, presented)
    if name is None:
        record(home, "api.auth", request.url.path, "refused", {"reason": token_id})
        return _error(401, "unauthorized", "API 令牌无效或已吊销 invalid or revoked API token")
    if not isinstance(body, dict) or not isinstance(body.get("product"), str):
        record(home, "api.verify", request.url.path, "refused", {"reason": "malformed body"})
        return _error(400, "bad_request", 'body: {"product": ID, "query": {...}|"queries": [...]}')
    single = "query" in body
    rows = [body["query"]] if single else body.get("queries")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        record(home, "api.verify", body["product"], "refused", {"reason": "no queries"})
        return _error(400, "bad_request", "give one query object or a non-empty queries list")
    acc = accounts.get(home, name)
    if acc is None:
        record(home, "api.auth", request.url.path, "refused", {"reason": f"no account {name}"})
        return _error(401, "unauthorized", "API 令牌无效或已吊销 invalid or revoked API token")
    set_current(Actor(acc.name, "none", via=via()))  # refusals below name the account
    try:
        spec = verification_service.spec_of(body["product"])
        role = _developer_role(acc, spec.developer)
        actor = Actor(acc.name, role or "none", via=via())
        set_current(actor)
        if role is None:
            reason = f"account {acc.name} holds no developer role"
            record(home, "verify.query", spec.id, "refused", {"reason": reason, "token": token_id})
            return _error(403, "forbidden", "该账号无核验权限 the account may not verify")
        if not allow(token_id, policy(home).api_requests_per_minute):
            record(
                home,
                "verify.query",
                spec.id,
                "refused",
                {"reason": "rate_limited", "token": token_id},
            )
            return JSONResponse(
                {"error": "rate_limited", "message": "请求过于频繁 too many requests"},
                status_code=429,
                headers={"Retry-After": "60"},
            )
        result = verification_service.verify(
            home, spec.id, rows, {"channel": "api", "token": token_id}
        )
    except ShuyuError as exc:
        if not exc.audited:
            record(home, "verify.query", str(body["product"]), "refused", {"error": exc.one_line()})
        if isinstance(exc, NotFoundError):
            return _error(404, "not_found", exc.one_line())
        if isinstance(exc, PermissionDenied):
            return _error(403, "forbidden", "该账号无权核验此产品 not authorized for this product")
        if isinstance(exc, IntegrityError) or exc.exit_code == 8:
            return _error(500, "integrity", "服务暂不可用 service unavailable")
        return _error(400, "bad_request", exc.one_line())
    answers = result.to_dicts()
    if single:
        return JSONResponse({"product": spec.id, "result": answers[0]})
    return JSONResponse({"product": spec.id, "results": answers})
