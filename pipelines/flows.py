"""Prefect flows for ingestion: thin wrappers that add retries, logs and an artifact.

The logic lives in ``pipelines.ingest`` and ``quality.api``; these only orchestrate. Like
``shuyu ingest``, the ingest flow runs the new snapshot's quality checks, so tickets are
verified or reopened and a build right after does not see an unchecked snapshot. The CLI calls
the core directly unless ``--prefect`` is given, so commands do not wait for a Prefect server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from governance import roles
from governance.actors import Actor
from pipelines.flow_support import acting, flow_actor, flow_home, user_error, with_retries
from pipelines.flows_concurrency import one_ingest_per_resource
from shuyu_core.errors import ShuyuError
from shuyu_core.snapshots import Manifest


@task(name="ingest-snapshot")
def ingest_task(code: str, source: str, actor: Actor, allow_empty: bool = False) -> Manifest:
    from pipelines.ingest import ingest_path

    with acting(actor):
        home = flow_home()
        # The core ingest records who ingested but has no role gate of its own (the CLI's
        # caller is the operator at the terminal); a requester named by a run must be shown
        # to hold the right.
        roles.require(home, "ingest", f"resource/{code}")
        with one_ingest_per_resource(code):
            manifest = with_retries(
                lambda: ingest_path(home, code, Path(source), allow_empty=allow_empty),
                what=f"ingest {code}",
            )
    get_run_logger().info(
        "ingested %s: %d rows, snapshot %s, SM3 %s, catalog %s (for %s)",
        code,
        manifest.rows,
        manifest.snapshot_id,
        manifest.sm3,
        manifest.catalog_version,
        actor,
    )
    return manifest


@task(name="quality-check")
def check_task(code: str, snapshot_id: str, actor: Actor) -> dict[str, Any]:
    from quality.api import run_check

    with acting(actor):
        home = flow_home()
        result, changes = with_retries(
            lambda: run_check(home, code, snapshot_id), what=f"quality check {code}"
        )
    summary = {
        "resource": code,
        "snapshot": snapshot_id,
        "rows": result.rows,
        "rules": len(result.rules),
        "failing_rules": sum(1 for r in result.rules if r.failed),
        "ticket_changes": len(changes),
    }
    get_run_logger().info(
        "quality %s snapshot %s: %d rows, %d of %d rules with failures, %d ticket change(s)",
        code,
        snapshot_id,
        summary["rows"],
        summary["failing_rules"],
        summary["rules"],
        summary["ticket_changes"],
    )
    return summary


@task(name="pull-source")
def pull_task(code: str, actor: Actor) -> list[Manifest]:
    """Take what is new from the catalog's declared source; a source that is down is retried
    (twice, 5 s apart), then the run fails with one line naming it."""
    from pipelines.pull import SourceDown, pull

    with acting(actor):
        home = flow_home()
        with one_ingest_per_resource(code):
            try:
                result = with_retries(lambda: pull(home, code), what=f"pull {code}")
            except SourceDown as exc:
                down = ShuyuError(
                    f"{exc} (after 3 attempts)",
                    hint="check that the source is up; the pull wrote nothing",
                )
                down.retried = True  # type: ignore[attr-defined]
                down.audited = True  # each attempt was audited by the pull
                raise down from exc
    get_run_logger().info(
        "pulled %s from its %s: %d new snapshot(s), %d rows, watermark %s → %s (for %s)",
        code,
        result.kind,
        len(result.snapshots),
        result.rows,
        result.watermark_before,
        result.watermark_after,
        actor,
    )
    return result.snapshots


def ingest_artifact(code: str, manifest: Manifest) -> None:
    create_markdown_artifact(
        key=f"ingest-{code.lower()}",
        markdown=(
            f"### Snapshot {manifest.snapshot_id} of {code}\n\n"
            f"| rows | SM3 | source | catalog version |\n|---|---|---|---|\n"
            f"| {manifest.rows} | `{manifest.sm3[:16]}…` | {Path(manifest.source_path).name} "
            f"| {manifest.catalog_version} |\n"
        ),
        description=f"ingestion of {code}",
    )


@flow(name="shuyu-ingest", log_prints=True)
def ingest_flow(
    code: str,
    source: str | None = None,
    check: bool = True,
    requested_by: str | None = None,
    allow_empty: bool = False,
) -> Manifest | list[Manifest]:
    """Ingest one export of a catalogued resource into raw/ and check the new snapshot.

    Without ``source`` it pulls what is new from the source the catalog declares and returns
    the new snapshots (none when nothing is new), each checked.
    """
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        if source is None:
            pulled = pull_task(code, actor)
            for m in pulled:
                if check:
                    check_task(code, m.snapshot_id, actor)
                ingest_artifact(code, m)
            return pulled
        manifest = ingest_task(code, source, actor, allow_empty)
        if check:
            check_task(code, manifest.snapshot_id, actor)
    except ShuyuError as exc:
        return user_error(exc)
    ingest_artifact(code, manifest)
    return manifest
