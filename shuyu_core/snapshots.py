"""Immutable ingested snapshots under ``raw/<CODE>/<snapshot-id>/``.

A snapshot directory holds ``part-*.parquet`` files and ``manifest.json``. It appears by an
atomic rename, so a directory that exists is complete.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from shuyu_core.errors import NotFoundError
from shuyu_core.home import Home

MANIFEST = "manifest.json"


class Manifest(BaseModel):
    resource: str
    snapshot_id: str
    rows: int
    sm3: str
    files: list[str]
    columns: dict[str, str]
    absent_fields: list[str] = []
    source_path: str
    source_format: str
    source_encoding: str | None = None
    ingested_at: dt.datetime
    catalog_version: str
    actor: str | None = None

    @property
    def age_days(self) -> float:
        now = dt.datetime.now(dt.UTC)
        return (now - self.ingested_at).total_seconds() / 86400


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    """Time-ordered id: lexical order is ingestion order."""
    t = now or dt.datetime.now(dt.UTC)
    return t.strftime("%Y%m%dT%H%M%S") + f"{t.microsecond:06d}Z"


def snapshot_dir(home: Home, code: str, snapshot_id: str) -> Path:
    return home.raw / code / snapshot_id


def read_manifest(path: Path) -> Manifest:
    return Manifest.model_validate_json((path / MANIFEST).read_text(encoding="utf-8"))


def list_snapshots(home: Home, code: str) -> list[Manifest]:
    base = home.raw / code
    if not base.is_dir():
        return []
    dirs = sorted(p for p in base.iterdir() if p.is_dir() and (p / MANIFEST).exists())
    return [read_manifest(p) for p in dirs]


def latest(home: Home, code: str) -> Manifest:
    snaps = list_snapshots(home, code)
    if not snaps:
        raise NotFoundError(
            f"resource {code} has no snapshot in {home.raw}",
            hint=f"run 'shuyu ingest {code} --from PATH' first",
        )
    return snaps[-1]


def get(home: Home, code: str, snapshot_id: str | None = None) -> Manifest:
    if snapshot_id is None:
        return latest(home, code)
    path = snapshot_dir(home, code, snapshot_id)
    if not (path / MANIFEST).exists():
        raise NotFoundError(
            f"snapshot {snapshot_id} of {code} does not exist",
            hint=f"see 'shuyu catalog show {code}' for its snapshots",
        )
    return read_manifest(path)


def scan(
    home: Home, code: str, snapshot_id: str | None = None, columns: list[str] | None = None
) -> pl.LazyFrame:
    """A lazy scan of a snapshot, projected to ``columns`` when given (minimal necessary)."""
    m = get(home, code, snapshot_id)
    base = snapshot_dir(home, code, m.snapshot_id)
    lf = pl.scan_parquet([str(base / f) for f in m.files])
    if columns is not None:
        missing = [c for c in columns if c not in m.columns]
        if missing:
            raise NotFoundError(
                f"snapshot {m.snapshot_id} of {code} has no field(s) {', '.join(missing)}",
                hint="declare only fields the resource has",
            )
        lf = lf.select(columns)
    return lf


def manifest_json(m: Manifest) -> str:
    return json.dumps(m.model_dump(mode="json"), ensure_ascii=False, indent=2)
