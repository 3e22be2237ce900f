"""Which Prefect task runner each flow gets, and how a flow on DaskTaskRunner routes the
per-partition jobs (no Prefect server: the routing is ``scaleout.backends.using``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pytest
from products_testkit import frames

from pipelines.flows_products import build_flow
from pipelines.flows_scale import on_cluster, scaled_desensitize_flow, scaled_quality_flow
from pipelines.ingest import ingest_path
from products import engine
from scaleout import backends, driver
from scaleout.backends import LocalBackend
from shuyu_core import keys
from shuyu_core.home import Home

T = TypeVar("T")
R = TypeVar("R")
FLOWS = [build_flow, scaled_quality_flow, scaled_desensitize_flow]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_flow_gets_dask_task_runner_when_a_cluster_is_configured(
    flow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_dask import DaskTaskRunner

    monkeypatch.delenv("SHUYU_CLUSTER", raising=False)
    monkeypatch.delenv("SHUYU_DASK_SCHEDULER", raising=False)
    assert on_cluster(flow) is flow
    assert on_cluster(flow, "local") is flow
    local2 = on_cluster(flow, "local:2").task_runner
    assert isinstance(local2, DaskTaskRunner) and local2.cluster_kwargs["n_workers"] == 2
    monkeypatch.setenv("SHUYU_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    remote = on_cluster(flow).task_runner
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"


class Recording:
    """A backend that runs in this process and records which jobs it was given."""

    name = "dask"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        self.calls.append((fn.__name__, len(items)))
        return LocalBackend().map(fn, items)


@pytest.fixture()
def parted(home: Home, tmp_path: Path) -> Home:
    for code in ("RKJBXX", "SBCBJF"):
        src = tmp_path / f"{code}.parquet"
        frames(600)[code].write_parquet(src)
        ingest_path(home, code, src, partitions=3)
    keys.init_key(home, keys.PSEUDONYM)
    return home


def test_inside_a_dask_flow_the_jobs_go_to_the_flows_tasks(parted: Home, tmp_path: Path) -> None:
    """With a flow's backend in place (what ``partitions_as_tasks`` sets on DaskTaskRunner)
    the build's co-partitions and the desensitization's parts go to it, and no client is
    opened for the configured scheduler (nothing listens there)."""
    rec = Recording()
    with backends.using(rec):
        out = engine.build(
            parted, "si_enrolment_report", engine.BuildOptions(cluster="tcp://127.0.0.1:9")
        )
        files = driver.desensitize(parted, "RKJBXX", rec, tmp_path / "out")
        with backends.open_backend("tcp://127.0.0.1:9") as b:
            assert b is rec
    assert ("bounded_tables", 3) in rec.calls and ("match_counts_part", 3) in rec.calls
    assert ("pii_sample_part", 3) in rec.calls and ("desensitize_part", 3) in rec.calls
    assert out.manifest.execution is not None and out.manifest.execution.partitions == 3
    assert pl.read_parquet(files).height == frames(600)["RKJBXX"].height
    with backends.open_backend(None) as b:
        assert isinstance(b, LocalBackend)  # the override ends with the block
