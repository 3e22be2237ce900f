"""One ingest per resource at a time, across every worker of the pool.

Two concurrent ingests of one resource would both succeed (snapshots are immutable and
renamed into place atomically), but they waste the pool and make "the latest snapshot"
depend on which rename wins. Deployment runs therefore occupy the Prefect global concurrency
limit ``ingest-<CODE>`` (limit 1) while they ingest. The limits are created by
``shuyu ops up`` (``pipelines.ops_stack.create_ingest_limits``) or by hand with
``prefect gcl create ingest-<CODE> --limit 1``; a missing limit does not block (Prefect's
non-strict mode), so local runs and tests never wait on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def ingest_limit_name(code: str) -> str:
    return f"ingest-{code.lower()}"


@contextmanager
def one_ingest_per_resource(code: str, *, timeout: float = 3600.0) -> Iterator[None]:
    from pipelines.flow_support import in_deployment_run

    if not in_deployment_run():
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(ingest_limit_name(code), occupy=1, timeout_seconds=timeout, strict=False):
        yield
