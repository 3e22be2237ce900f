"""Prefect flow for a partitioned resource: one task per partition, on Dask when configured.

``run_scaled_quality(code, cluster)`` runs the flow with ``prefect_dask.DaskTaskRunner`` when a
cluster is configured (``--cluster local:N``, ``SHUYU_CLUSTER`` or ``SHUYU_DASK_SCHEDULER``,
see ``scaleout.backends``), else with the flow's default runner; the driver-side checks
(role, snapshot SM3) run in the flow, the per-part counts in the tasks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger

from catalogs.catalog import Catalog
from governance import roles
from pipelines.flow_support import acting, flow_actor, flow_home, user_error
from scaleout import backends, driver, jobs
from shuyu_core import snapshots
from shuyu_core.errors import ShuyuError


@task(name="quality-part")
def quality_part_task(job: jobs.QualityJob) -> dict[str, Any]:
    return jobs.quality_counts(job)


@flow(name="shuyu-scaled-quality", log_prints=True)
def scaled_quality_flow(
    code: str, as_of: str | None = None, requested_by: str | None = None
) -> dict[str, Any]:
    """Quality counts of the latest snapshot of ``code``, partition by partition."""
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        with acting(actor):
            unit = Catalog.load().get(code).source_unit.code
            roles.require(home, "quality.check", f"resource/{code}", unit)
            m = snapshots.latest(home, code)
            day = dt.date.fromisoformat(as_of) if as_of else None
            futures = quality_part_task.map(driver.quality_jobs(home, m, day))
            out = driver.combine_quality([f.result() for f in futures])
    except ShuyuError as exc:
        return user_error(exc)
    get_run_logger().info(
        "quality of %s/%s over %d part(s): %d rows", code, m.snapshot_id, len(futures), out["rows"]
    )
    return out


def run_scaled_quality(code: str, cluster: str | None = None, **kwargs: Any) -> dict[str, Any]:
    runner = backends.task_runner(cluster)
    f = (
        scaled_quality_flow
        if runner is None
        else scaled_quality_flow.with_options(task_runner=runner)
    )
    return f(code, **kwargs)
