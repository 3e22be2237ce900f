"""Prefect flow for product builds: a thin wrapper around ``products.engine.build``.

Retries are safe because a build is release-once: a retried attempt finds the stored release,
or the kept draw of a run that crashed after drawing, and never charges or draws twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from governance.actors import Actor
from pipelines.flow_support import acting, flow_actor, flow_home, user_error, with_retries
from pipelines.flows_scale import on_cluster, partitions_as_tasks
from shuyu_core.errors import ShuyuError


@task(name="build-product")
def build_task(
    product: str,
    actor: Actor,
    queries: str | None = None,
    requester: str | None = None,
    snapshot_ids: dict[str, str] | None = None,
    cluster: str | None = None,
) -> tuple[str, bool]:
    from products.engine import BuildOptions, build

    with acting(actor):
        home = flow_home()
        outcome = with_retries(
            lambda: build(
                home,
                product,
                BuildOptions(
                    snapshot_ids=snapshot_ids or {},
                    queries=Path(queries) if queries else None,
                    requester=requester,
                    cluster=cluster,
                ),
            ),
            what=f"build {product}",
        )
    m = outcome.manifest
    get_run_logger().info(
        "%s %s: release %s, inputs %s, rho %s (epsilon %s) (for %s)",
        "stored release reused" if outcome.reused else "new release",
        product,
        m.release_id,
        ", ".join(f"{i.resource}@{i.snapshot_id}" for i in m.inputs) if m.inputs else "—",
        m.budget.rho if m.budget else 0.0,
        m.budget.epsilon if m.budget else 0.0,
        actor,
    )
    return outcome.release_id, outcome.reused


@task(name="desensitize")
def desensitize_task(code: str, snapshot_id: str, actor: Actor) -> dict[str, Any]:
    """Desensitize the new snapshot into work/ (脱敏) with the default policy."""
    from transforms.apply import desensitize_resource, read_desensitization

    with acting(actor):
        home = flow_home()
        out = with_retries(lambda: desensitize_resource(home, code), what=f"desensitize {code}")
    doc = read_desensitization(out)
    if not out.name.startswith(snapshot_id):
        # desensitize_resource takes the latest snapshot; one ingest per resource at a time
        # (flows_concurrency) keeps that the one just ingested. Say so if it was not.
        raise ShuyuError(
            f"desensitized {out.name}, not the new snapshot {snapshot_id} of {code}",
            hint="another ingest of the resource ran meanwhile; run the pipeline again",
        )
    summary = {"output": str(out), "rows": doc.get("rows"), "columns": len(doc["columns"])}
    get_run_logger().info(
        "desensitized %s snapshot %s: %s rows, %d column rule(s) → %s (for %s)",
        code,
        snapshot_id,
        summary["rows"],
        summary["columns"],
        out,
        actor,
    )
    return summary


def _artifact_link(key: str) -> str:
    """A Markdown link to artifact ``key`` in the Prefect UI, or the key when no UI is known."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    return f"[`{key}`]({str(ui).rstrip('/')}/artifacts/key/{key})" if ui else f"`{key}`"


def release_artifact(
    product: str,
    release_id: str,
    reused: bool,
    assessed: dict[str, str] | None = None,
    report_key: str | None = None,
) -> None:
    markdown = (
        f"### {product}\n\nrelease `{release_id}` "
        f"({'stored release reused' if reused else 'new release'})\n"
    )
    if assessed is not None and report_key is not None:
        link = _artifact_link(report_key)
        markdown += (
            f"\n| assessment | verdict | report |\n|---|---|---|\n"
            f"| `{assessed['assessment']}` | {assessed['verdict']} | {link} |\n"
        )
    create_markdown_artifact(
        key=f"release-{product.replace('_', '-')}",
        markdown=markdown,
        description=f"build of {product}",
    )


@flow(name="shuyu-build-product", log_prints=True)
def build_flow(
    product: str,
    queries: str | None = None,
    requester: str | None = None,
    snapshot_ids: dict[str, str] | None = None,
    requested_by: str | None = None,
    cluster: str | None = None,
) -> tuple[str, bool]:
    """Build one data product release (or return the stored one) and publish an artifact.

    ``cluster`` (or SHUYU_CLUSTER / SHUYU_DASK_SCHEDULER / the domain policy): the build's
    per-partition work runs on that Dask cluster. On DaskTaskRunner (:func:`run_build`) each
    co-partition is a task of this flow and the build itself — every gate, the charge, the
    noise, the release — runs in the flow's process, not on a worker (the workers hold no
    state database); otherwise the build is one task and reaches the cluster as a client."""
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        with partitions_as_tasks() as as_tasks:
            run = build_task.fn if as_tasks else build_task
            release_id, reused = run(product, actor, queries, requester, snapshot_ids, cluster)
    except ShuyuError as exc:
        return user_error(exc)
    release_artifact(product, release_id, reused)
    return release_id, reused


def run_build(product: str, cluster: str | None = None, **kwargs: Any) -> tuple[str, bool]:
    """The build flow, on DaskTaskRunner when a cluster is configured (``flows_scale``)."""
    return on_cluster(build_flow, cluster)(product, cluster=cluster, **kwargs)
