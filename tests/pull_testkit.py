"""A catalog whose SCZTDJ declares a source, and SCZTDJ rows to put into that source."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest

from catalogs.catalog import PACKAGED_RESOURCES


def catalog_with_source(tmp_path: Path, mp: pytest.MonkeyPatch, source_yaml: str) -> Path:
    """Copy the shipped catalog, give SCZTDJ the ``source:`` block, point SHUYU_CATALOG at it."""
    root = tmp_path / "catalog"
    shutil.copytree(PACKAGED_RESOURCES, root)
    path = root / "SCZTDJ.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("\nfields:\n", "\n" + source_yaml.strip() + "\nfields:\n", 1)
    path.write_text(text, encoding="utf-8")
    mp.setenv("SHUYU_CATALOG", str(root))
    return root


def scztdj_rows(n: int = 600) -> pl.DataFrame:
    from synthetic_data.generate import generate_frames

    frames, _ = generate_frames(persons=n, seed=7, defect_rate=0.0, as_of=dt.date(2026, 1, 15))
    return frames["SCZTDJ"]
