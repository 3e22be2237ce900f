"""The chained domain pipeline as one Prefect flow: ingest (or pull from the declared source)
→ quality check → desensitization → builds of the products that read the resource → their
assessments.

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
from pipelines.flows import check_task, ingest_artifact, ingest_task, pull_task
from pipelines.flows_assessment import assess_task, assessment_artifact
from pipelines.flows_products import build_task, desensitize_task, release_artifact
from shuyu_core.errors import ShuyuError


def products_reading(code: str) -> list[str]:
    """The product specs that read resource ``code``, in id order. Verification products are
    built per batch of queries (``shuyu verify``), not per snapshot, so they are left out."""
    from products import specs

    return sorted(
        pid
        for pid, s in specs.load_all().items()
        if s.kind != "verification" and code in {i.resource for i in s.inputs}
    )


@flow(name="shuyu-pipeline", log_prints=True)
def pipeline_flow(
    code: str,
    source: str | None = None,
    products: list[str] | None = None,
    requested_by: str | None = None,
    desensitize: bool = True,
) -> dict[str, Any]:
    """Ingest one export (or pull what is new from the declared source), check it, desensitize
    it, build the products reading it, and assess each release."""
    logger = get_run_logger()
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        if source is None:
            pulled = pull_task(code, actor)
            if not pulled:
                logger.info("pipeline %s: nothing new at the source, nothing built", code)
                return {"resource": code, "snapshot": None, "releases": {}}
            for earlier in pulled[:-1]:  # older drops are checked; the newest is built on
                ingest_artifact(code, earlier)
                check_task(code, earlier.snapshot_id, actor)
            manifest = pulled[-1]
        else:
            manifest = ingest_task(code, source, actor)
        ingest_artifact(code, manifest)
        quality = check_task(code, manifest.snapshot_id, actor)
        desensitized = desensitize_task(code, manifest.snapshot_id, actor) if desensitize else None
        wanted = products if products is not None else products_reading(code)
        releases: dict[str, dict[str, Any]] = {}
        for product in wanted:
            release_id, reused = build_task(
                product, actor, snapshot_ids={code: manifest.snapshot_id}
            )
            assessed = assess_task(release_id, actor)
            report = assessment_artifact(release_id, assessed)
            # The release's artifact links its assessment's report (and says the verdict).
            release_artifact(product, release_id, reused, assessed, report)
            releases[product] = {
                "release": release_id,
                "reused": reused,
                "verdict": assessed["verdict"],
                "assessment": assessed["assessment"],
                "report_artifact": report,
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
        "desensitized": desensitized,
        "releases": releases,
    }
