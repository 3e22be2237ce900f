"""Portal pages per role, end to end through the core: a unit answers its ticket, another unit's
URL gives 404, a reviewer decides, an operator publishes, the public page lists the release.
Every POST is audited under the logged-in account, with the portal's login as ``via``."""

from __future__ import annotations

from fastapi.testclient import TestClient
from portal_testkit import SI, csrf_of, login, post
from test_portal_auth import audit

from assessment import engine
from governance.identity import login_name
from quality import tickets
from shuyu_core.home import Home

SCJG_TICKET = 1  # the template's first ticket is SU-SCJG's; SU-YB's come after


def _yb_ticket(home: Home) -> int:
    return next(t.id for t in tickets.list_tickets(home) if t.source_unit == "SU-YB")


def test_unit_sees_its_quality_and_tickets_only(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, _ = domain
    login(client, "scjg-clerk")
    page = client.get("/unit")
    assert page.status_code == 200 and "市场主体登记信息" in page.text and "<svg" in page.text
    assert "医疗保障结算信息" not in page.text
    listing = client.get("/unit/tickets").text
    assert f"/unit/tickets/{SCJG_TICKET}" in listing
    assert f'/unit/tickets/{_yb_ticket(home)}"' not in listing
    t = client.get(f"/unit/tickets/{SCJG_TICKET}")
    assert t.status_code == 200 and "不合格规则与样例" in t.text and "答复期限" in t.text


def test_another_units_ticket_is_404_and_the_attempt_audited(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, _ = domain
    other = _yb_ticket(home)
    login(client, "scjg-clerk")
    missing = client.get("/unit/tickets/99999")
    for url in (
        f"/unit/tickets/{other}",
        f"/unit/tickets/{other}/failing.csv",
        f"/unit/tickets/{other}/receipt/1",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "医疗" not in r.text and r.text.count("不存在或无权查看") == 1
    # the same page as a ticket that does not exist: nothing tells them apart
    assert missing.status_code == 404
    form = client.get(f"/unit/tickets/{SCJG_TICKET}")
    r = client.post(
        f"/unit/tickets/{other}/reply",
        data={
            "action": "answer",
            "note": "已核对全部记录并更正，下期数据生效",
            "csrf": csrf_of(form.text),
        },
    )
    assert r.status_code == 404
    assert tickets.get(home, other).state == "open"
    refused = [e for e in audit(home, "ticket.read") if e["outcome"] == "refused"]
    assert refused and all(e["actor"] == "scjg-clerk" for e in refused)
    assert refused[0]["object"] == f"ticket/{other}"
    # an operator URL is not open to a unit either
    assert client.get("/ops/tickets").status_code == 403


def test_unit_acknowledges_and_answers_with_receipts(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, _ = domain
    login(client, "scjg-clerk")
    url = f"/unit/tickets/{SCJG_TICKET}"
    r = post(client, f"{url}/reply", url, {"action": "ack", "note": "已收到，正在核查"})
    assert r.status_code == 303 and "/receipt/" in r.headers["location"]
    receipt = client.get(r.headers["location"])
    assert "回执编号" in receipt.text and "确认收到" in receipt.text
    # an answer without substance is refused and changes nothing
    r = post(client, f"{url}/reply", url, {"action": "answer", "note": "已处理。"})
    assert r.status_code == 400
    assert tickets.get(home, SCJG_TICKET).state == "acknowledged"
    note = "已核对第57行统一社会信用代码并更正校验位，下期数据生效"
    r = post(client, f"{url}/reply", url, {"action": "answer", "note": note})
    assert r.status_code == 303
    t = tickets.get(home, SCJG_TICKET)
    assert t.state == "answered" and t.last_note == note
    text = client.get(r.headers["location"]).text
    assert note in text and "答复" in text
    for action in ("ticket.ack", "ticket.answer"):
        ok = [e for e in audit(home, action) if e["outcome"] == "ok"]
        assert ok[-1]["actor"] == "scjg-clerk" and ok[-1]["role"] == "source_unit:SU-SCJG"
        assert ok[-1]["details"]["via"] == login_name()
    short = [e for e in audit(home, "ticket.answer") if e["outcome"] == "error"]
    assert short and short[0]["actor"] == "scjg-clerk"


def test_masked_csv_of_failing_rows(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, _ = domain
    login(client, "scjg-clerk")
    r = client.get(f"/unit/tickets/{SCJG_TICKET}/failing.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").splitlines()
    assert lines[0] == "resource,snapshot,rule,field,row,masked_value"
    assert len(lines) >= 2 and all("*" in line.split(",")[-1] for line in lines[1:])
    assert audit(home, "ticket.export")[0]["actor"] == "scjg-clerk"


def test_ticket_note_with_script_renders_inert(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    login(client, "scjg-clerk")
    url = f"/unit/tickets/{SCJG_TICKET}"
    evil = "<script>alert('x')</script> 已核对并更正全部记录"
    post(client, f"{url}/reply", url, {"action": "answer", "note": evil})
    page = client.get(url)
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # no script may run
    login(client, "ops-zhao")
    assert "<script>alert" not in client.get(f"/ops/tickets/{SCJG_TICKET}").text


def test_reviewer_operator_public_flow(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, releases = domain
    rid = releases[SI]
    login(client, "reviewer-li")
    queue = client.get("/review").text
    assert rid in queue
    page = client.get(f"/review/{rid}")
    assert page.status_code == 200 and "评估结论" in page.text and "发布数据预览" in page.text
    for link in ("report", "product-report", "signoff"):
        r = client.get(f"/review/{rid}/{link}")
        assert r.status_code == 200, link
        assert "<built-in" not in r.text and "object at 0x" not in r.text
    # a decision needs a comment
    r = post(
        client, f"/review/{rid}/decide", f"/review/{rid}", {"decision": "approve", "comment": " "}
    )
    assert r.status_code == 400
    r = post(
        client,
        f"/review/{rid}/decide",
        f"/review/{rid}",
        {"decision": "approve", "comment": "同意发布"},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("/signoff")
    signoff = client.get(r.headers["location"]).text
    assert "同意发布" in signoff and "评审人签字" in signoff
    ok = [e for e in audit(home, "review.approve") if e["outcome"] == "ok"]
    assert ok[0]["actor"] == "reviewer-li" and ok[0]["details"]["via"] == login_name()
    assert rid not in client.get("/review").text  # left the queue
    # a reviewer cannot publish
    assert client.get(f"/ops/releases/{rid}").status_code == 403

    login(client, "ops-zhao")
    rel_page = client.get(f"/ops/releases/{rid}")
    assert "已通过，待发布" in rel_page.text
    assert "待发布" in client.get("/notices").text
    r = post(client, f"/ops/releases/{rid}/publish", f"/ops/releases/{rid}", {})
    assert r.status_code == 303
    pub = [e for e in audit(home, "publish") if e["outcome"] == "ok"]
    assert pub[0]["actor"] == "ops-zhao" and pub[0]["details"]["via"] == login_name()

    client.cookies.clear()
    public = client.get("/public")
    assert public.status_code == 200 and rid in public.text and "现行" in public.text
    assert client.get(f"/public/products/{rid}").status_code == 200
    assert client.get("/public/products/not-a-release").status_code == 404


def test_rectify_then_approve_without_a_new_assessment_is_refused(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, releases = domain
    rid = releases[SI]
    login(client, "reviewer-li")
    url = f"/review/{rid}"
    r = post(client, f"{url}/decide", url, {"decision": "rectify", "comment": "补充口径说明"})
    assert r.status_code == 303
    r = post(client, f"{url}/decide", url, {"decision": "approve", "comment": "同意"})
    assert r.status_code == 403 and "rectification was ordered" in r.text
    refused = [e for e in audit(home, "review.approve") if e["outcome"] == "refused"]
    assert refused and refused[-1]["actor"] == "reviewer-li"
    # after a new assessment (by an operator) the same reviewer may approve it
    from governance.actors import Actor, set_current

    set_current(Actor("test-operator", "operator"))
    engine.assess(home, rid)
    r = post(client, f"{url}/decide", url, {"decision": "approve", "comment": "整改后同意"})
    assert r.status_code == 303


def test_role_pages_are_closed_to_other_roles(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    home, releases = domain
    assert client.get("/review", follow_redirects=False).status_code == 303  # not logged in
    login(client, "scjg-clerk")
    for url in ("/review", "/ops", "/ops/audit", "/admin", f"/review/{releases[SI]}"):
        assert client.get(url).status_code == 403, url
    login(client, "reviewer-li")
    assert client.get("/unit").status_code == 403
    refused = [e for e in audit(home, "portal.page") if e["outcome"] == "refused"]
    assert {e["actor"] for e in refused} == {"scjg-clerk", "reviewer-li"}


def test_operator_pages(client: TestClient, domain: tuple[Home, dict[str, str]]) -> None:
    _home, releases = domain
    login(client, "ops-zhao")
    for url in ("/ops", "/ops/budgets", "/ops/tickets", "/ops/audit", "/notices"):
        r = client.get(url)
        assert r.status_code == 200, url
    assert releases[SI] in client.get("/ops").text
    assert "审计链完整" in client.get("/ops/audit").text
    assert "<svg" in client.get("/ops/budgets").text


def test_admin_grants_through_the_portal(
    client: TestClient, domain: tuple[Home, dict[str, str]]
) -> None:
    from governance import accounts

    home, _ = domain
    login(client, "admin-sun")
    r = post(client, "/admin/accounts/yb-clerk/grant", "/admin", {"role": "source_unit:SU-SCJG"})
    assert r.status_code == 303
    acc = accounts.get(home, "yb-clerk")
    assert acc is not None and acc.holds("source_unit:SU-SCJG")
    grant = [e for e in audit(home, "account.grant") if e["object"] == "yb-clerk"]
    assert grant[-1]["actor"] == "admin-sun" and grant[-1]["details"]["via"] == login_name()
    # four-eyes still applies: a reviewer cannot also become an operator
    r = post(client, "/admin/accounts/reviewer-li/grant", "/admin", {"role": "operator"})
    assert r.status_code == 403


def test_ticket_lists_are_paged(
    client: TestClient, domain: tuple[Home, dict[str, str]], monkeypatch: object
) -> None:
    import portal.routes_unit as ru

    home, _ = domain
    monkeypatch.setattr(ru, "PAGE_SIZE", 4)  # type: ignore[attr-defined]
    login(client, "ops-zhao")
    ids = [t.id for t in tickets.list_tickets(home)]
    assert len(ids) > 4
    first, second = client.get("/ops/tickets").text, client.get("/ops/tickets?p=2").text
    assert f'/ops/tickets/{ids[0]}"' in first and f'/ops/tickets/{ids[4]}"' not in first
    assert f'/ops/tickets/{ids[4]}"' in second and "下一页" in first and "上一页" in second


def test_notices_per_role(client: TestClient, domain: tuple[Home, dict[str, str]]) -> None:
    home, releases = domain
    waiting = [t for t in tickets.list_tickets(home, unit="SU-SCJG") if t.state in tickets.WAITING]
    login(client, "scjg-clerk")
    page = client.get("/notices").text
    todo, _, record = page.partition("<h2>通知记录</h2>")  # 待办 first, then the outbox
    assert todo.count("新工单") + todo.count("到期") + todo.count("已逾期") == len(waiting)
    new = sum(t.state in (tickets.OPEN, tickets.REOPENED) for t in waiting)
    assert record.count("新工单") == new
    assert f'<span class="badge">{len(waiting)}</span>' in page
    assert "SU-YB" not in page and "医疗" not in page
    login(client, "reviewer-li")
    page = client.get("/notices").text
    assert f"待评审：{releases[SI]}" in page and '<span class="badge">1</span>' in page


def test_csv_cells_cannot_become_spreadsheet_formulas() -> None:
    from portal.routes_unit import _cell

    assert _cell('=HYPERLINK("x")**') == '\'=HYPERLINK("x")**'
    assert _cell("@SUM(1)") == "'@SUM(1)" and _cell("-1+1") == "'-1+1"
    assert _cell("9321080*****5F") == "9321080*****5F"
