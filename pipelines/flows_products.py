"""Prefect flow for product builds: a thin wrapper around ``products.engine.build``.

Retries are safe because a build is release-once: a retried task finds the stored release,
or the kept draw of a run that crashed after drawing, and never charges or draws twice.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipelines.flow_support import retry_unless_user_error
from products.engine import BuildOptions, build
from shuyu_core.home import Home


@task(
    name="build-product",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_user_error,
)
def build_task(
    product: str,
    queries: str | None = None,
    requester: str | None = None,
    snapshot_ids: dict[str, str] | None = None,
) -> tuple[str, bool]:
    outcome = build(
        Home.from_env(),
        product,
        BuildOptions(
            snapshot_ids=snapshot_ids or {},
            queries=Path(queries) if queries else None,
            requester=requester,
        ),
    )
    return outcome.release_id, outcome.reused


@flow(name="shuyu-build-product", log_prints=True)
def build_flow(
    product: str,
    queries: str | None = None,
    requester: str | None = None,
    snapshot_ids: dict[str, str] | None = None,
) -> tuple[str, bool]:
    """Build one data product release (or return the stored one) and publish an artifact."""
    release_id, reused = build_task(product, queries, requester, snapshot_ids)
    create_markdown_artifact(
        key=f"release-{product.replace('_', '-')}",
        markdown=(
            f"### {product}\n\nrelease `{release_id}` "
            f"({'stored release reused' if reused else 'new release'})\n"
        ),
        description=f"build of {product}",
    )
    return release_id, reused
