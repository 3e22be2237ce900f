"""Prefect flows for ingestion: thin wrappers that add retries and an artifact.

The logic lives in ``pipelines.ingest``; these only orchestrate. The CLI calls the core
directly unless ``--prefect`` is given, so commands do not wait for a Prefect API server.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipelines.flow_support import retry_unless_user_error
from pipelines.ingest import ingest_path
from shuyu_core.home import Home
from shuyu_core.snapshots import Manifest


@task(
    name="ingest-snapshot",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_user_error,
)
def ingest_task(code: str, source: str, allow_empty: bool = False) -> Manifest:
    return ingest_path(Home.from_env(), code, Path(source), allow_empty=allow_empty)


@flow(name="shuyu-ingest", log_prints=True)
def ingest_flow(code: str, source: str, allow_empty: bool = False) -> Manifest:
    """Ingest one export of a catalogued resource into raw/ as an immutable snapshot."""
    manifest = ingest_task(code, source, allow_empty)
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
    return manifest
