"""Building the statistical report: outputs, release-once, charges, crashes, refusals."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from accounts_testkit import seed
from products_testkit import child_build, frames, ingest_frames, process_context, with_changes
from sqlalchemy import select

from governance.audit import audit_log
from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from products.language.builder import LanguageReportBuilder
from shuyu_core.db import reset_engines
from shuyu_core.errors import BudgetExceeded, PermissionDenied, ValidationError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home, state_engine

SI = "si_enrolment_report"
# The crash tests restore only what they patched: monkeypatch.undo() would also revert the
# home fixture's environment (SHUYU_HOME, SHUYU_DATABASE_URL, the actor).
_ORIGINALS = {
    (engine, "save_pending"): engine.save_pending,
    (ledger, "mark"): ledger.mark,
    (LanguageReportBuilder, "finish"): LanguageReportBuilder.finish,
}


def _truth_districts(home: Home) -> dict[str, int]:
    """Insured persons per district computed without privacy from the same inputs."""
    f = frames()
    persons = (
        f["SBCBJF"]
        .filter(
            pl.col("险种") == "企业职工基本养老保险",
            pl.col("参保状态") == "正常参保",
            pl.col("缴费月份").is_between(pl.lit("202501"), pl.lit("202512")),
        )
        .select("公民身份号码")
        .unique()
    )
    joined = persons.join(
        f["RKJBXX"].unique(subset=["公民身份号码"]), on="公民身份号码", how="inner"
    ).with_columns(
        age=(pl.lit(2025) - pl.col("出生日期").dt.year())
        - ((pl.col("出生日期").dt.month() * 100 + pl.col("出生日期").dt.day()) > 1231).cast(
            pl.Int32
        )
    )
    joined = joined.filter(pl.col("age") >= 18)
    counts = joined.group_by("户籍区划代码").len()
    return {r[0]: r[1] for r in counts.iter_rows()}


def _files(home: Home, release_id: str) -> dict[str, str]:
    root = rel.release_dir(home, release_id)
    return {
        str(p.relative_to(root)): sm3_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "report.html"
    }


def test_report_outputs_manifest_and_accuracy(data_home: Home) -> None:
    out = engine.build(data_home, SI)
    m = out.manifest
    assert not out.reused
    root = rel.release_dir(data_home, m.release_id)
    assert m.release_id.startswith(f"{SI}-v1.1.0-")
    assert m.kind == "statistical_report" and m.purpose_category == "public_good"
    assert {i.resource for i in m.inputs} == {"SBCBJF", "RKJBXX"}
    assert m.authorization is not None and m.authorization["ok"]
    assert m.budget is not None and m.budget.rho == pytest.approx(0.5)
    assert {e.resource for e in m.budget.entries} == {"SBCBJF", "RKJBXX"}
    assert m.spec_sm3 == specs.spec_sm3(specs.get(SI))
    formats = {(o.name, o.format) for o in m.outputs}
    assert ("insured_by_district_age_sex", "parquet") in formats
    assert ("contribution_base_by_district", "csv") in formats
    assert ("report", "html") in formats
    for o in m.outputs:
        assert sm3_file(root / o.path) == o.sm3
        assert o.values == "dp_aggregate"

    cells = pl.read_parquet(root / "data/insured_by_district_age_sex.parquet")
    assert cells.height == 6 * 5 * 2  # the public key set, whatever the data holds
    by_district = pl.read_parquet(root / "data/contribution_base_by_district.parquet")
    assert by_district.height == 6
    # Accuracy: one entry per released measure value; suppressed values carry no estimate.
    acc = [c for c in m.accuracy if c.output == "insured_by_district_age_sex"]
    assert len(acc) == cells.height
    for c, row in zip(acc, cells.iter_rows(named=True), strict=True):
        assert c.key == {k: row[k] for k in ("district", "age_band", "sex")}
        assert c.suppressed == (row["insured"] is None)
        if not c.suppressed:
            assert c.estimate == row["insured"] and c.ci_half_width == row["insured_ci95"]
            assert row["insured"] >= 10
    assert {s.measure for s in m.suppressed} <= {"insured", "base_sum", "avg_base"}
    # The district counts are within 6σ of the truth (σ from the release itself).
    truth = _truth_districts(data_home)
    scale = next(c.scale for c in m.accuracy if c.output == "contribution_base_by_district")
    assert scale is not None
    for row in by_district.iter_rows(named=True):
        assert abs(row["insured"] - truth.get(row["district"], 0)) <= 6 * scale
        assert row["avg_base"] is None or 3000 < row["avg_base"] < 30000
    html = (root / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "社会保险参保情况统计报告" in html
    # The bounded per-person frame and the pending draw are gone once the release is stored.
    assert not engine.pending_dir(data_home, m.release_id).exists()
    assert [e.state for e in ledger.entries_for_release(data_home, m.release_id)] == [
        "stored",
        "stored",
    ]


def test_same_build_twice_is_one_release_and_one_charge(data_home: Home) -> None:
    first = engine.build(data_home, SI)
    before = _files(data_home, first.release_id)
    second = engine.build(data_home, SI)
    assert second.reused and second.release_id == first.release_id
    assert _files(data_home, first.release_id) == before
    entries = ledger.all_entries(data_home)
    assert len(entries) == 2 and all(e.draws == 1 for e in entries)
    assert ledger.show(data_home, "SBCBJF", period="2025")["budgets"][0]["releases"] == 1


def test_new_version_and_new_snapshot_are_new_releases(data_home: Home) -> None:
    spec = specs.get(SI)
    a = engine.build(data_home, spec)
    b = engine.build(data_home, with_changes(spec, version="1.0.1"))
    assert b.release_id != a.release_id and not b.reused
    # Re-ingesting a byte-identical export: a new snapshot id, the same content (SM3), so
    # the same release — not charged, not drawn again (correction 4).
    first_snapshot = a.manifest.inputs[0].snapshot_id
    ingest_frames(data_home, frames(), ["SBCBJF"])
    again = engine.build(data_home, spec)
    assert again.reused and again.release_id == a.release_id
    changed = frames()["SBCBJF"].slice(1)  # a new snapshot with different content
    ingest_frames(data_home, {"SBCBJF": changed}, ["SBCBJF"])
    c = engine.build(data_home, spec)
    assert c.release_id not in (a.release_id, b.release_id)
    doc = {x["resource"]: x for x in ledger.show(data_home, period="2025")["budgets"]}
    assert doc["SBCBJF"]["releases"] == 3
    assert doc["SBCBJF"]["spent"]["rho"] == pytest.approx(1.5)
    # Pinning the old snapshot finds the first release again.
    pinned = engine.build(
        data_home, spec, engine.BuildOptions(snapshot_ids={"SBCBJF": first_snapshot})
    )
    assert pinned.reused and pinned.release_id == a.release_id


def test_changed_spec_under_the_same_version_is_refused(data_home: Home) -> None:
    spec = specs.get(SI)
    engine.build(data_home, spec)
    changed = with_changes(spec, description="edited without a new version")
    with pytest.raises(ValidationError, match=r"bump the spec's version|different spec"):
        engine.build(data_home, changed)


def test_crash_after_drawing_reuses_the_kept_draw(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kw: object) -> None:
        raise RuntimeError("simulated crash after the draw")

    monkeypatch.setattr(LanguageReportBuilder, "finish", crash)
    with pytest.raises(RuntimeError):
        engine.build(data_home, SI)
    [entry, _] = ledger.all_entries(data_home)
    pending = engine.pending_dir(data_home, entry.release_id)
    kept = pl.read_parquet(pending / "insured_by_district_age_sex.parquet")
    assert entry.state == "drawn" and entry.draws == 1
    assert not rel.exists(data_home, entry.release_id)

    monkeypatch.setattr(
        LanguageReportBuilder, "finish", _ORIGINALS[(LanguageReportBuilder, "finish")]
    )
    out = engine.build(data_home, SI)
    assert out.release_id == entry.release_id
    released = pl.read_parquet(
        rel.release_dir(data_home, out.release_id) / "data/insured_by_district_age_sex.parquet"
    )
    raw = kept.join(released, on=["district", "age_band", "sex"], suffix="_released")
    shown = raw.filter(pl.col("insured_released").is_not_null())
    assert shown.height > 0
    assert (shown["insured"] == shown["insured_released"]).all()  # the same noise, not redrawn
    entries = ledger.entries_for_release(data_home, out.release_id)
    assert len(ledger.all_entries(data_home)) == 2
    assert all(e.draws == 1 and e.state == "stored" for e in entries)


def test_crash_before_the_draw_is_kept_draws_once_under_the_same_charge(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kw: object) -> None:
        raise RuntimeError("simulated crash while storing the draw")

    monkeypatch.setattr(engine, "save_pending", crash)
    with pytest.raises(RuntimeError):
        engine.build(data_home, SI)
    entries = ledger.all_entries(data_home)
    assert [e.state for e in entries] == ["charged", "charged"]
    monkeypatch.setattr(engine, "save_pending", _ORIGINALS[(engine, "save_pending")])
    out = engine.build(data_home, SI)
    after = ledger.entries_for_release(data_home, out.release_id)
    assert len(ledger.all_entries(data_home)) == 2  # no second charge
    assert all(e.draws == 1 and e.state == "stored" for e in after)


def test_budget_exhaustion_refuses_before_any_noise(
    data_home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 0.8, "RKJBXX": 2.0})
    spec = specs.get(SI)
    engine.build(data_home, spec)
    v2 = with_changes(spec, version="1.1.9")
    with pytest.raises(BudgetExceeded, match=r"remaining ρ=0\.3"):
        engine.build(data_home, v2)
    assert len(rel.list_releases(data_home, SI)) == 1
    assert not (data_home.work / "products" / "pending").exists() or not any(
        (data_home.work / "products" / "pending").iterdir()
    )


def test_undeclared_field_cannot_be_read(data_home: Home) -> None:
    spec = specs.get(SI)
    data = spec.model_dump(mode="json")
    data["version"] = "9.0.0"
    data["inputs"][1]["fields"] = ["公民身份号码", "出生日期", "户籍区划代码"]  # no 性别
    narrowed = specs.parse(data, "test")
    with pytest.raises(ValidationError, match="not declared under inputs"):
        engine.build(data_home, narrowed)


def test_field_outside_the_scenario_is_refused(data_home: Home) -> None:
    spec = specs.get(SI)
    data = spec.model_dump(mode="json")
    data["inputs"][1]["fields"] = [*data["inputs"][1]["fields"], "姓名"]
    with pytest.raises(PermissionDenied, match="field_out_of_scope"):
        engine.build(data_home, specs.parse(data, "test"))
    assert ledger.all_entries(data_home) == []


def test_eight_concurrent_builds_never_overspend(
    data_home: Home, budgets_file: Callable[..., Path]
) -> None:
    budgets_file({"SBCBJF": 1.6, "RKJBXX": 10.0})
    spec = specs.get(SI)
    results: dict[str, str] = {}
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        s = with_changes(spec, version=f"2.0.{i}")
        barrier.wait()
        try:
            engine.build(data_home, s)
            results[s.version] = "ok"
        except BudgetExceeded:
            results[s.version] = "refused"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["ok"] * 3 + ["refused"] * 5
    spent = ledger.show(data_home, "SBCBJF", period="2025")["budgets"][0]["spent"]["rho"]
    assert spent == pytest.approx(1.5) and spent <= 1.6
    built = {m.version for m in rel.list_releases(data_home, SI)}
    assert built == {v for v, r in results.items() if r == "ok"}


def test_eight_concurrent_builds_of_one_release_charge_once(data_home: Home) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        ids.append(engine.build(data_home, SI).release_id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert [e.draws for e in ledger.all_entries(data_home)] == [1, 1]
    with state_engine(data_home).connect() as conn:
        builds = conn.execute(
            select(audit_log.c.details).where(
                audit_log.c.action == "product.build", audit_log.c.outcome == "ok"
            )
        ).all()
    reused = [json.loads(b[0]).get("reused", False) for b in builds]
    assert reused.count(False) == 1 and reused.count(True) == 7


@pytest.mark.slow
def test_eight_concurrent_builds_in_processes_never_overspend(
    data_home: Home, budgets_file: Callable[..., Path]
) -> None:
    path = budgets_file({"SBCBJF": 1.6, "RKJBXX": 10.0})
    versions = [f"3.0.{i}" for i in range(8)]
    seed(data_home, {f"proc-{v}": ["operator"] for v in versions})
    ledger.show(data_home)  # tables exist before the children start
    reset_engines()
    ctx = process_context()
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=child_build, args=(str(data_home.root), str(path), v, barrier, out))
        for v in versions
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in versions)
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * 8
    ok = {v for v, r in results.items() if r != "refused"}
    assert len(ok) == 3  # 3 × 0.5 fits in 1.6, a fourth does not
    spent = ledger.show(data_home, "SBCBJF", period="2025")["budgets"][0]["spent"]["rho"]
    assert spent == pytest.approx(1.5) and spent <= 1.6
    assert {m.version for m in rel.list_releases(data_home, SI)} == ok
    assert {e.release_id for e in ledger.all_entries(data_home)} == {
        r for r in results.values() if r != "refused"
    }
    assert all(e.draws == 1 and e.state == "stored" for e in ledger.all_entries(data_home))


def test_deleted_release_is_not_redrawn_under_the_old_charge(data_home: Home) -> None:
    first = engine.build(data_home, SI)
    root = rel.release_dir(data_home, first.release_id)
    # Someone removes the stored release (and with it the only copy of the drawn noise).
    shutil.rmtree(root)
    with pytest.raises(BudgetExceeded, match="already drew its noise"):
        engine.build(data_home, SI)
    assert not rel.exists(data_home, first.release_id)
    entries = ledger.all_entries(data_home)
    assert len(entries) == 2 and all(e.draws == 1 for e in entries)
    # A new version is a new release with its own charge.
    again = engine.build(data_home, with_changes(specs.get(SI), version="1.0.1"))
    assert again.release_id != first.release_id
    assert len(ledger.all_entries(data_home)) == 4


def test_lost_pending_draw_is_not_redrawn(data_home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_args: object, **_kw: object) -> None:
        raise RuntimeError("simulated crash after the draw was kept")

    monkeypatch.setattr(LanguageReportBuilder, "finish", crash)
    with pytest.raises(RuntimeError):
        engine.build(data_home, SI)
    monkeypatch.setattr(
        LanguageReportBuilder, "finish", _ORIGINALS[(LanguageReportBuilder, "finish")]
    )
    [entry, _] = ledger.all_entries(data_home)
    shutil.rmtree(engine.pending_dir(data_home, entry.release_id))
    with pytest.raises(BudgetExceeded, match="drawing again would spend"):
        engine.build(data_home, SI)
    assert all(e.draws == 1 for e in ledger.all_entries(data_home))


def test_every_aggregate_output_is_tied_to_ledger_entries(data_home: Home) -> None:
    m = engine.build(data_home, SI).manifest
    assert m.budget is not None
    paid = {e.entry_id for e in ledger.entries_for_release(data_home, m.release_id)}
    assert paid == {e.entry_id for e in m.budget.entries}
    mech = {x.output: x for x in m.mechanisms}
    assert set(mech) == {t.name for t in specs.get(SI).tables}
    assert sum(x.rho for x in m.mechanisms) == pytest.approx(m.budget.rho)
    for x in m.mechanisms:
        assert set(x.ledger_entries) == paid
    for out in m.outputs:
        assert out.values == "dp_aggregate"
        sources = [out.name] if out.name in mech else m.derived_from[out.name]
        assert sources and all(s in mech for s in sources)
    # Every released cell of a measure carries the scale its mechanism declares.
    for cell in m.accuracy:
        noise = {n.column: n for n in mech[cell.output].measures}
        if cell.measure in noise:
            assert cell.scale == noise[cell.measure].scale
            assert cell.ci_half_width == pytest.approx(noise[cell.measure].ci_half_width)
        else:
            assert cell.method == "simulation"


def test_withheld_values_do_not_leak_through_reasons_or_intervals(data_home: Home) -> None:
    spec = with_changes(
        specs.get(SI),
        version="1.2.0",
        suppression={"min_count": 40, "max_relative_error": 0.06},
    )
    m = engine.build(data_home, spec).manifest
    root = rel.release_dir(data_home, m.release_id)
    reasons = {s.reason for s in m.suppressed}
    # Both kinds of suppression happen, and no reason carries a number of the cell.
    allowed = {
        "noisy count below 40",
        "relative error above target 0.06",
        "base_sum: relative error above target 0.06",
        "avg_base: relative error above target 0.06",
        "avg_base: undefined (denominator below 1)",
        "avg_base: an input it depends on is withheld",  # its base_sum is withheld
    }
    assert reasons <= allowed
    assert {"noisy count below 40", "relative error above target 0.06"} <= reasons
    for c in m.accuracy:
        if c.suppressed:
            assert c.estimate is None and c.relative_error is None
            # a simulated interval depends on the withheld value; a mechanism's does not
            assert (c.ci_half_width is None) == (c.method == "simulation")
    by_district = pl.read_parquet(root / "data/contribution_base_by_district.parquet")
    hidden = by_district.filter(pl.col("avg_base").is_null())
    assert hidden.height > 0 and hidden["avg_base_ci95"].is_null().all()
    shown = by_district.filter(pl.col("avg_base").is_not_null())
    assert shown["avg_base_ci95"].is_not_null().all()


def test_crash_after_the_release_is_stored_finishes_the_bookkeeping(
    data_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mark = ledger.mark

    def crash_on_stored(
        home: Home, release_id: str, state: str, drew: bool = False, **kw: object
    ) -> None:
        if state == "stored":
            raise RuntimeError("simulated crash after the atomic rename")
        real_mark(home, release_id, state, drew=drew, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger, "mark", crash_on_stored)
    with pytest.raises(RuntimeError):
        engine.build(data_home, SI)
    monkeypatch.setattr(ledger, "mark", _ORIGINALS[(ledger, "mark")])
    [entry, _] = ledger.all_entries(data_home)
    assert entry.state == "drawn" and rel.exists(data_home, entry.release_id)
    assert engine.pending_dir(data_home, entry.release_id).exists()
    out = engine.build(data_home, SI)
    assert out.reused and out.release_id == entry.release_id
    assert all(e.state == "stored" and e.draws == 1 for e in ledger.all_entries(data_home))
    assert not engine.pending_dir(data_home, entry.release_id).exists()
    # The finished bookkeeping keeps the stored release's digest on its ledger rows.
    sealed = sm3_file(rel.release_dir(data_home, entry.release_id) / rel.MANIFEST)
    assert {e.release_sm3 for e in ledger.all_entries(data_home)} == {sealed}
