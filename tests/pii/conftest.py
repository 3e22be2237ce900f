from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from shuyu_core import keys
from shuyu_core.home import Home

AS_OF = dt.date(2025, 6, 30)


@pytest.fixture(scope="session")
def small_frames() -> dict[str, pl.DataFrame]:
    from synthetic_data.generate import generate_frames

    frames, _ = generate_frames(persons=400, seed=7, defect_rate=0.0, as_of=AS_OF)
    return frames


@pytest.fixture()
def ingested(home: Home, tmp_path: Path, small_frames: dict[str, pl.DataFrame]) -> Home:
    """The four demo resources ingested into ``home`` (small, defect-free)."""
    from pipelines.ingest import ingest_path

    for code, frame in small_frames.items():
        src = tmp_path / f"{code}.parquet"
        frame.write_parquet(src)
        ingest_path(home, code, src)
    return home


@pytest.fixture()
def with_keys(ingested: Home) -> Home:
    keys.init_key(ingested, keys.PSEUDONYM)
    keys.init_key(ingested, keys.ENCRYPTION)
    return ingested
