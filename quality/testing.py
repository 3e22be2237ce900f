"""Support for quality tests and the benchmark: clean frames and hand-written snapshots.

``write_snapshot`` follows the ``shuyu_core.snapshots`` layout (``raw/<CODE>/<id>/`` with
``part-00000.parquet`` and ``manifest.json``, appearing by an atomic rename) but lets a test
choose ``ingested_at``, which real ingestion never does. ``clean_frame`` builds rows that pass
every rule of the shipped catalog, numpy-vectorized so the benchmark can make millions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import polars as pl

from catalogs.catalog import Catalog
from catalogs.models import Resource
from quality.validators import _ID_CHECK, _ID_WEIGHTS, _USCC_ALPHABET, _USCC_WEIGHTS
from shuyu_core import atomic, snapshots
from shuyu_core.hashing import sm3_files
from shuyu_core.home import Home

YINGKOU = ["210802", "210803", "210804", "210811", "210881", "210882"]


def _record_ingest(home: Home, manifest: snapshots.Manifest) -> None:
    """Record the snapshot's SM3 as ``shuyu ingest`` does: readers compare the manifest with
    this record (``governance.evidence.verify_snapshot``)."""
    from governance.audit import record

    record(
        home,
        "ingest",
        f"{manifest.resource}/{manifest.snapshot_id}",
        "ok",
        {"rows": manifest.rows, "sm3": manifest.sm3, "source": manifest.source_path},
    )


def write_snapshot(
    home: Home,
    resource: Resource,
    frame: pl.DataFrame | pl.LazyFrame,
    ingested_at: dt.datetime | None = None,
    catalog_version: str = "test",
    absent_fields: list[str] | None = None,
) -> snapshots.Manifest:
    home.ensure()
    when = ingested_at or dt.datetime.now(dt.UTC)
    # Ids sort by ingestion time; a test that back-dates a snapshot gets an older id.
    sid = snapshots.new_snapshot_id(when)
    lf = frame.lazy().select([pl.col(f.name).cast(f.polars_type) for f in resource.fields])
    final = snapshots.snapshot_dir(home, resource.code, sid)
    with atomic.staged_dir(final, staging_root=home.tmp) as stage:
        part = stage / "part-00000.parquet"
        lf.sink_parquet(part, engine="streaming")
        rows = pl.scan_parquet(part).select(pl.len()).collect().item()
        manifest = snapshots.Manifest(
            resource=resource.code,
            snapshot_id=sid,
            rows=rows,
            sm3=sm3_files([part]),
            files=[part.name],
            columns={f.name: f.type for f in resource.fields},
            source_path="(test)",
            source_format="parquet",
            ingested_at=when,
            catalog_version=catalog_version,
            absent_fields=absent_fields or [],
        )
        atomic.write_text(stage / snapshots.MANIFEST, snapshots.manifest_json(manifest))
    _record_ingest(home, manifest)
    return manifest


def write_snapshot_parts(
    home: Home,
    resource: Resource,
    parts: Iterable[pl.DataFrame],
    ingested_at: dt.datetime | None = None,
) -> snapshots.Manifest:
    """Like :func:`write_snapshot` for data that does not fit in memory: one parquet part
    per frame, each written and released before the next is built."""
    home.ensure()
    when = ingested_at or dt.datetime.now(dt.UTC)
    sid = snapshots.new_snapshot_id(when)
    final = snapshots.snapshot_dir(home, resource.code, sid)
    names: list[str] = []
    rows = 0
    with atomic.staged_dir(final, staging_root=home.tmp) as stage:
        for i, frame in enumerate(parts):
            name = f"part-{i:05d}.parquet"
            frame.select(
                [pl.col(f.name).cast(f.polars_type) for f in resource.fields]
            ).write_parquet(stage / name)
            names.append(name)
            rows += frame.height
        manifest = snapshots.Manifest(
            resource=resource.code,
            snapshot_id=sid,
            rows=rows,
            sm3=sm3_files([stage / n for n in names]),
            files=names,
            columns={f.name: f.type for f in resource.fields},
            source_path="(benchmark)",
            source_format="parquet",
            ingested_at=when,
            catalog_version="bench",
        )
        atomic.write_text(stage / snapshots.MANIFEST, snapshots.manifest_json(manifest))
    _record_ingest(home, manifest)
    return manifest


def resident_ids(
    n: int,
    rng: np.random.Generator,
    births: np.ndarray,
    male: np.ndarray,
    block: tuple[int, int] = (0, 1),
) -> list[str]:
    """Valid GB 11643 numbers for the given birth dates (numpy datetime64[D]) and sexes.

    ``block=(i, k)``: order codes of block i are ≡ i (mod k), so IDs of different blocks
    (e.g. the parts of a benchmark snapshot) never collide."""
    region = np.array(YINGKOU)[rng.integers(0, len(YINGKOU), n)]
    ymd = np.datetime_as_string(births, unit="D")
    ymd = np.char.replace(ymd, "-", "")
    # Order code: odd for men, even for women (GB 11643 digit 17); n distinct orders avoid
    # accidental duplicates within a region and day.
    index, count = block
    seq = (rng.integers(0, 500 // count, n) * count + index) * 2 + np.where(male, 1, 0)
    body = np.char.add(np.char.add(region, ymd), np.char.zfill(seq.astype(str), 3))
    digits = np.frombuffer("".join(body.tolist()).encode(), dtype=np.uint8).reshape(n, 17) - 48
    total = (digits * np.array(_ID_WEIGHTS)).sum(axis=1) % 11
    check = np.array(list(_ID_CHECK))[total]
    return np.char.add(body, check).tolist()


def usccs(n: int, rng: np.random.Generator) -> list[str]:
    alphabet = np.array(list(_USCC_ALPHABET))
    vals = np.empty((n, 17), dtype=np.int64)
    vals[:, 0] = 9
    vals[:, 1] = 1
    vals[:, 2:8] = rng.integers(0, 10, (n, 6))
    vals[:, 8:] = rng.integers(0, 31, (n, 9))
    check = (31 - (vals * np.array(_USCC_WEIGHTS)).sum(axis=1) % 31) % 31
    chars = np.concatenate([alphabet[vals], alphabet[check][:, None]], axis=1)
    return ["".join(r) for r in chars.tolist()] if n < 100_000 else _join_rows(chars)


def _join_rows(chars: np.ndarray) -> list[str]:
    flat = "".join(chars.ravel().tolist())
    w = chars.shape[1]
    return [flat[i : i + w] for i in range(0, len(flat), w)]


def clean_population(
    n: int, seed: int = 0, as_of: dt.date | None = None, block: tuple[int, int] = (0, 1)
) -> pl.DataFrame:
    """``n`` RKJBXX rows that pass every rule (unique valid IDs, consistent sex and birth)."""
    rng = np.random.default_rng(seed)
    day = as_of or dt.date.today()
    start = np.datetime64("1940-01-01")
    span = (np.datetime64(day) - start).astype(int) - 1
    births = start + rng.integers(0, span, n).astype("timedelta64[D]")
    male = rng.random(n) < 0.5
    ids = resident_ids(n, rng, births, male, block)
    frame = pl.DataFrame(
        {
            "公民身份号码": ids,
            "姓名": np.array(["张伟", "王芳", "李娜", "刘洋", "陈静"])[rng.integers(0, 5, n)],
            "性别": np.where(male, "男", "女"),
            "出生日期": births.astype("datetime64[D]"),
            "民族": np.array(["汉族", "满族", "回族"])[rng.integers(0, 3, n)],
            "户籍地址": "辽宁省营口市站前区某街道",
            "现住址": "辽宁省营口市站前区某街道",
            "联系电话": np.char.add("138", np.char.zfill(rng.integers(0, 10**8, n).astype(str), 8)),
            "户籍区划代码": np.array(YINGKOU)[rng.integers(0, len(YINGKOU), n)],
            "登记日期": np.datetime64(day) - rng.integers(1, 3000, n).astype("timedelta64[D]"),
            "更新日期": np.datetime64(day) - rng.integers(0, 1000, n).astype("timedelta64[D]"),
        }
    )
    # Random order codes can collide: keep each ID once so the clean frame is clean.
    return frame.unique("公民身份号码", keep="first", maintain_order=True)


def catalog_resource(code: str) -> Resource:
    return Catalog.load().get(code)
