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


def _artifact(key: str) -> dict[str, object]:
    import httpx
    from prefect.settings import PREFECT_API_URL

    response = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1},
        timeout=30,
    )
    response.raise_for_status()
    (found,) = response.json()
    return found  # type: ignore[no-any-return]


def test_pipeline_pulls_checks_desensitizes_builds_and_links_each_report(
    prefect_server: None,
    home: Home,
    small_sources: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    from pull_testkit import catalog_with_source

    from pipelines.flows_assessment import artifact_key
    from pipelines.flows_pipeline import pipeline_flow, products_reading
    from shuyu_core import keys

    for name in (keys.PSEUDONYM, keys.ENCRYPTION):  # desensitization pseudonymizes
        keys.init_key(home, name)
    drop = tmp_path / "drop"
    drop.mkdir()
    catalog_with_source(tmp_path, monkeypatch, f"source: {{kind: file_drop, directory: {drop}}}")
    shutil.copy(small_sources / "SCZTDJ.parquet", drop / "2026-01-15.parquet")
    assert "business_vitality_index" in products_reading("SCZTDJ")

    out = pipeline_flow("SCZTDJ", products=["business_vitality_index"])
    (manifest,) = snapshots.list_snapshots(home, "SCZTDJ")
    assert out["snapshot"] == manifest.snapshot_id
    assert Path(out["desensitized"]["output"]).name.startswith(manifest.snapshot_id)
    assert Path(out["desensitized"]["output"]).is_relative_to(home.work)
    rel = out["releases"]["business_vitality_index"]
    assert rel["report_artifact"] == artifact_key(rel["release"])
    release_md = str(_artifact("release-business-vitality-index")["data"])
    assert rel["release"] in release_md and rel["report_artifact"] in release_md
    assert rel["verdict"] in release_md
    assert rel["release"] in str(_artifact(rel["report_artifact"])["data"])
    actions = [a[0] for a in _audit_actions(home)]
    chain = ["ingest", "pull", "quality.check", "desensitize", "product.build", "assessment.run"]
    firsts = [actions.index(a) for a in chain if a in actions]
    assert firsts == sorted(firsts), actions

    # Nothing new at the source: nothing is ingested or built again.
    again = pipeline_flow("SCZTDJ", products=["business_vitality_index"])
    assert again["snapshot"] is None and again["releases"] == {}
    assert len(snapshots.list_snapshots(home, "SCZTDJ")) == 1


def test_ingest_flow_from_a_source_that_is_down_retries_then_fails_in_one_line(
    prefect_server: None, home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pull_testkit import catalog_with_source

    from pipelines.flows import ingest_flow

    monkeypatch.setenv("QIANZHIKU_URI", f"sqlite:///{tmp_path / 'gone' / 'qianzhiku.db'}")
    catalog_with_source(
        tmp_path,
        monkeypatch,
        "source: {kind: database, uri_env: QIANZHIKU_URI, table: t, watermark: 更新日期}",
    )
    monkeypatch.setattr("pipelines.flow_support.time.sleep", lambda _s: None)
    state = ingest_flow("SCZTDJ", return_state=True)
    assert state.is_failed()
    assert state.message and "\n" not in state.message
    assert "SCZTDJ" in state.message and "after 3 attempts" in state.message
    attempts = [a for a in _audit_actions(home) if a[0] == "pull"]
    assert [a[2] for a in attempts] == ["error"] * 3
    assert snapshots.list_snapshots(home, "SCZTDJ") == []
