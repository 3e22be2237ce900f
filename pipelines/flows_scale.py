"""Prefect flows for partitioned resources: one Prefect task per partition, on Dask when a
cluster is configured.

``run_scaled_quality``, ``run_scaled_desensitize`` and ``run_build`` (``flows_products``) run
their flow with ``prefect_dask.DaskTaskRunner`` when a cluster is configured (``--cluster
local:N``, ``SHUYU_CLUSTER``, ``SHUYU_DASK_SCHEDULER`` or the domain policy's
``scaleout.dask_scheduler``, see ``scaleout.backends``), else with the flow's default runner.
Inside such a flow every per-partition job of ``scaleout`` (quality counts, PII sample rows,
desensitized parts, a build's bounded co-partitions, a verification index's parts) is a task
of the flow (:class:`FlowTaskBackend`), so Prefect shows, retries and places each one on the
cluster; the driver-side steps (role, snapshot SM3, ledger charge, the noise, the release)
stay in the flow's own process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipelines.flow_support import acting, flow_actor, flow_home, user_error
from scaleout import backends, driver
from shuyu_core import snapshots
from shuyu_core.errors import ShuyuError

T = TypeVar("T")
R = TypeVar("R")


@task(name="partition", cache_policy=NO_CACHE)
def partition_task(fn: Callable[[Any], Any], item: Any) -> Any:
    """One per-partition job (``scaleout.jobs``) as a task of the running flow."""
    return fn(item)


class FlowTaskBackend:
    """``Backend.map`` as tasks of the running flow, on its task runner (DaskTaskRunner)."""

    name = "dask"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if not items:
            return []
        futures = partition_task.map(unmapped(fn), list(items))
        return [f.result() for f in futures]


def runs_on_dask() -> bool:
    """Whether the running flow's task runner is a DaskTaskRunner."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    ctx = FlowRunContext.get()
    return ctx is not None and isinstance(ctx.task_runner, DaskTaskRunner)


@contextmanager
def partitions_as_tasks() -> Iterator[bool]:
    """Inside a flow on DaskTaskRunner, route ``scaleout.backends.open_backend`` to the flow's
    tasks; yields whether it did (else jobs run as the setting says: locally or by a client)."""
    if runs_on_dask():
        with backends.using(FlowTaskBackend()):
            yield True
    else:
        yield False


def on_cluster(f: Any, cluster: str | None = None, home: Any = None) -> Any:
    """``f`` with DaskTaskRunner when a cluster is configured, else ``f`` unchanged."""
    runner = backends.task_runner(cluster, home)
    return f if runner is None else f.with_options(task_runner=runner)


@flow(name="shuyu-scaled-quality", log_prints=True)
def scaled_quality_flow(
    code: str, as_of: str | None = None, requested_by: str | None = None
) -> dict[str, Any]:
    """Quality counts of the latest snapshot of ``code``, partition by partition: each part's
    row-rule counts and each step of the repeated-key shuffle are tasks of this flow."""
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        with acting(actor), partitions_as_tasks(), backends.open_backend() as backend:
            m = snapshots.latest(home, code)
            day = dt.date.fromisoformat(as_of) if as_of else None
            out = driver.quality_counts_of(home, code, backend, m.snapshot_id, day)
    except ShuyuError as exc:
        return user_error(exc)
    get_run_logger().info(
        "quality of %s/%s over %d part(s): %d rows", code, m.snapshot_id, len(m.files), out["rows"]
    )
    return out


@flow(name="shuyu-scaled-desensitize", log_prints=True)
def scaled_desensitize_flow(
    code: str, out: str, policy: str | None = None, requested_by: str | None = None
) -> list[str]:
    """Desensitize the latest snapshot of ``code`` part by part into ``out``: the PII sample
    rows and every desensitized part are tasks of this flow."""
    try:
        home = flow_home()
        actor = flow_actor(home, requested_by)
        with acting(actor), partitions_as_tasks(), backends.open_backend() as backend:
            files = driver.desensitize(home, code, backend, Path(out), policy)
    except ShuyuError as exc:
        return user_error(exc)
    get_run_logger().info("desensitized %s over %d part(s) into %s", code, len(files), out)
    return [str(f) for f in files]


def run_scaled_quality(code: str, cluster: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return on_cluster(scaled_quality_flow, cluster)(code, **kwargs)


def run_scaled_desensitize(
    code: str, out: str, cluster: str | None = None, **kwargs: Any
) -> list[str]:
    return on_cluster(scaled_desensitize_flow, cluster)(code, out, **kwargs)
