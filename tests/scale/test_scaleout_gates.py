"""The partitioned paths keep the gates of the single-process ones: the role is required (an
audited refusal otherwise), a part changed after the driver's check is refused, a bad cluster
setting is refused."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from accounts_testkit import act_as
from products_testkit import frames
from sqlalchemy import select

from governance.audit import audit_log
from pipelines.ingest import ingest_path
from scaleout import driver, jobs
from scaleout.backends import LocalBackend, cluster_setting, open_backend
from shuyu_core import keys, snapshots
from shuyu_core.errors import IntegrityError, PermissionDenied, ValidationError
from shuyu_core.home import Home, state_engine


@pytest.fixture()
def parted(home: Home, tmp_path: Path) -> Home:
    src = tmp_path / "RKJBXX.parquet"
    frames(400)["RKJBXX"].write_parquet(src)
    ingest_path(home, "RKJBXX", src, partitions=3)
    keys.init_key(home, keys.PSEUDONYM)
    keys.init_key(home, keys.ENCRYPTION)
    return home


def _refusals(home: Home, action: str) -> list[tuple[str, str]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.actor, audit_log.c.object).where(
                audit_log.c.action == action, audit_log.c.outcome == "refused"
            )
        ).all()
    return [tuple(r) for r in rows]


def test_reviewer_cannot_desensitize_or_check_on_the_backend(parted: Home, tmp_path: Path) -> None:
    act_as(parted, "rev-1", "reviewer")
    with pytest.raises(PermissionDenied):
        driver.desensitize(parted, "RKJBXX", LocalBackend(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert any(o == "resource/RKJBXX" for _a, o in _refusals(parted, "desensitize"))
    with pytest.raises(PermissionDenied):
        driver.quality_counts_of(parted, "RKJBXX", LocalBackend())
    assert any(o == "resource/RKJBXX" for _a, o in _refusals(parted, "quality.check"))


def test_part_swapped_after_the_drivers_check_is_refused_on_the_worker(parted: Home) -> None:
    m = snapshots.latest(parted, "RKJBXX")
    refs = driver.verified_parts(parted, m)
    victim = refs[1].path
    pl.read_parquet(victim).head(2).write_parquet(victim)
    with pytest.raises(IntegrityError, match="changed after the driver verified"):
        jobs.quality_counts(jobs.QualityJob(refs[1], m.ingested_at.date()))


def test_operator_desensitizes_on_the_local_backend_with_an_audit_entry(
    parted: Home, tmp_path: Path
) -> None:
    files = driver.desensitize(parted, "RKJBXX", LocalBackend(), tmp_path / "out")
    assert len(files) == 3
    with state_engine(parted).connect() as conn:
        ok = conn.execute(
            select(audit_log.c.details).where(
                audit_log.c.action == "desensitize", audit_log.c.outcome == "ok"
            )
        ).all()
    assert any('"local"' in str(r[0]) or "local" in str(r[0]) for r in ok)


def test_cluster_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHUYU_CLUSTER", raising=False)
    monkeypatch.delenv("SHUYU_DASK_SCHEDULER", raising=False)
    assert cluster_setting() is None
    with open_backend() as b:
        assert b.name == "local"
    monkeypatch.setenv("SHUYU_DASK_SCHEDULER", "tcp://127.0.0.1:8786")
    assert cluster_setting() == "tcp://127.0.0.1:8786"
    assert cluster_setting("local:2") == "local:2"
    with pytest.raises(ValidationError, match="neither local:N"), open_backend("spark://x"):
        pass


def test_partitioned_output_carries_the_desensitization_record(
    parted: Home, tmp_path: Path
) -> None:
    """The output directory gets the same record as `shuyu desensitize` (operators, policy,
    key fingerprints), plus each part's rows and SM3; it is written last, and a rerun into
    the same directory replaces it."""
    from shuyu_core.hashing import sm3_file
    from transforms.apply import SIDECAR, desensitize_resource, read_desensitization

    out = tmp_path / "out"
    files = driver.desensitize(parted, "RKJBXX", LocalBackend(), out)
    doc = read_desensitization(out)
    single = read_desensitization(desensitize_resource(parted, "RKJBXX"))
    assert doc["columns"] == single["columns"]
    assert doc["key_fingerprints"] == single["key_fingerprints"]
    assert doc["policy"] == single["policy"] and doc["snapshot_sm3"] == single["snapshot_sm3"]
    assert doc["rows"] == snapshots.latest(parted, "RKJBXX").rows == single["rows"]
    assert [p["file"] for p in doc["parts"]] == [f.name for f in files]
    assert [p["sm3"] for p in doc["parts"]] == [sm3_file(f) for f in files]
    assert doc["execution"] == {"backend": "local", "partitions": 3}
    first = (out / SIDECAR).stat().st_mtime_ns
    driver.desensitize(parted, "RKJBXX", LocalBackend(), out)
    assert (out / SIDECAR).stat().st_mtime_ns > first


def test_scale_cli_prints_the_counts_and_the_output_as_json(
    parted: Home,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    import sys

    from pipelines import cli

    def run(*argv: str) -> dict[str, object]:
        monkeypatch.setattr(sys, "argv", ["shuyu", *argv])
        try:
            cli.main()
        except SystemExit as ex:
            assert ex.code in (0, None)
        return dict(json.loads(capsys.readouterr().out))

    monkeypatch.setenv("SHUYU_HOME", str(parted.root))
    counts = run("scale", "quality", "RKJBXX", "--cluster", "local")
    assert (
        counts["backend"] == "local" and counts["rows"] == snapshots.latest(parted, "RKJBXX").rows
    )
    agg = counts["agg_rules"]
    assert isinstance(agg, dict) and "duplicate_record" in agg
    assert all(isinstance(v, list) and len(v) == 2 for v in agg.values())
    out = run("scale", "desensitize", "RKJBXX", "--out", str(tmp_path / "o"), "--cluster", "local")
    assert len(out["parts"]) == 3  # type: ignore[arg-type]
    assert (tmp_path / "o" / "desensitization.json").exists()
