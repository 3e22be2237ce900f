"""Helpers shared by the products tests (imported by conftest.py and the test files)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import polars as pl

from catalogs.product_models import ProductSpec
from pipelines.ingest import ingest_path
from products import specs
from shuyu_core.home import Home

AS_OF = dt.date(2026, 1, 15)


@functools.cache
def frames(persons: int = 3000, seed: int = 7) -> dict[str, pl.DataFrame]:
    from synthetic_data.generate import generate_frames

    out, _defects = generate_frames(persons=persons, seed=seed, defect_rate=0.0, as_of=AS_OF)
    return out


def ingest_frames(home: Home, data: dict[str, pl.DataFrame], codes: list[str]) -> None:
    src = home.root / "sources"
    src.mkdir(parents=True, exist_ok=True)
    for code in codes:
        path = src / f"{code}.parquet"
        data[code].write_parquet(path)
        ingest_path(home, code, path)


def with_changes(spec: ProductSpec, **changes: Any) -> ProductSpec:
    """A validated copy of ``spec`` with top-level fields replaced."""
    data = spec.model_dump(mode="json")
    data.update(changes)
    return specs.parse(data, "test")
