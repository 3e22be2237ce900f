"""One end-to-end run in a real browser: Playwright driving Debian's chromium (apt; Playwright's
own browser download does not work here) against the portal served by uvicorn.

A source unit answers its ticket and gets a receipt (a ``<script>`` in its note shows as text
and never runs; a form posted without the CSRF token is refused), a tampered URL to another
unit's ticket shows 404, a reviewer approves with a comment, an operator publishes, the public
page lists the release, and five wrong passwords lock an account. Screenshots are kept in the
test's tmp directory. Never skipped: without chromium the test fails and says how to install it
(``.ci/run`` does).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from portal_testkit import PASSWORD, SI

from quality import tickets
from shuyu_core.home import Home


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: apt-get install chromium fonts-noto-cjk (.ci/run does)"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served(domain: tuple[Home, dict[str, str]]) -> Iterator[str]:
    from portal.app import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(domain[0]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the portal did not start"
        assert thread.is_alive(), "the portal stopped while starting"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.mark.slow
def test_browser_end_to_end(
    served: str, domain: tuple[Home, dict[str, str]], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    home, releases = domain
    rid = releases[SI]
    mine = next(t.id for t in tickets.list_tickets(home) if t.source_unit == "SU-SCJG")
    other = next(t.id for t in tickets.list_tickets(home) if t.source_unit == "SU-YB")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:

            def session(name: str):  # type: ignore[no-untyped-def]
                ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"{served}/login")
                page.fill("#username", name)
                page.fill("#password", PASSWORD)
                with page.expect_navigation():
                    page.click("button[type=submit]")
                return ctx, page

            ctx, page = session("scjg-clerk")
            assert page.url.endswith("/unit")
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{served}/unit/tickets/{mine}")
            with page.expect_navigation():
                page.fill("#ack-note", "<script>alert('xss')</script>已收到")
                page.click("form:has(#ack-note) button[type=submit]")
            page.goto(f"{served}/unit/tickets/{mine}")
            assert "<script>alert('xss')</script>已收到" in page.inner_text("body")
            assert dialogs == []  # shown as text, never run
            # a form posted without the session's CSRF token is refused
            forged = page.request.post(
                f"{served}/unit/tickets/{mine}/reply", form={"action": "ack", "note": "x"}
            )
            assert forged.status == 403
            note = "已核对样例行的统一社会信用代码并更正校验位，下期数据生效"
            page.fill("#answer-note", note)
            with page.expect_navigation():
                page.click("form:has(#answer-note) button[type=submit]")
            assert "/receipt/" in page.url
            assert page.locator("h1").inner_text() == "数据校核答复回执"
            page.screenshot(path=str(tmp_path / "receipt.png"), full_page=True)
            response = page.goto(f"{served}/unit/tickets/{other}")
            assert response is not None and response.status == 404
            assert "不存在或无权查看" in page.content()
            ctx.close()

            ctx, page = session("reviewer-li")
            page.goto(f"{served}/review/{rid}")
            page.fill("#comment", "评估通过，同意发布")
            with page.expect_navigation():
                page.click("button[value=approve]")
            assert page.url.endswith("/signoff")
            assert "评估通过，同意发布" in page.content()
            page.screenshot(path=str(tmp_path / "signoff.png"), full_page=True)
            ctx.close()

            ctx, page = session("ops-zhao")
            page.goto(f"{served}/ops/releases/{rid}")
            with page.expect_navigation():
                page.get_by_role("button", name="发布", exact=True).click()
            assert "<b>已发布</b>" in page.content()
            ctx.close()

            # five wrong passwords lock the account, even against the right one afterwards
            ctx = browser.new_context(locale="zh-CN")
            page = ctx.new_page()
            for _ in range(5):
                page.goto(f"{served}/login")
                page.fill("#username", "yb-clerk")
                page.fill("#password", "not-the-password")
                with page.expect_navigation():
                    page.click("button[type=submit]")
            page.goto(f"{served}/login")
            page.fill("#username", "yb-clerk")
            page.fill("#password", PASSWORD)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "已锁定" in page.inner_text("[role=alert]")
            ctx.close()

            ctx = browser.new_context(locale="zh-CN")
            page = ctx.new_page()
            page.goto(f"{served}/public")
            assert rid in page.content()
            page.screenshot(path=str(tmp_path / "public.png"), full_page=True)
            ctx.close()
        finally:
            browser.close()
    assert tickets.get(home, mine).state == "answered"
    for shot in ("receipt.png", "signoff.png", "public.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
