"""Prefect flow for the pre-release assessment: a thin wrapper around
``assessment.engine.assess`` that publishes the Markdown report as a flow artifact."""

from __future__ import annotations

import datetime as dt
import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from assessment.engine import assess, report_paths
from shuyu_core.home import Home


def artifact_key(release_id: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return "assessment-" + re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-")


@task(name="assess-release")
def assess_task(release_id: str, at: str | None = None) -> dict[str, str]:
    home = Home.from_env()
    a = assess(home, release_id, at=dt.date.fromisoformat(at) if at else None)
    paths = report_paths(home, a)
    return {"verdict": a.verdict, "assessment": a.assessment_id, "md": str(paths["md"])}


@flow(name="shuyu-assess-release", log_prints=True)
def assess_flow(release_id: str, at: str | None = None) -> dict[str, str]:
    """Assess one release and attach its Markdown report to the flow run."""
    result = assess_task(release_id, at)
    with open(result["md"], encoding="utf-8") as fh:
        markdown = fh.read()
    create_markdown_artifact(
        key=artifact_key(release_id),
        markdown=markdown,
        description=f"pre-release assessment of {release_id}: {result['verdict']}",
    )
    print(f"{release_id}: verdict {result['verdict']} ({result['assessment']})")
    return result
