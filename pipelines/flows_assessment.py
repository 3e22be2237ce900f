"""Prefect flow for the pre-release assessment: a thin wrapper around
``assessment.engine.assess`` that publishes the Markdown report as a flow artifact."""

from __future__ import annotations

import datetime as dt
import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from governance.actors import Actor
from pipelines.flow_support import acting, flow_actor, flow_home, user_error, with_retries
from shuyu_core.errors import ShuyuError, ValidationError


def artifact_key(release_id: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return "assessment-" + re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-")


@task(name="assess-release")
def assess_task(release_id: str, actor: Actor, at: str | None = None) -> dict[str, str]:
    from assessment.engine import assess, report_paths

    try:
        day = dt.date.fromisoformat(at) if at else None
    except ValueError:
        raise ValidationError(f"at {at!r} is not a date", hint="use YYYY-MM-DD") from None
    with acting(actor):
        home = flow_home()
        a = with_retries(lambda: assess(home, release_id, at=day), what=f"assess {release_id}")
    paths = report_paths(home, a)
    get_run_logger().info(
        "assessment %s of release %s: verdict %s (for %s)",
        a.assessment_id,
        release_id,
        a.verdict,
        actor,
    )
    return {"verdict": a.verdict, "assessment": a.assessment_id, "md": str(paths["md"])}


def assessment_artifact(release_id: str, result: dict[str, str]) -> str:
    """Publish the report as the artifact ``assessment-<release>``; return that key."""
    with open(result["md"], encoding="utf-8") as fh:
        markdown = fh.read()
    key = artifact_key(release_id)
    create_markdown_artifact(
        key=key,
        markdown=markdown,
        description=f"pre-release assessment of {release_id}: {result['verdict']}",
    )
    return key


@flow(name="shuyu-assess-release", log_prints=True)
def assess_flow(
    release_id: str, at: str | None = None, requested_by: str | None = None
) -> dict[str, str]:
    """Assess one release and attach its Markdown report to the flow run."""
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        result = assess_task(release_id, actor, at)
    except ShuyuError as exc:
        return user_error(exc)
    assessment_artifact(release_id, result)
    return result
