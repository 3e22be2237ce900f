"""Prefect flow for the quality sweep: a thin wrapper around ``quality.api.check_pending``.

Scheduled after ingestion (or every few minutes), it checks each resource whose latest
snapshot is new, so tickets are verified or reopened by new data without anyone running
``shuyu quality check``. A retry is safe: checks already stored are not pending any more.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from governance.actors import Actor
from pipelines.flow_support import acting, flow_actor, flow_home, user_error, with_retries
from quality import api
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home


def sweep_summary(home: Home) -> list[dict[str, object]]:
    """Run the sweep and summarise each check (the flow's task body, testable alone)."""
    return [
        {
            "resource": result.resource,
            "snapshot": result.snapshot,
            "rows": result.rows,
            "failing_rules": sum(1 for r in result.rules if r.failed),
            "ticket_changes": ", ".join(
                f"{c.ticket}:{c.from_state or 'new'}→{c.to_state}" for c in changes
            ),
        }
        for result, changes in api.check_pending(home)
    ]


@task(name="quality-sweep")
def sweep_task(actor: Actor) -> list[dict[str, object]]:
    with acting(actor):
        home = flow_home()
        checked = with_retries(lambda: sweep_summary(home), what="quality sweep", retries=1)
    logger = get_run_logger()
    for c in checked:
        logger.info(
            "quality %s snapshot %s: %s rows, %s rule(s) with failures",
            c["resource"],
            c["snapshot"],
            c["rows"],
            c["failing_rules"],
        )
    logger.info("quality sweep: %d snapshot(s) checked (for %s)", len(checked), actor)
    return checked


@flow(name="shuyu-quality-sweep", log_prints=True)
def quality_sweep_flow(requested_by: str | None = None) -> list[dict[str, object]]:
    """Check every new snapshot, open/verify/reopen tickets, publish a summary artifact."""
    try:
        home = flow_home()
        checked = sweep_task(flow_actor(home, requested_by))
    except ShuyuError as exc:
        return user_error(exc)
    lines = "".join(
        f"| {c['resource']} | {c['snapshot']} | {c['rows']} | {c['failing_rules']} | "
        f"{c['ticket_changes'] or '—'} |\n"
        for c in checked
    )
    create_markdown_artifact(
        key="quality-sweep",
        markdown=(
            "### Quality sweep (新快照质量检查)\n\n"
            "| resource | snapshot | rows | failing rules | ticket changes |\n"
            "|---|---|---|---|---|\n" + (lines or "| — | nothing new | | | |\n")
        ),
        description="quality checks of new snapshots",
    )
    return checked
