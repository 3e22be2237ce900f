"""Public pages (no login): the published product catalog and the disclosure (信息披露).

They read only what the publication gate wrote (registrations and the disclosure listing),
so nothing here can show a release that was not approved and published.
"""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from assessment import publish
from portal.web import PageError, public, render

router = APIRouter(prefix="/public")
_RID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")


def catalog_rows(regs: list[dict[str, object]]) -> list[dict[str, object]]:
    """Registrations newest first, each marked superseded when a later release of the same
    product was published (历史版本)."""
    latest: dict[str, str] = {}
    for r in sorted(regs, key=lambda r: str(r["published_at"])):
        latest[str(r["product_code"])] = str(r["release"])
    rows = [{**r, "superseded": latest[str(r["product_code"])] != r["release"]} for r in regs]
    return sorted(rows, key=lambda r: str(r["published_at"]), reverse=True)


@router.get("", response_class=HTMLResponse)
def catalog(request: Request) -> Response:
    ctx = public(request)
    # the listing the publication gate wrote to published/ (the egress), not a recomputation
    path = publish.catalog_paths(ctx.home)["disclosure_json"]
    doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return render(
        ctx, "public.html.j2", rows=catalog_rows(publish.registrations(ctx.home)), disclosure=doc
    )


@router.get("/products/{release_id}", response_class=HTMLResponse)
def published_report(request: Request, release_id: str) -> Response:
    ctx = public(request)
    if not _RID.match(release_id) or ".." in release_id:
        raise PageError(404, "未找到 Not found", "没有此已发布产品。")
    reg = publish.publication(ctx.home, release_id)
    if reg is None:
        raise PageError(404, "未找到 Not found", "没有此已发布产品。")
    base = publish.products_root(ctx.home) / release_id
    html_files = [f for f in reg.get("files", []) if str(f.get("format")) == "html"]
    if html_files:
        path = base / str(html_files[0]["path"])
        if path.is_file():
            return HTMLResponse(path.read_text(encoding="utf-8"))
    return render(ctx, "public_product.html.j2", reg=reg)
