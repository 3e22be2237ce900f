"""The column PII scan and the verification index per partition on a real loopback cluster,
combined on the driver: identical to the whole-snapshot computation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_testkit import dask_cluster
from products_testkit import frames
from test_products_verification import _grant, _labelled_sample, _results, _write

from pipelines.ingest import ingest_path
from privacy.pii.scan import scan_frame
from products import engine, specs
from products.verification import index_frame
from scaleout import driver
from scaleout.backends import Backend, LocalBackend, open_backend
from shuyu_core import keys, snapshots
from shuyu_core.home import Home

pytestmark = pytest.mark.slow
PARTS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dask_cluster(tmp_path_factory.mktemp("dask-pii-logs")) as address:
        yield address


@pytest.fixture()
def parted(home: Home, tmp_path: Path) -> Home:
    for code in ("RKJBXX", "SCZTDJ"):
        src = tmp_path / f"{code}.parquet"
        frames()[code].write_parquet(src)
        ingest_path(home, code, src, partitions=PARTS)
    keys.init_key(home, keys.PSEUDONYM)
    return home


def _reports_equal(a: object, b: object) -> None:
    assert a.to_json() == b.to_json()  # type: ignore[attr-defined]
    assert [c.rates for c in a.columns] == [c.rates for c in b.columns]  # type: ignore[attr-defined]
    assert (a.sampled_rows, a.total_rows) == (b.sampled_rows, b.total_rows)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("sample", "seed"), [(40, 0), (40, 7), (5000, 0)])
def test_pii_scan_per_partition_equals_the_whole_snapshot(
    parted: Home, cluster: str, sample: int, seed: int
) -> None:
    """Evenly spaced rows (sample 40: every ~19th of 3 000 persons' rows, from the seed's
    offset), or every row (sample 5 000): the parts give the very rows of the whole scan."""
    for code in ("RKJBXX", "SCZTDJ"):
        m = snapshots.latest(parted, code)
        lf = snapshots.scan(parted, code)
        columns = lf.collect_schema().names()
        local = scan_frame(lf, sample=sample, seed=seed)
        assert any(c.entity for c in local.columns), code
        parts = driver.verified_parts(parted, m)
        backends: list[Backend] = [LocalBackend()]
        with open_backend(cluster) as dask:
            backends.append(dask)
            for backend in backends:
                dist = driver.pii_scan(parts, columns, backend, sample=sample, seed=seed)
                _reports_equal(dist, local)


def test_verification_index_per_partition_equals_the_whole_snapshot(
    parted: Home, cluster: str
) -> None:
    spec = specs.get("identity_verification")
    assert spec.verification is not None
    key = keys.load_key(parted, keys.PSEUDONYM)
    with open_backend(cluster) as backend:
        for check in spec.verification.checks:
            m = snapshots.latest(parted, check.resource)
            raw = snapshots.scan(parted, check.resource).collect()
            local = index_frame(raw, check, key).sort("key_token", "name_token")
            dist = driver.verification_index(parted, m, check, backend)
            assert local.height >= 300
            assert dist.sort("key_token", "name_token").equals(local), check.resource


def test_verification_build_on_the_cluster(parted: Home, cluster: str) -> None:
    """The build's indexes are built on the workers (no index file before), and its answers
    equal a local build's with the indexes built in this process."""
    from products_testkit import with_changes

    q, truth = _labelled_sample()
    _grant(parted, q["id_number"].to_list())
    spec = specs.get("identity_verification")
    assert not list((parted.work / "verification").glob("*.parquet"))
    out = engine.build(
        parted, spec, engine.BuildOptions(queries=_write(parted, q), cluster=cluster)
    )
    assert out.manifest.execution is not None
    assert (out.manifest.execution.backend, out.manifest.execution.ran_on) == ("dask", "workers")
    dist = _results(parted, out.release_id)
    assert dist["result"].to_list() == truth
    assert len(list((parted.work / "verification").glob("*.parquet"))) == len(
        spec.verification.checks if spec.verification else []
    )
    for f in (parted.work / "verification").glob("*.parquet"):
        f.unlink()
    local = engine.build(
        parted,
        with_changes(spec, version="9.9.9"),
        engine.BuildOptions(queries=_write(parted, q, "q2.csv")),
    )
    assert local.manifest.execution is not None and local.manifest.execution.backend == "local"
    assert _results(parted, local.release_id).equals(dist)
