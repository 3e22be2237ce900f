"""The dask backend against the local one, on a real loopback cluster (a scheduler and two
worker processes): quality counts, desensitized outputs, bounded aggregates before noise and
the release's mechanism identical; a worker killed mid-task corrupts nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from cluster_testkit import dask_cluster
from products_testkit import AS_OF

from catalogs.catalog import Catalog
from pipelines.ingest import ingest_path
from products import engine, specs
from products.language.builder import bounded_frames, measure
from products.language.compile import UNIT_COL
from quality.engine import check_snapshot
from scaleout import driver
from scaleout.backends import DaskBackend, LocalBackend, open_backend
from shuyu_core import keys, snapshots
from shuyu_core.home import Home
from transforms.apply import desensitize_resource

pytestmark = pytest.mark.slow
PARTS = 4
CODES = ["RKJBXX", "SBCBJF", "SCZTDJ"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dask_cluster(tmp_path_factory.mktemp("dask-logs")) as address:
        yield address


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    from synthetic_data.generate import generate_frames

    out, _ = generate_frames(persons=1500, seed=11, defect_rate=0.03, as_of=AS_OF)
    return out


@pytest.fixture()
def dask_backend(cluster: str) -> Iterator[DaskBackend]:
    with open_backend(cluster) as b:
        assert isinstance(b, DaskBackend)
        yield b


@pytest.fixture()
def parted(home: Home, tmp_path: Path, data: dict[str, pl.DataFrame]) -> Home:
    for code in CODES:
        src = tmp_path / f"{code}.parquet"
        data[code].write_parquet(src)
        m = ingest_path(home, code, src, partitions=PARTS)
        assert m.partitioning is not None and m.partitioning.count == PARTS
    keys.init_key(home, keys.PSEUDONYM)
    keys.init_key(home, keys.ENCRYPTION)
    return home


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns, nulls_last=True)


def test_tasks_really_run_on_the_workers(dask_backend: DaskBackend) -> None:
    import os

    pids = set(dask_backend.map(lambda _i: os.getpid(), list(range(8))))
    assert os.getpid() not in pids and len(pids) >= 1


def test_quality_counts_identical(parted: Home, dask_backend: DaskBackend) -> None:
    for code in ("RKJBXX", "SBCBJF"):
        local = driver.quality_counts_of(parted, code, LocalBackend(), as_of=AS_OF)
        dist = driver.quality_counts_of(parted, code, dask_backend, as_of=AS_OF)
        assert dist == local
        whole = check_snapshot(parted, Catalog.load().get(code), as_of=AS_OF, samples=False)
        assert dist["rows"] == whole.rows
        by_rule = {r.rule: (r.failed, r.total) for r in whole.rules}
        for rule, counts in dist["row_rules"].items():
            assert by_rule[rule] == counts, rule
        assert any(f for f, _t in dist["row_rules"].values()), "the data must have defects"
        # repeated keys over the whole snapshot, across parts, equal the single-process check
        assert dist["agg_rules"], code
        for rule, counts in dist["agg_rules"].items():
            assert by_rule[rule] == counts, rule
    assert not list(parted.tmp.glob("scale-keys-*")), "the hash shuffle leaves nothing behind"


def test_desensitized_outputs_identical(
    parted: Home, dask_backend: DaskBackend, tmp_path: Path
) -> None:
    code = "RKJBXX"
    reference = pl.read_parquet(desensitize_resource(parted, code) / "*.parquet")
    files = driver.desensitize(parted, code, dask_backend, tmp_path / "dask-out")
    local_files = driver.desensitize(parted, code, LocalBackend(), tmp_path / "local-out")
    assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(PARTS)]
    dist = pl.read_parquet(files)
    assert dist.equals(pl.read_parquet(local_files))  # same parts, same order
    assert dist.columns == reference.columns
    assert _sorted(dist).equals(_sorted(reference))
    # Pseudonymized, not copied: no raw resident ID number survives.
    raw = set(snapshots.scan(parted, code).collect()["公民身份号码"].to_list())
    assert not raw & set(dist["公民身份号码"].to_list())


def _ctx(home: Home, name: str) -> engine.BuildContext:
    spec = specs.get("si_enrolment_report")
    inputs = {i.resource: snapshots.latest(home, i.resource) for i in spec.inputs}
    return engine.BuildContext(home, spec, Catalog.load(), inputs, name, engine.BuildOptions(), [])


def _collected(frames: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    return {name: _sorted(lf.collect()) for name, lf in frames.items()}


def test_bounded_aggregates_identical_before_noise(parted: Home, dask_backend: DaskBackend) -> None:
    """Every table's per-unit bounded cells, what OpenDP measures, are the same rows."""
    local = _collected(bounded_frames(_ctx(parted, "scale-local")))
    dist = _collected(driver.report_bounded_frames(_ctx(parted, "scale-dask"), dask_backend))
    assert local.keys() == dist.keys() and local
    for name, frame in local.items():
        assert UNIT_COL not in dist[name].columns
        assert dist[name].height == frame.height > 0, name
        assert dist[name].equals(frame), name


def test_release_mechanism_identical(parted: Home, dask_backend: DaskBackend) -> None:
    """OpenDP draws its noise from the OS's CSPRNG and takes no seed, so the fixed-seed
    comparison is of everything the draw depends on: the same bounded input (above), and the
    same mechanism, noise scales, ρ split and accuracy in the draw's metadata."""
    ctx = _ctx(parted, "scale-rel-local")
    local = measure(ctx, bounded_frames(ctx))
    dist = driver.report_draw(_ctx(parted, "scale-rel-dask"), dask_backend)
    assert dist.meta == local.meta
    for name, table in local.tables.items():
        other = dist.tables[name]
        assert other.columns == table.columns and other.height == table.height
        by = next(t for t in ctx.spec.tables if t.name == name).by
        assert other.select(by).equals(table.select(by))


def test_inputs_not_co_partitioned_are_refused(
    home: Home, tmp_path: Path, data: dict[str, pl.DataFrame], dask_backend: DaskBackend
) -> None:
    from shuyu_core.errors import ValidationError

    for code, n in (("RKJBXX", 2), ("SBCBJF", 3)):
        src = tmp_path / f"{code}.parquet"
        data[code].write_parquet(src)
        ingest_path(home, code, src, partitions=n)
    with pytest.raises(ValidationError, match="not co-partitioned"):
        driver.report_bounded_frames(_ctx(home, "mixed"), dask_backend)


def test_worker_killed_mid_task_corrupts_nothing(
    parted: Home, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    once = tmp_path / "fault-fired"
    env = {"SHUYU_FAULT": "scaleout.part_staged", "SHUYU_FAULT_ONCE": str(once)}
    ctx = _ctx(parted, "scale-kill")
    local = _collected(bounded_frames(_ctx(parted, "scale-kill-ref")))
    manifests = {c: snapshots.latest(parted, c) for c in CODES}
    with (
        dask_cluster(tmp_path_factory.mktemp("dask-kill-logs"), env=env) as address,
        open_backend(address) as backend,
    ):
        dist = _collected(driver.report_bounded_frames(ctx, backend))
        out = tmp_path / "desens"
        files = driver.desensitize(parted, "RKJBXX", backend, out)
    assert once.exists(), "no worker was killed"
    assert dist.keys() == local.keys()
    for name, frame in local.items():
        assert dist[name].equals(frame), name
        parts_dir = ctx.workdir / f"bounded-parts-{name}"
        finals = sorted(p.name for p in parts_dir.glob("bounded-*.parquet"))
        assert finals == [f"bounded-{i:05d}.parquet" for i in range(PARTS)]
    assert pl.read_parquet(files).height == manifests["RKJBXX"].rows
    # The snapshots are untouched: each still verifies against its manifest and record.
    for code, m in manifests.items():
        snapshots._VERIFIED.clear()
        snapshots.verify(parted, m)
        assert snapshots.latest(parted, code).snapshot_id == m.snapshot_id


def _ybjs_with_cross_part_duplicates(
    home: Home, tmp_path: Path, data: dict[str, pl.DataFrame]
) -> None:
    """YBJS partitioned on the person, with settlement numbers (its primary key) copied onto
    other persons' rows: the copies land in other parts than the originals."""
    from scaleout.partitioning import part_of

    ybjs = data["YBJS"]
    n = ybjs.height
    donors = ybjs["结算单号"].head(40)
    copied = ybjs.slice(n - 40, 40).with_columns(pl.Series("结算单号", donors.to_list()))
    frame = pl.concat([ybjs.slice(0, n - 40), copied])
    src = tmp_path / "YBJS.parquet"
    frame.write_parquet(src)
    ingest_path(home, "YBJS", src, partitions=PARTS)
    part = frame.with_columns(pl.Series("p", part_of(frame["公民身份号码"].to_arrow(), PARTS)))
    spread = part.group_by("结算单号").agg(pl.col("p").n_unique()).filter(pl.col("p") > 1)
    assert spread.height >= 10, "the test needs keys repeated across parts"


@pytest.mark.parametrize("where", ["local", "dask"])
def test_repeated_keys_across_parts_counted_exactly(
    home: Home,
    tmp_path: Path,
    data: dict[str, pl.DataFrame],
    where: str,
    request: pytest.FixtureRequest,
) -> None:
    _ybjs_with_cross_part_duplicates(home, tmp_path, data)
    backend = LocalBackend() if where == "local" else request.getfixturevalue("dask_backend")
    dist = driver.quality_counts_of(home, "YBJS", backend, as_of=AS_OF)
    whole = check_snapshot(home, Catalog.load().get("YBJS"), as_of=AS_OF, samples=False)
    by_rule = {r.rule: (r.failed, r.total) for r in whole.rules}
    assert dist["agg_rules"] and dist["rows"] == whole.rows
    for rule, counts in dist["agg_rules"].items():
        assert by_rule[rule] == counts, rule
    assert max(f for f, _t in dist["agg_rules"].values()) >= 40
    assert not list(home.tmp.glob("scale-keys-*"))


def test_only_keys_off_the_partitioning_field_are_shuffled(
    home: Home, tmp_path: Path, data: dict[str, pl.DataFrame]
) -> None:
    """A key that includes the privacy unit (RKJBXX's ID number, every whole record) repeats
    within a part only: counted part by part, no hash shuffle. YBJS's settlement number is
    shuffled; its whole-record rule is not."""
    from scaleout import jobs

    class Recording(LocalBackend):
        def __init__(self) -> None:
            self.calls: list[tuple[str, object]] = []

        def map(self, fn, items):  # type: ignore[no-untyped-def]
            self.calls.extend((fn.__name__, x) for x in items)
            return super().map(fn, items)

    _ybjs_with_cross_part_duplicates(home, tmp_path, data)
    src = tmp_path / "RKJBXX.parquet"
    data["RKJBXX"].write_parquet(src)
    ingest_path(home, "RKJBXX", src, partitions=PARTS)
    for code, shuffled in (("RKJBXX", set()), ("YBJS", {"unique"})):
        backend = Recording()
        out = driver.quality_counts_of(home, code, backend, as_of=AS_OF)
        whole = check_snapshot(home, Catalog.load().get(code), as_of=AS_OF, samples=False)
        by_rule = {r.rule: (r.failed, r.total) for r in whole.rules}
        assert all(by_rule[k] == v for k, v in out["agg_rules"].items()), code
        assert "duplicate_record" in out["agg_rules"], code
        _plain, rules = jobs.agg_rules_of(
            driver.verified_parts(home, snapshots.latest(home, code))[0], AS_OF
        )
        hashed = {
            rules[j].spec.kind
            for name, job in backend.calls
            if name == "key_hash_buckets"
            for j in job.rules  # type: ignore[attr-defined]
        }
        assert hashed == shuffled, code
