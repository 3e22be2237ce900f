"""The scaled quality flow on Prefect's DaskTaskRunner (a LocalCluster of 2 workers) gives
the counts of the local backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from products_testkit import AS_OF, frames

from pipelines.flows_scale import run_scaled_quality
from pipelines.ingest import ingest_path
from scaleout import driver
from scaleout.backends import LocalBackend, task_runner
from shuyu_core.home import Home

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_task_runner_choice() -> None:
    from prefect_dask import DaskTaskRunner

    assert task_runner("local") is None
    assert isinstance(task_runner("local:2"), DaskTaskRunner)
    assert isinstance(task_runner("tcp://127.0.0.1:8786"), DaskTaskRunner)


def test_scaled_quality_flow_on_dask_task_runner(
    prefect_server: None, home: Home, tmp_path: Path
) -> None:
    src = tmp_path / "RKJBXX.parquet"
    frames(500)["RKJBXX"].write_parquet(src)
    ingest_path(home, "RKJBXX", src, partitions=3)
    local = driver.quality_counts_of(home, "RKJBXX", LocalBackend(), as_of=AS_OF)
    out = run_scaled_quality("RKJBXX", "local:2", as_of=AS_OF.isoformat())
    assert out == local
    assert out["rows"] == frames(500)["RKJBXX"].height


def test_build_flow_on_dask_task_runner(prefect_server: None, home: Home, tmp_path: Path) -> None:
    """The build flow on DaskTaskRunner (a LocalCluster of 2): each co-partition's jobs are
    task runs of the flow, the release records the dask backend, one charge, one draw."""
    from prefect.client.orchestration import get_client

    from pipelines.flows_products import run_build
    from privacy.dp import ledger
    from products import release as rel

    for code in ("RKJBXX", "SBCBJF"):
        src = tmp_path / f"{code}.parquet"
        frames(500)[code].write_parquet(src)
        ingest_path(home, code, src, partitions=3)
    release_id, reused = run_build("si_enrolment_report", "local:2")
    assert not reused
    m = rel.load(home, release_id)
    assert m.execution is not None
    assert (m.execution.backend, m.execution.partitions, m.execution.ran_on) == (
        "dask",
        3,
        "workers",
    )
    assert [(e.state, e.draws) for e in ledger.entries_for_release(home, release_id)] == [
        ("stored", 1)
    ] * 2
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    only_builds = FlowFilter(name=FlowFilterName(any_=["shuyu-build-product"]))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_filter=only_builds)
    # per co-partition: its join match counts (before the charge) and its bounding
    assert sum(1 for r in runs if r.name.startswith("partition")) == 2 * 3
