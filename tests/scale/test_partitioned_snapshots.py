"""Snapshots hash-partitioned on the privacy unit: every unit in one part, co-partitioned
resources, recorded in the manifest, verified like any snapshot; old snapshots keep working."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from products_testkit import frames

from pipelines.ingest import ingest_path
from scaleout import partitioning
from shuyu_core import snapshots
from shuyu_core.errors import IntegrityError, ValidationError
from shuyu_core.home import Home


def test_hash_is_stable_and_independent_of_batching() -> None:
    values = pa.array(["110105194912310021", "", None, "中文 unit", "x" * 300, "7"])
    # Fixed expected values: a change of the scheme must be a new HASH_SCHEME, not silent.
    assert partitioning.part_of(values, 16).tolist() == [
        int(h % 16) for h in partitioning.unit_hash(values).tolist()
    ]
    whole = partitioning.unit_hash(values)
    sliced = partitioning.unit_hash(values.slice(3, 3))
    assert sliced.tolist() == whole[3:].tolist()
    chunked = partitioning.unit_hash(pa.chunked_array([values.slice(0, 2), values.slice(2)]))
    assert chunked.tolist() == whole.tolist()
    assert whole[0] == partitioning.unit_hash(pa.array(["110105194912310021"]))[0]
    assert whole[2] == 0  # null
    assert int(partitioning.unit_hash(pa.array(["abc"]))[0]) == 14862187217710310967


def test_hash_spreads_units_evenly() -> None:
    ids = pa.array([f"2108{i:014d}" for i in range(80_000)])
    counts = pl.Series(partitioning.part_of(ids, 8)).value_counts()["count"]
    assert counts.min() > 9_000 and counts.max() < 11_000


def test_ingest_writes_unit_partitions(home: Home, tmp_path) -> None:
    data = frames(600)
    src = tmp_path / "SBCBJF.parquet"
    data["SBCBJF"].write_parquet(src)
    m = ingest_path(home, "SBCBJF", src, partitions=4)
    assert m.partitioning == snapshots.Partitioning(
        by="公民身份号码", count=4, scheme=partitioning.HASH_SCHEME
    )
    assert m.files == [f"part-{i:05d}.parquet" for i in range(4)]
    paths = snapshots.part_paths(home, m)
    per_part = [pl.read_parquet(p) for p in paths]
    assert sum(f.height for f in per_part) == m.rows == data["SBCBJF"].height
    seen: set[str] = set()
    for i, part in enumerate(per_part):
        units = set(part["公民身份号码"].drop_nulls().to_list())
        assert not units & seen, "a unit appears in two parts"
        seen |= units
        want = partitioning.part_of(part["公民身份号码"].to_arrow(), 4)
        assert (want == i).all()
    # The same rows as an unpartitioned ingest, schema included.
    whole = snapshots.scan(home, "SBCBJF", m.snapshot_id).collect()
    single = ingest_path(home, "SBCBJF", src)
    assert single.partitioning is None and single.files == ["part-00000.parquet"]
    ref = snapshots.scan(home, "SBCBJF", single.snapshot_id).collect()
    assert whole.schema == ref.schema
    key = list(ref.columns)
    assert whole.sort(key).equals(ref.sort(key))


def test_co_partitioned_resources_join_part_by_part(home: Home, tmp_path) -> None:
    data = frames(600)
    ms = {}
    for code in ("RKJBXX", "SBCBJF"):
        src = tmp_path / f"{code}.parquet"
        data[code].write_parquet(src)
        ms[code] = ingest_path(home, code, src, partitions=3)
    left = snapshots.part_paths(home, ms["RKJBXX"])
    right = snapshots.part_paths(home, ms["SBCBJF"])
    unit = "公民身份号码"
    by_part = sum(
        pl.read_parquet(a).select(unit).join(pl.read_parquet(b).select(unit), on=unit).height
        for a, b in zip(left, right, strict=True)
    )
    whole = data["RKJBXX"].select(unit).join(data["SBCBJF"].select(unit), on=unit).height
    assert by_part == whole > 0


def test_partitioned_part_tampering_is_refused(home: Home, tmp_path) -> None:
    data = frames(300)
    src = tmp_path / "RKJBXX.parquet"
    data["RKJBXX"].write_parquet(src)
    m = ingest_path(home, "RKJBXX", src, partitions=2)
    victim = snapshots.part_paths(home, m)[1]
    pl.read_parquet(victim).head(1).write_parquet(victim)
    with pytest.raises(IntegrityError):
        snapshots.scan(home, "RKJBXX", m.snapshot_id)


@pytest.mark.parametrize("bad", ["0", "many", "5000"])
def test_bad_partition_count_refused_before_writing(
    home: Home, tmp_path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    data = frames(300)
    src = tmp_path / "RKJBXX.parquet"
    data["RKJBXX"].write_parquet(src)
    monkeypatch.setenv("SHUYU_PARTITIONS", bad)
    with pytest.raises(ValidationError, match="partition count"):
        ingest_path(home, "RKJBXX", src)
    assert not (home.raw / "RKJBXX").exists() or not any((home.raw / "RKJBXX").iterdir())


def test_old_manifest_without_partitioning_still_reads(home: Home, tmp_path) -> None:
    data = frames(300)
    src = tmp_path / "RKJBXX.parquet"
    data["RKJBXX"].write_parquet(src)
    m = ingest_path(home, "RKJBXX", src)
    path = snapshots.snapshot_dir(home, "RKJBXX", m.snapshot_id) / snapshots.MANIFEST
    doc = m.model_dump(mode="json")
    doc.pop("partitioning")
    import json

    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    again = snapshots.get(home, "RKJBXX", m.snapshot_id)
    assert again.partitioning is None
    assert snapshots.scan(home, "RKJBXX", m.snapshot_id).collect().height == m.rows
