"""Immutable ingested snapshots under ``raw/<CODE>/<snapshot-id>/``.

A snapshot directory holds ``part-*.parquet`` files and ``manifest.json``. It appears by an
atomic rename, so a directory that exists is complete.

Every read goes through :func:`scan` (or :func:`verify` first), which recomputes the SM3 of the
parts (streamed, 1 MiB chunks) and compares it with the manifest before any row is used: a
part overwritten after ingest raises ``IntegrityError`` (exit 8). A verification is cached
for the life of the process per (snapshot, each part's size and mtime), so the several scans
of one build hash each part once; nothing is cached across processes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from shuyu_core import ids
from shuyu_core.errors import IntegrityError, NotFoundError
from shuyu_core.hashing import sm3_files
from shuyu_core.home import Home

MANIFEST = "manifest.json"


class Partitioning(BaseModel):
    """How the parts split the rows: by the hash of the privacy unit (``scaleout.partitioning``).

    All rows of one unit are in one part, and part *i* of two snapshots with the same ``count``
    and ``scheme`` holds the same units."""

    by: str
    count: int
    scheme: str


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
    # None: one unpartitioned part (every snapshot written before partitioning existed).
    partitioning: Partitioning | None = None
    # Set by `shuyu pull` from a database source: the largest watermark value taken (ISO text).
    watermark: str | None = None

    @property
    def age_days(self) -> float:
        now = dt.datetime.now(dt.UTC)
        return (now - self.ingested_at).total_seconds() / 86400


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    """Time-ordered id: lexical order is ingestion order."""
    t = now or dt.datetime.now(dt.UTC)
    return t.strftime("%Y%m%dT%H%M%S") + f"{t.microsecond:06d}Z"


def snapshot_dir(home: Home, code: str, snapshot_id: str) -> Path:
    """``raw/<code>/<snapshot_id>``; both ids validated, the path kept inside ``raw/``."""
    ids.resource_code(code)
    ids.snapshot_id(snapshot_id)
    return ids.within(home.raw, f"{code}/{snapshot_id}")


def part_paths(home: Home, m: Manifest) -> list[Path]:
    """The manifest's parts, each a plain name inside the snapshot directory."""
    base = snapshot_dir(home, m.resource, m.snapshot_id)
    return [ids.within(base, f) for f in m.files]


# (resource, snapshot, sm3) -> ((part, size, mtime_ns), ...) of the parts as last verified.
_VERIFIED: dict[tuple[str, str, str], tuple[tuple[str, int, int], ...]] = {}


def _stat_key(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def verify(home: Home, m: Manifest) -> None:
    """Recompute the SM3 of ``m``'s parts and compare with the manifest; else IntegrityError.

    Cached per process while every part keeps its size and mtime (see the module doc).
    """
    if not m.sm3:
        raise IntegrityError(
            f"snapshot {m.snapshot_id} of {m.resource} has no SM3 in its manifest",
            hint=f"re-ingest {m.resource} ('shuyu ingest {m.resource} --from PATH')",
        )
    paths = part_paths(home, m)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise IntegrityError(
            f"snapshot {m.snapshot_id} of {m.resource} lost part(s) {', '.join(missing)}",
            hint=f"restore raw/{m.resource}/{m.snapshot_id}/ from backup or re-ingest",
        )
    key = (m.resource, m.snapshot_id, m.sm3)
    stat = _stat_key(paths)
    if _VERIFIED.get(key) == stat:
        return
    actual = sm3_files(paths)
    if actual != m.sm3:
        _VERIFIED.pop(key, None)
        raise IntegrityError(
            f"snapshot {m.snapshot_id} of {m.resource}: its parts' SM3 {actual[:16]}… differs "
            f"from the manifest's {m.sm3[:16]}… (changed after ingest)",
            hint=f"restore raw/{m.resource}/{m.snapshot_id}/ from backup or re-ingest; "
            "nothing was built from it",
        )
    # Re-stat after hashing: a part rewritten during the hash is not cached as verified.
    if _stat_key(paths) == stat:
        _VERIFIED[key] = stat


def read_manifest(path: Path) -> Manifest:
    m = Manifest.model_validate_json((path / MANIFEST).read_text(encoding="utf-8"))
    # A manifest copied into another snapshot's directory must not vouch for that one.
    if m.snapshot_id != path.name or m.resource != path.parent.name:
        raise IntegrityError(
            f"raw/{path.parent.name}/{path.name}/ holds the manifest of "
            f"{m.resource}/{m.snapshot_id}",
            hint="a snapshot directory is made only by 'shuyu ingest'; remove the copy",
        )
    return m


def list_snapshots(home: Home, code: str) -> list[Manifest]:
    base = home.raw / code
    if not base.is_dir():
        return []
    ids.resource_code(code)
    dirs = sorted(
        p
        for p in base.iterdir()
        if p.is_dir() and ids.is_valid("snapshot", p.name) and (p / MANIFEST).exists()
    )
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
    home: Home,
    code: str,
    snapshot_id: str | None = None,
    columns: list[str] | None = None,
    check: bool = True,
) -> pl.LazyFrame:
    """A lazy scan of a verified snapshot, projected to ``columns`` when given (minimal
    necessary). The parts are checked against the manifest's SM3 first (:func:`verify`);
    ``check=False`` only for a caller that verifies them concurrently and uses nothing it read
    before that check passed (the build engine)."""
    m = get(home, code, snapshot_id)
    if check:
        verify(home, m)
    lf = pl.scan_parquet([str(p) for p in part_paths(home, m)])
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
