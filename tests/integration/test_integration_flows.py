"""Real Prefect flow runs against a temporary Prefect server (one per test session).

Logic is tested elsewhere without Prefect; these check that the thin flow wrappers run,
that a user error is not retried into a second attempt, and that a product flow run twice
returns the one stored release.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from governance import audit
from shuyu_core import snapshots
from shuyu_core.home import Home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    # The ephemeral server needs ~25 s on a 2-core machine; be generous for a busy CI runner.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthetic_data.generate import generate_frames

    frames, _ = generate_frames(persons=2000, seed=11, defect_rate=0.0, as_of=dt.date(2026, 1, 15))
    out = tmp_path_factory.mktemp("sources")
    for code, frame in frames.items():
        frame.write_parquet(out / f"{code}.parquet")
    return out


def _audit_actions(home: Home) -> list[tuple[str, str, str]]:
    entries = audit.tail(home, 10_000)
    return [(e["action"], e["object"], e["outcome"]) for e in entries]


def test_ingest_flow_writes_one_snapshot(
    prefect_server: None, home: Home, small_sources: Path
) -> None:
    from pipelines.flows import ingest_flow

    state = ingest_flow("SCZTDJ", str(small_sources / "SCZTDJ.parquet"), return_state=True)
    assert state.is_completed()
    manifest = state.result()
    assert manifest.rows == pl.read_parquet(small_sources / "SCZTDJ.parquet").height
    assert [m.snapshot_id for m in snapshots.list_snapshots(home, "SCZTDJ")] == [
        manifest.snapshot_id
    ]


def test_ingest_flow_does_not_retry_a_user_error(
    prefect_server: None, home: Home, tmp_path: Path
) -> None:
    from pipelines.flows import ingest_flow

    bad = tmp_path / "SCZTDJ.parquet"
    pl.DataFrame({"not_a_catalog_field": [1, 2]}).write_parquet(bad)
    state = ingest_flow("SCZTDJ", str(bad), return_state=True)
    assert state.is_failed()
    assert snapshots.list_snapshots(home, "SCZTDJ") == []
    refusals = [a for a in _audit_actions(home) if a[0] == "ingest" and a[2] != "ok"]
    # One attempt, one refusal: a schema mismatch is not retried by the task's condition.
    assert len(refusals) == 1


def test_build_flow_twice_returns_the_stored_release(
    prefect_server: None, home: Home, small_sources: Path
) -> None:
    from pipelines.flows_products import build_flow
    from pipelines.ingest import ingest_path

    ingest_path(home, "SCZTDJ", small_sources / "SCZTDJ.parquet")
    first_id, first_reused = build_flow("business_vitality_index")
    second_id, second_reused = build_flow("business_vitality_index")
    assert (first_reused, second_reused) == (False, True)
    assert first_id == second_id
    assert (home.releases / first_id).is_dir()

    import httpx
    from prefect.settings import PREFECT_API_URL

    from pipelines.flows_assessment import artifact_key, assess_flow

    result = assess_flow(first_id)
    assert result["verdict"] in ("pass", "rectify", "fail")
    # The REST API directly: the 3.8 client sends null for omitted run filters (422), and
    # empty run filters join away flow-level artifacts.
    response = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter",
        json={
            "artifacts": {"key": {"any_": [artifact_key(first_id)]}},
            "sort": "CREATED_DESC",
            "limit": 5,
            "offset": 0,
        },
        timeout=30,
    )
    response.raise_for_status()
    found = response.json()
    assert len(found) == 1 and found[0]["type"] == "markdown"
    assert first_id in found[0]["data"] and result["verdict"] in found[0]["data"]
