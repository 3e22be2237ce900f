from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from quality.workdays import today_cn
from shuyu_core import snapshots
from shuyu_core.home import Home
from synthetic_data.generate import SyntheticFrames, generate_frames_detailed


@pytest.fixture(scope="session")
def as_of() -> dt.date:
    return today_cn()


@pytest.fixture(scope="session")
def synth(as_of: dt.date) -> SyntheticFrames:
    """Small linked datasets with known defects (6% of rows, every kind present)."""
    return generate_frames_detailed(persons=2000, seed=11, defect_rate=0.06, as_of=as_of)


def ingest_frame(home: Home, code: str, frame: pl.DataFrame) -> snapshots.Manifest:
    """Ingest ``frame`` the way production does (parquet export → pipelines.ingest)."""
    from pipelines.ingest import ingest_path

    path = Path(home.tmp) / f"{code}-{snapshots.new_snapshot_id()}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return ingest_path(home, code, path)


@pytest.fixture()
def ingest(home: Home) -> Callable[[str, pl.DataFrame], snapshots.Manifest]:
    """``ingest(code, frame)`` → manifest, in the test's home."""

    def _ingest(code: str, frame: pl.DataFrame) -> snapshots.Manifest:
        return ingest_frame(home, code, frame)

    return _ingest
