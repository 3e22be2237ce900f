"""The chained domain pipeline as one Prefect flow: ingest → quality check → builds of the
products that read the resource → their assessments.

Ids travel inside the flow run (the new snapshot is pinned for each build, each release id goes
to its assessment), so nobody copies a release id from an artifact by hand. Under a deployment
the task results are persisted (``PREFECT_RESULTS_PERSIST_BY_DEFAULT`` in prefect.yaml), so
the flow's return value (snapshot, release ids, verdicts) can be read back through the API. The
reviewer's decision stays a human step (``shuyu review`` or the portal).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from pipelines.flow_support import flow_actor, flow_home, user_error
from pipelines.flows import check_task, ingest_artifact, ingest_task
from pipelines.flows_assessment import assess_task, assessment_artifact
from pipelines.flows_products import build_task, release_artifact
from shuyu_core.errors import ShuyuError


def products_reading(code: str) -> list[str]:
    """The product specs that read resource ``code``, in id order."""
    from products import specs

    return sorted(
        pid for pid, s in specs.load_all().items() if code in {i.resource for i in s.inputs}
    )


@flow(name="shuyu-pipeline", log_prints=True)
def pipeline_flow(
    code: str,
    source: str,
    products: list[str] | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Ingest one export, check it, build the products reading it, and assess each release."""
    logger = get_run_logger()
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        manifest = ingest_task(code, source, actor)
        ingest_artifact(code, manifest)
        quality = check_task(code, manifest.snapshot_id, actor)
        wanted = products if products is not None else products_reading(code)
        releases: dict[str, dict[str, Any]] = {}
        for product in wanted:
            release_id, reused = build_task(
                product, actor, snapshot_ids={code: manifest.snapshot_id}
            )
            release_artifact(product, release_id, reused)
            assessed = assess_task(release_id, actor)
            assessment_artifact(release_id, assessed)
            releases[product] = {
                "release": release_id,
                "reused": reused,
                "verdict": assessed["verdict"],
                "assessment": assessed["assessment"],
            }
    except ShuyuError as exc:
        return user_error(exc)
    logger.info(
        "pipeline %s: snapshot %s, %d product(s): %s",
        code,
        manifest.snapshot_id,
        len(releases),
        "; ".join(f"{p} {r['release']} → {r['verdict']}" for p, r in releases.items()) or "none",
    )
    return {
        "resource": code,
        "snapshot": manifest.snapshot_id,
        "sm3": manifest.sm3,
        "rows": manifest.rows,
        "quality": quality,
        "releases": releases,
    }
