"""Demo stage "assessment": assess the demo's releases, review them, publish those that pass.

Runs after the products stage. The operator assesses each of the four releases; a reviewer
(the demo switches the acting role to ``reviewer``) approves those whose verdict is pass,
orders rectification or rejects the others; the operator publishes the approved ones. A
re-run leaves already published releases as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from assessment import adapters as ad
from assessment import engine, publish, review
from governance.actors import Actor, current_actor, set_current
from pipelines.demo_accounts import REVIEWER
from pipelines.demo_products import DEMO_PRODUCTS
from shuyu_core.home import Home


def _latest_release(home: Home, product: str) -> str | None:
    found = ad.releases_of(home, product)
    return found[-1].release_id if found else None


def stage(home: Home, console: Console) -> dict[str, Any]:
    ad.require_role(home, "demo", "assessment stage")
    operator = current_actor()
    releases = {p: rid for p in DEMO_PRODUCTS if (rid := _latest_release(home, p)) is not None}
    rows: list[dict[str, Any]] = []
    for product, release_id in releases.items():
        published_before = publish.publication(home, release_id)
        if published_before is not None:
            rows.append(
                {
                    "product": product,
                    "release": release_id,
                    "verdict": published_before["verdict"],
                    "decision": "approve",
                    "published": True,
                    "report": str(engine.reports_root(home) / release_id),
                    "note": "already published",
                }
            )
            continue
        with console.status(f"assessing {release_id}"):
            a = engine.assess(home, release_id)
        decision = {"pass": "approve", "rectify": "rectify", "fail": "reject"}[a.verdict]
        comment = {
            "approve": "评估通过，同意发布 (assessment passed; approved for publication)",
            "rectify": "限期整改: " + "; ".join(a.reasons)[:500],
            "reject": "未通过: " + "; ".join(a.reasons)[:500],
        }[decision]
        set_current(Actor(REVIEWER, "reviewer"))
        try:
            review.decide(home, release_id, decision, comment)  # type: ignore[arg-type]
        finally:
            set_current(operator)
        published = False
        if decision == "approve":
            publish.publish(home, release_id)
            published = True
        rows.append(
            {
                "product": product,
                "release": release_id,
                "verdict": a.verdict,
                "decision": decision,
                "published": published,
                "report": str(engine.report_paths(home, a)["html"]),
                "note": "; ".join(c.name for c in a.checks if c.status != "pass"),
            }
        )
    table = Table(title="pre-release assessment 发布前评估")
    for col in ("product", "verdict", "review", "published", "report"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["product"],
            r["verdict"],
            r["decision"],
            "yes" if r["published"] else "no",
            r["report"],
        )
    console.print(table)
    listings = publish.catalog_paths(home)
    console.print(f"assessment reports are in {engine.reports_root(home)}", highlight=False)
    console.print(
        f"published catalog: {listings['catalog_html']} ({listings['catalog_json'].name}); "
        f"disclosure: {listings['disclosure_html']} ({listings['disclosure_json'].name}); "
        f"published products in {publish.products_root(home)}",
        highlight=False,
    )
    return {
        "verdicts": {r["product"]: r["verdict"] for r in rows},
        "published": [r["release"] for r in rows if r["published"]],
        "reports": str(engine.reports_root(home)),
        "catalog": str(listings["catalog_json"]),
        "disclosure": str(listings["disclosure_json"]),
        "missing_releases": [p for p in DEMO_PRODUCTS if p not in releases],
        "published_root": str(Path(publish.products_root(home))),
    }
