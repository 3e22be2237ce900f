"""``shuyu build`` with the dask backend, on a real loopback cluster (a scheduler and two
worker processes): every demo DP product's bounded cells identical to the local build's, a
release with the same mechanism metadata, the backend and partition count in the manifest,
fallbacks and refusals before the charge, and a worker killed mid-build leaving no half
release and no double charge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from cluster_testkit import dask_cluster
from products_testkit import AS_OF, with_changes
from sqlalchemy import select

from catalogs.catalog import Catalog
from governance.audit import audit_log
from pipelines.ingest import ingest_path
from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from products.language.builder import LanguageReportBuilder, bounded_frames
from products.language.compile import UNIT_COL, match_counts
from products.language.index_builder import LanguageIndexBuilder, _row_sets
from scaleout import driver
from scaleout.backends import DaskBackend, open_backend
from shuyu_core import snapshots
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home, state_engine

pytestmark = pytest.mark.slow
PARTS = 3
CODES = ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"]
REPORTS = sorted(i for i, s in specs.load_all().items() if s.kind == "statistical_report")
INDEX = "business_vitality_index"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dask_cluster(tmp_path_factory.mktemp("dask-build-logs")) as address:
        yield address


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    from synthetic_data.generate import generate_frames

    out, _ = generate_frames(persons=1200, seed=5, defect_rate=0.0, as_of=AS_OF)
    return out


@pytest.fixture()
def budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets large enough for several releases of every demo product."""
    units = {"SCZTDJ": "统一社会信用代码"}
    doc = {
        "period": "year",
        "budgets": [
            {"resource": c, "unit": units.get(c, "公民身份号码"), "rho": 50.0, "delta": 1e-6}
            for c in CODES
        ],
    }
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("SHUYU_BUDGETS", str(path))


def _ingest(home: Home, tmp: Path, data: dict[str, pl.DataFrame], parts: dict[str, int]) -> None:
    for code, n in parts.items():
        src = tmp / f"{code}.parquet"
        data[code].write_parquet(src)
        ingest_path(home, code, src, partitions=n)


@pytest.fixture()
def parted(home: Home, tmp_path: Path, data: dict[str, pl.DataFrame], budgets: None) -> Home:
    _ingest(home, tmp_path, data, dict.fromkeys(CODES, PARTS))
    return home


def _ctx(home: Home, product: str, name: str) -> engine.BuildContext:
    spec = specs.get(product)
    inputs = {i.resource: snapshots.latest(home, i.resource) for i in spec.inputs}
    return engine.BuildContext(home, spec, Catalog.load(), inputs, name, engine.BuildOptions(), [])


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns, nulls_last=True)


def _build_entries(home: Home, outcome: str | None = None) -> list[dict[str, Any]]:
    with state_engine(home).connect() as conn:
        q = select(audit_log.c.outcome, audit_log.c.details).where(
            audit_log.c.action == "product.build"
        )
        rows = conn.execute(q).all()
    return [
        {"outcome": r[0], **json.loads(r[1])} for r in rows if outcome is None or r[0] == outcome
    ]


def test_every_demo_products_bounded_cells_identical_before_noise(
    parted: Home, cluster: str
) -> None:
    """What OpenDP measures — every table's bounded cells — is the same rows whether the
    bounding ran in this process or per co-partition on the workers."""
    assert len(REPORTS) >= 4, REPORTS
    with open_backend(cluster) as backend:
        assert isinstance(backend, DaskBackend)
        for product in REPORTS:
            local_ctx = _ctx(parted, product, f"{product}-local")
            local = {n: _sorted(lf.collect()) for n, lf in bounded_frames(local_ctx).items()}
            ctx = _ctx(parted, product, f"{product}-dask")
            plans = LanguageReportBuilder().bounding_plans(ctx)
            dist = {
                n: _sorted(lf.collect())
                for n, lf in driver.bounded_frames(ctx, backend, plans).items()
            }
            assert dist.keys() == local.keys(), product
            counts = driver.match_counts(ctx, backend)
            assert counts == match_counts(local_ctx), product
            if ctx.spec.query and ctx.spec.query.joins:
                assert counts[1] and 0 < min(counts[1].values()) <= counts[0]
            for name, frame in local.items():
                assert frame.height > 0, (product, name)
                assert dist[name].equals(frame), (product, name)
        local_ctx = _ctx(parted, INDEX, "index-local")
        local_index = {
            n: _sorted(lf.collect())
            for sub in _row_sets(local_ctx)
            for n, lf in bounded_frames(sub).items()
        }
        ctx = _ctx(parted, INDEX, "index-dask")
        plans = LanguageIndexBuilder().bounding_plans(ctx)
        dist_index = {
            n: _sorted(lf.collect()) for n, lf in driver.bounded_frames(ctx, backend, plans).items()
        }
    assert dist_index.keys() == local_index.keys() == {t.name for t in ctx.spec.tables}
    for name, frame in local_index.items():
        assert UNIT_COL not in dist_index[name].columns and frame.height > 0, name
        assert dist_index[name].equals(frame), name


def _same_mechanism(dist: rel.ReleaseManifest, local: rel.ReleaseManifest) -> None:
    assert [m.model_dump(exclude={"ledger_entries"}) for m in dist.mechanisms] == [
        m.model_dump(exclude={"ledger_entries"}) for m in local.mechanisms
    ]
    assert dist.contribution_bounds == local.contribution_bounds
    assert dist.budget is not None and local.budget is not None
    assert (dist.budget.rho, dist.budget.epsilon) == (local.budget.rho, local.budget.epsilon)
    assert [o.name for o in dist.outputs] == [o.name for o in local.outputs]


@pytest.mark.parametrize("product", ["si_enrolment_report", INDEX])
def test_build_on_the_cluster(parted: Home, cluster: str, product: str) -> None:
    spec = specs.get(product)
    out = engine.build(parted, spec, engine.BuildOptions(cluster=cluster))
    m = out.manifest
    assert m.execution == rel.Execution(
        backend="dask", partitions=PARTS, ran_on="workers", note=None
    )
    local = engine.build(parted, with_changes(spec, version="9.9.9")).manifest
    assert local.execution == rel.Execution(backend="local", partitions=PARTS, ran_on="driver")
    _same_mechanism(m, local)
    # One charge per input's budget line, drawn once, stored; the work files are gone.
    entries = ledger.entries_for_release(parted, m.release_id)
    assert [(e.state, e.draws) for e in entries] == [("stored", 1)] * len(spec.inputs)
    assert not (parted.work / "products" / "build" / m.release_id).exists()
    ok = [e for e in _build_entries(parted, "ok") if e.get("product") == product]
    assert ok[0]["execution"]["backend"] == "dask"
    # Release-once: the same spec over the same data, asked locally, is the stored release.
    again = engine.build(parted, spec)
    assert again.reused and again.release_id == m.release_id


def test_unpartitioned_inputs_fall_back_to_local_with_a_note(
    home: Home, tmp_path: Path, data: dict[str, pl.DataFrame], budgets: None
) -> None:
    # No scheduler listens on this address: the fallback never connects.
    _ingest(home, tmp_path, data, {"SCZTDJ": 1})
    m = engine.build(home, "market_entity_report", engine.BuildOptions(cluster="tcp://127.0.0.1:9"))
    assert m.manifest.execution is not None
    assert (m.manifest.execution.backend, m.manifest.execution.partitions) == ("local", 1)
    note = m.manifest.execution.note
    assert note and "SCZTDJ" in note and "--partitions" in note
    assert note in m.manifest.notes


@pytest.mark.parametrize(
    ("cluster", "match"),
    [("nonsense:3", "neither local:N nor a scheduler address"), ("tcp://127.0.0.1:9", "co-part")],
)
def test_refused_before_the_charge(
    home: Home,
    tmp_path: Path,
    data: dict[str, pl.DataFrame],
    budgets: None,
    cluster: str,
    match: str,
) -> None:
    """A bad setting, or inputs partitioned into different counts: refused (audited) before
    anything is charged or any cluster is contacted."""
    _ingest(home, tmp_path, data, {"RKJBXX": 2, "SBCBJF": 3})
    with pytest.raises(ValidationError, match=match):
        engine.build(home, "si_enrolment_report", engine.BuildOptions(cluster=cluster))
    assert ledger.all_entries(home) == []
    errors = _build_entries(home, "error")
    assert errors and match.split()[0] in errors[-1]["error"]
    assert not home.releases.exists() or not any(home.releases.iterdir())
    if match == "co-part":  # in one process the parts' layout does not matter
        m = engine.build(home, "si_enrolment_report").manifest
        assert m.execution == rel.Execution(backend="local", partitions=1, ran_on="driver")


def test_worker_killed_mid_build(
    parted: Home, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A worker dies (os._exit) after writing its bounded parts and before renaming them: the
    scheduler reruns the task, the build completes with one charge and one draw."""
    once = tmp_path / "fault-fired"
    env = {"SHUYU_FAULT": "scaleout.part_staged", "SHUYU_FAULT_ONCE": str(once)}
    with dask_cluster(tmp_path_factory.mktemp("dask-kill-build"), env=env) as address:
        out = engine.build(parted, INDEX, engine.BuildOptions(cluster=address))
    assert once.exists(), "no worker was killed"
    entries = ledger.entries_for_release(parted, out.release_id)
    assert [(e.state, e.draws) for e in entries] == [("stored", 1)]
    assert out.manifest.execution is not None and out.manifest.execution.backend == "dask"
    assert rel.exists(parted, out.release_id)


def test_cluster_failing_leaves_no_release_and_no_double_charge(
    parted: Home, tmp_path_factory: pytest.TempPathFactory, cluster: str
) -> None:
    """Every worker dies on every attempt: the build fails before its noise, so there is no
    release and the charge is voided (audited); the next build charges once and stores."""
    env = {
        "SHUYU_FAULT": "scaleout.part_staged",
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
    }
    with (
        dask_cluster(tmp_path_factory.mktemp("dask-dead"), env=env) as address,
        pytest.raises(Exception, match=r"(?i)killed|worker"),
    ):
        engine.build(parted, INDEX, engine.BuildOptions(cluster=address))
    spec = specs.get(INDEX)
    # The release id is derived before the charge; the pending ledger entries show it.
    entries = ledger.all_entries(parted, "SCZTDJ")
    assert [(e.state, e.draws) for e in entries] == [("void", 0)]
    release_id = entries[0].release_id
    assert not rel.exists(parted, release_id)
    assert not engine.pending_dir(parted, release_id).exists()
    assert not list(parted.releases.glob(f"{spec.id}*"))
    out = engine.build(parted, INDEX, engine.BuildOptions(cluster=cluster))
    assert out.release_id == release_id and not out.reused
    entries = ledger.entries_for_release(parted, release_id)
    assert [(e.state, e.draws) for e in entries] == [("stored", 1)]
    spent = sum(e.rho for e in ledger.all_entries(parted, "SCZTDJ") if e.state != "void")
    assert spent == pytest.approx(spec.budget.zcdp_rho if spec.budget else 0.0)


def test_the_domain_policy_names_the_cluster(
    home: Home, tmp_path: Path, data: dict[str, pl.DataFrame], budgets: None
) -> None:
    """``scaleout.dask_scheduler`` in the applied domain policy is the default cluster (a flag
    or the env overrides it); with unpartitioned inputs the build still says why it ran
    locally."""
    import os

    from accounts_testkit import seed

    from governance import domain_policy
    from scaleout.backends import cluster_setting

    seed(home, {"root-admin": ["admin"]})
    base = domain_policy.load_file(Path(os.environ["SHUYU_DOMAIN_POLICY"]))
    scale = domain_policy.ScaleOutPolicy(dask_scheduler="tcp://127.0.0.1:9")
    domain_policy.apply(home, base.model_copy(update={"scaleout": scale}), "cluster", "root-admin")
    assert cluster_setting(None, home) == "tcp://127.0.0.1:9"
    assert cluster_setting("local:2", home) == "local:2"
    _ingest(home, tmp_path, data, {"SCZTDJ": 1})
    m = engine.build(home, "market_entity_report").manifest
    assert m.execution is not None and m.execution.backend == "local"
    assert m.execution.note and "--partitions" in m.execution.note
    with pytest.raises(Exception, match="String should match pattern"):
        domain_policy.ScaleOutPolicy(dask_scheduler="10.0.0.5:8786")


def test_joins_off_the_partitioning_field_fall_back(parted: Home) -> None:
    """Part *i* of an input partitioned on another field does not hold the units of part *i*
    of the base: bounding per co-partition would lose join matches, so the build runs locally
    and says so."""
    from scaleout.placement import choose

    ctx = _ctx(parted, "medical_settlement_report", "off-key")
    builder = LanguageReportBuilder()
    assert builder.partitionwise(ctx) is None
    assert choose(ctx, builder, "tcp://127.0.0.1:9").distributed
    rk = ctx.inputs["RKJBXX"]
    assert rk.partitioning is not None
    moved = rk.partitioning.model_copy(update={"by": "户籍区划代码"})
    ctx.inputs["RKJBXX"] = rk.model_copy(update={"partitioning": moved})
    reason = builder.partitionwise(ctx)
    assert reason and "YBJS.公民身份号码 = RKJBXX.公民身份号码" in reason
    placed = choose(ctx, builder, "tcp://127.0.0.1:9")
    assert not placed.distributed and placed.note and reason in placed.note


def test_build_cli_cluster_option(
    home: Home, tmp_path: Path, data: dict[str, pl.DataFrame], budgets: None
) -> None:
    import typer
    from typer.testing import CliRunner

    from governance.actors import set_request
    from pipelines import cli_products

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        set_request(None)

    cli_products.register(app)
    _ingest(home, tmp_path, data, {"SCZTDJ": 1})
    runner = CliRunner()
    bad = runner.invoke(app, ["build", "market_entity_report", "--cluster", "nonsense:3"])
    # (the real CLI's entry point turns the error into exit 4 and its one line)
    assert isinstance(bad.exception, ValidationError) and bad.exception.exit_code == 4
    assert ledger.all_entries(home) == []
    res = runner.invoke(
        app, ["build", "market_entity_report", "--cluster", "tcp://127.0.0.1:9", "-y"]
    )
    assert res.exit_code == 0, res.output
    assert "--partitions" in res.stdout  # the fallback note is shown
    res = runner.invoke(app, ["build", "market_entity_report", "--format", "json"])
    doc = json.loads(res.stdout)
    assert doc["reused"] and doc["execution"]["backend"] == "local"
