"""DP quantiles (OpenDP's report-noisy-max over public candidates): the stated rank interval
holds by simulation, a heavy contributor stays bounded, bad candidates are refused before the
charge (and audited), and the medical report releases a median with its rank error.

The rank error of a candidate c is OpenDP's score over its denominator:
e(c) = |#(x < c) − q·(n − #(x = c))|. The stated interval: with probability ≥ 1 − α the
released candidate's e is within r of the best candidate's (``quantile_rank_error``).
Tolerances come from the number of runs N: a coverage p is checked against
level − 3·sqrt(level·(1 − level)/N).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from products_testkit import frames, ingest_frames

from governance import audit
from privacy.dp import ledger
from privacy.dp.accuracy import quantile_rank_error
from privacy.dp.mechanisms import Measure, TableQuery, table_measurement
from products import engine, planning, specs
from products import release as rel
from products.language import builder as lb
from products.language import compile as qc
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home

MED = "medical_settlement_report"
LEVEL = 0.95
GRID = [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 225, 250, 275, 300, 350, 400, 450]
GRID += [500, 600, 700, 800, 1000, 1250, 1500, 2000, 3000, 5000, 10000, 20000]
# The candidates of the check that failed last session: every 500 yuan although most
# per-person costs are a few hundred yuan (17 of 20 candidates in the sparse upper tail).
OLD_GRID = [0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000, 7000, 8000]
OLD_GRID += [9000, 10000, 12500, 15000, 17500, 20000]


def rank_errors(values: np.ndarray, candidates: np.ndarray, q: float) -> np.ndarray:
    x = np.sort(np.asarray(values, dtype=np.float64))
    lt = np.searchsorted(x, candidates, side="left")
    eq = np.searchsorted(x, candidates, side="right") - lt
    return np.asarray(np.abs(lt - q * (len(x) - eq)), dtype=np.float64)


def tolerance(p: float, runs: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / runs)


def draw_many(tm: Any, frame: pl.LazyFrame, by: str, runs: int) -> pl.DataFrame:
    """``runs`` fresh releases of one table measurement over fixed data (no ledger: the
    measurement is invoked directly, as the release invokes it once through its compositor)."""
    out = [tm.measurement(frame).collect().with_columns(run=pl.lit(i)) for i in range(runs)]
    return pl.concat(out).sort(by, "run")


def covered(
    released: np.ndarray, values: np.ndarray, cands: np.ndarray, q: float, r: float
) -> np.ndarray:
    e = rank_errors(values, cands, q)
    idx = np.searchsorted(cands, released)
    assert np.array_equal(cands[idx], released), "a released value is not a candidate"
    return np.asarray(e[idx] <= e.min() + r + 1e-9)


def test_rank_interval_holds_for_skewed_tied_and_small_groups() -> None:
    """Median and 90th percentile per group, one row per unit and cell, 4 cells per unit:
    for a large skewed group, a group with many ties at a candidate, and a group of 6 units,
    the released candidate is within the stated rank error r of the best candidate in at least
    level − 3σ of the runs; a public key without data gets a random candidate, not a null."""
    rng = np.random.default_rng(11)
    skewed = np.round(rng.lognormal(5.3, 1.2, 400), 2).clip(0, 20000)
    tied = np.concatenate([np.zeros(180), np.round(rng.lognormal(5, 1, 120), 2)])
    few = np.round(rng.lognormal(5.3, 1.2, 6), 2)
    groups = {"skewed": skewed, "tied": tied, "few": few}
    frame = pl.DataFrame(
        {
            "g": [g for g, v in groups.items() for _ in v],
            "v": np.concatenate(list(groups.values())),
        }
    ).lazy()
    cands = tuple(float(c) for c in GRID)
    q = TableQuery(
        "t",
        frame,
        ["g"],
        pl.DataFrame({"g": [*groups, "empty"]}),  # a public key without any unit
        [
            Measure("n", "count"),
            Measure("med", "quantile", "v", None, 0.5, cands),
            Measure("p90", "quantile", "v", None, 0.9, cands),
        ],
        rows_per_cell=1,
    )
    tm = table_measurement(q, rho_q=0.05, contributions=4, max_units=1_000_000)
    noise = {n.column: n for n in tm.noise}
    # ρ split from OpenDP's map: the shares add up to the table's ρ
    assert math.isclose(sum(n.rho for n in tm.noise), 0.05, rel_tol=1e-9)
    runs = 600
    got = draw_many(tm, frame, "g", runs)
    c = np.array(cands)
    for name, qq in (("med", 0.5), ("p90", 0.9)):
        r = noise[name].rank_error
        assert r is not None and noise[name].rank_scale is not None
        # the rank scale is the calibrated global scale times max(q, 1 − q)
        assert math.isclose(noise[name].rank_scale, tm.global_scale * max(qq, 1 - qq))
        assert math.isclose(r, quantile_rank_error(noise[name].rank_scale, len(cands), 0.05))
        for g, values in groups.items():
            rel_ = got.filter(pl.col("g") == g)[name].to_numpy()
            share = float(covered(rel_, values, c, qq, r).mean())
            assert share >= LEVEL - tolerance(LEVEL, runs), (name, g, share, r)
    # a key without data still gets a candidate (uniformly), never a null that would tell
    empty = got.filter(pl.col("g") == "empty")
    for name in ("med", "p90"):
        assert empty[name].null_count() == 0 and set(empty[name]) <= set(cands)
        assert empty[name].n_unique() > len(cands) // 2
    # the noise is material here (not a trivially covered interval): r is tens of ranks
    assert (noise["med"].rank_error or 0) > 10


def test_rank_interval_is_tight_where_the_union_bound_is() -> None:
    """All but one candidate at the same rank distance D just beyond r: the miss rate is the
    exact exponential-mechanism probability (m−1)e^(−D/b)/(1+(m−1)e^(−D/b)) — about α —, so
    a Gumbel scale understated by 10 % would show (checked two-sided, 3.5σ of N runs)."""
    n, m = 200, 20
    values = np.array([0.0] * (n // 2) + [100.0] * (n // 2))
    cands = tuple(float(c) for c in [*range(-(m - 1), 0), 50])  # m−1 below the data, 1 central
    frame = pl.DataFrame({"g": ["a"] * n, "v": values}).lazy()

    def query() -> TableQuery:
        measures = [Measure("med", "quantile", "v", None, 0.5, cands)]
        return TableQuery("t", frame, ["g"], pl.DataFrame({"g": ["a"]}), measures, rows_per_cell=1)

    d = n / 2
    b0 = table_measurement(query(), rho_q=1.0).noise[0].rank_scale
    assert b0 is not None
    want_b = d / (math.log((m - 1) / 0.05) + 0.1)  # D = r + 0.1·b
    tm = table_measurement(query(), rho_q=(b0 / want_b) ** 2)
    b, r = tm.noise[0].rank_scale, tm.noise[0].rank_error
    assert b is not None and r is not None and r < d < r + 0.2 * b
    k = (m - 1) * math.exp(-d / b)
    p_miss = k / (1 + k)
    assert p_miss <= 0.05  # what the stated interval promises
    runs = 3000
    got = draw_many(tm, frame, "g", runs)["med"].to_numpy()
    miss = 1.0 - float(covered(got, values, np.array(cands), 0.5, r).mean())
    sd = math.sqrt(p_miss * (1 - p_miss) / runs)
    assert abs(miss - p_miss) <= 3.5 * sd, (miss, p_miss)
    assert 1 - miss >= LEVEL - tolerance(LEVEL, runs)


@pytest.fixture()
def lang_home(home: Home) -> Home:
    ingest_frames(home, frames(), ["RKJBXX", "YBJS"])
    return home


def _chapter_spec(candidates: list[float], version: str = "1.5.0") -> Any:
    data = specs.get(MED).model_dump(mode="json", by_alias=True)
    data["tables"].append(
        {
            "name": "cost_by_chapter",
            "title": "人均医疗费用中位数（疾病章）",
            "title_en": "Median cost per person by ICD-10 chapter",
            "by": ["chapter"],
            "measures": [
                {"name": "persons", "title": "结算人数", "aggregate": "count"},
                {
                    "name": "cost_median",
                    "title": "人均医疗费用中位数",
                    "aggregate": "quantile",
                    "field": "cost",
                    "quantile": 0.5,
                    "candidates": candidates,
                },
            ],
        }
    )
    data["version"] = version
    return specs.parse(data, "test")


def _capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The bounded frames and queries the builder hands to the mechanism, and its plans
    (with the unit column, before it is dropped)."""
    got: dict[str, Any] = {"queries": {}, "plans": {}}
    real_release, real_plans = lb.release_tables, lb._plans

    def release(queries: list[TableQuery], **kw: Any) -> Any:
        for q in queries:
            got["queries"][q.name] = (q, q.frame.collect())
        got["kw"] = kw
        return real_release(queries, **kw)

    def plans(ctx: Any) -> dict[str, pl.LazyFrame]:
        out = real_plans(ctx)
        got["plans"] = {name: lf.collect() for name, lf in out.items()}
        return out

    monkeypatch.setattr(lb, "release_tables", release)
    monkeypatch.setattr(lb, "_plans", plans)
    return got


def test_the_old_failure_skewed_chapters_and_few_units(
    lang_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that failed: median cost per person by ICD-10 chapter with the coarse grid.
    Through the language's own bounded frames, every chapter — skewed, and some of a few
    persons — covers the stated rank interval; the release withholds a median whose count is
    withheld or whose rank error reaches past the chapter's minimum or maximum."""
    got = _capture(monkeypatch)
    spec = _chapter_spec([float(c) for c in OLD_GRID])
    m = engine.build(lang_home, spec).manifest
    q, bounded = got["queries"]["cost_by_chapter"]
    sizes = bounded.group_by("chapter").agg(
        n=pl.len(), med=pl.col("cost").median(), mean=pl.col("cost").mean()
    )
    assert sizes.filter(pl.col("n") < 20).height > 0  # chapters of few persons
    assert sizes.filter(pl.col("n") >= 100, pl.col("mean") > 2 * pl.col("med")).height > 0
    kw = got["kw"]
    rho_table = kw["rho"] * q.weight / sum(t.weight for t in spec.tables)
    tm = table_measurement(q, rho_table, kw["contributions"], kw["max_units"], kw["alpha"])
    r = next(n for n in tm.noise if n.column == "cost_median").rank_error
    assert r is not None
    runs = 400
    draws = draw_many(tm, bounded.lazy(), "chapter", runs)
    cands = np.array([float(c) for c in OLD_GRID])
    for chapter, values in bounded.group_by("chapter"):
        rel_ = draws.filter(pl.col("chapter") == chapter[0])["cost_median"].to_numpy()
        share = float(covered(rel_, values["cost"].to_numpy(), cands, 0.5, r).mean())
        assert share >= LEVEL - tolerance(LEVEL, runs), (chapter, share, r)

    # the release itself: a candidate, no value interval, rank error per cell
    df = pl.read_parquet(rel.release_dir(lang_home, m.release_id) / "data/cost_by_chapter.parquet")
    shown = df.filter(pl.col("cost_median").is_not_null())
    assert shown.height > 0 and set(shown["cost_median"]) <= set(cands.tolist())
    assert df["cost_median_ci95"].null_count() == df.height
    assert df.filter(pl.col("persons").is_null(), pl.col("cost_median").is_not_null()).height == 0
    cells = [c for c in m.accuracy if c.measure == "cost_median"]
    assert all(c.rank_error is not None and math.isclose(c.rank_error, r) for c in cells)
    for c in cells:
        if c.suppressed:
            assert c.relative_rank_error is None and c.estimate is None
        else:
            assert c.relative_rank_error is not None and c.relative_rank_error <= 0.5
    # some medians are withheld by their rank error while their count is shown
    withheld = {
        c.key["chapter"] for c in cells if c.reason and "rank error reaches past" in c.reason
    }
    counted = set(df.filter(pl.col("persons").is_not_null())["chapter"])
    assert withheld and withheld <= counted


def test_a_heavy_contributor_stays_bounded(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """One person with 400 settlements of 1 000 000 yuan in 2025 adds at most one row per
    cell, at most `contributions` cells, each value clipped to the bounds; so every
    candidate's rank error moves by at most max(q, 1 − q) per cell, which is what OpenDP's
    map for one row per cell charges."""
    f = frames()
    ybjs = f["YBJS"]
    pid = ybjs.filter(pl.col("就诊日期").dt.year() == 2025)["公民身份号码"][0]
    row = ybjs.filter(pl.col("公民身份号码") == pid).head(1)
    heavy = pl.concat([row] * 400).with_columns(
        结算单号=pl.format("H{}", pl.int_range(400)),
        就诊日期=pl.date(2025, 1, 1) + pl.duration(days=pl.int_range(400) % 365),
        医疗总费用=pl.lit(1_000_000.0),
    )
    f["YBJS"] = pl.concat([ybjs, heavy])
    ingest_frames(home, f, ["RKJBXX", "YBJS"])
    got = _capture(monkeypatch)
    spec = specs.get(MED)
    engine.build(home, spec)
    plan = got["plans"]["visit_cost_by_district_quarter"]
    mine = plan.filter(pl.col(qc.UNIT_COL) == pid)
    assert 1 <= mine.height <= spec.privacy_unit.contributions  # type: ignore[union-attr]
    assert mine["visit_cost"].max() <= 20000  # type: ignore[operator]
    assert plan.group_by(qc.UNIT_COL, "district", "quarter").len()["len"].max() == 1
    cands = np.array([float(c) for c in GRID])
    for cell in mine.iter_rows(named=True):
        same = plan.filter(
            pl.col("district") == cell["district"], pl.col("quarter") == cell["quarter"]
        )
        with_ = rank_errors(same["visit_cost"].to_numpy(), cands, 0.5)
        without = rank_errors(
            same.filter(pl.col(qc.UNIT_COL) != pid)["visit_cost"].to_numpy(), cands, 0.5
        )
        assert np.abs(with_ - without).max() <= 0.5 + 1e-9


# --- refusals before the charge -------------------------------------------------------------


def _refused(home: Home, product: Any, exc: type[Exception], match: str, outcome: str) -> dict:
    with pytest.raises(exc, match=match):
        engine.build(home, product)
    assert ledger.all_entries(home) == []  # nothing charged, nothing voided
    last = [e for e in audit.entries(home) if e["action"] == "product.build"][-1]
    assert last["outcome"] == outcome and last["object"] == MED
    return dict(last["details"])


def _spec_file(spec_dir: Any, change: Any) -> None:
    path = spec_dir / f"{MED}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data["tables"][1]["measures"][1])
    data["version"] = "1.1.1"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_unsorted_candidates_are_refused_before_the_charge(lang_home: Home, spec_dir: Any) -> None:
    """A spec file with descending candidates: refused when the build loads it (audited);
    a spec object built around the validators: refused again when the build is planned."""
    spec = specs.get(MED)  # valid, before the file is broken
    _spec_file(spec_dir, lambda m: m.update(candidates=list(reversed(m["candidates"]))))
    details = _refused(lang_home, MED, ValidationError, "candidates must ascend", "error")
    assert "candidates must ascend" in details["error"]

    # around the validators (model_copy does not validate)
    t = spec.tables[1]
    bad = t.measures[1].model_copy(update={"candidates": [500.0, 100.0, 2000.0]})
    table = t.model_copy(update={"measures": [t.measures[0], bad]})
    sneaky = spec.model_copy(update={"tables": [spec.tables[0], table], "version": "1.1.2"})
    details = _refused(lang_home, sneaky, ValidationError, "strictly ascend", "error")
    assert re.search("visit_cost_median: candidates must strictly ascend", details["error"])


def test_candidates_outside_the_value_bounds_are_refused(lang_home: Home) -> None:
    spec = specs.get(MED)
    data = spec.model_dump(mode="json", by_alias=True)
    data["tables"][1]["measures"][1]["candidates"] = [*GRID, 50000]
    with pytest.raises(ValidationError, match=r"outside the bounds \[0\.0, 20000\.0\]"):
        specs.parse(data, "test")
    t = spec.tables[1]
    bad = t.measures[1].model_copy(update={"candidates": [-100.0, *map(float, GRID)]})
    table = t.model_copy(update={"measures": [t.measures[0], bad]})
    sneaky = spec.model_copy(update={"tables": [spec.tables[0], table], "version": "1.1.3"})
    _refused(lang_home, sneaky, ValidationError, "outside the bounds", "error")


def test_a_quantile_without_a_count_is_refused() -> None:
    data = specs.get(MED).model_dump(mode="json", by_alias=True)
    data["tables"][1]["measures"] = data["tables"][1]["measures"][1:]
    with pytest.raises(ValidationError, match="a quantile needs a count measure"):
        specs.parse(data, "test")


def test_too_many_candidates_are_refused_by_the_floor(lang_home: Home) -> None:
    data = specs.get(MED).model_dump(mode="json", by_alias=True)
    data["tables"][1]["measures"][1]["candidates"] = [float(x) for x in range(0, 15000, 100)]
    data["version"] = "1.1.4"
    details = _refused(
        lang_home, specs.parse(data, "test"), PermissionDenied, "privacy_floors", "refused"
    )
    assert details["check"] == "privacy_floors"
    assert any("150 candidates exceed the ceiling 100" in v for v in details["violations"])


# --- the shipped product ----------------------------------------------------------------------


def test_medical_report_releases_a_median_with_its_rank_error(lang_home: Home) -> None:
    spec = specs.get(MED)
    m = engine.build(lang_home, spec).manifest
    mech = next(x for x in m.mechanisms if x.output == "visit_cost_by_district_quarter")
    quant = next(x for x in mech.measures if x.column == "visit_cost_median")
    r = quant.rank_error
    assert r is not None and r > 0 and quant.candidates == len(GRID)
    assert quant.ci_half_width is None
    # the plan (no data, no charge) states the same rank error the build used
    planned = next(p for p in planning.plan(spec) if p.measure == "visit_cost_median")
    assert math.isclose(planned.half_width, r)
    # accuracy-first: the ρ at which the rank error is at most 10 ranks, found before a charge
    want = next(p for p in planning.plan(spec, {"visit_cost_median": 10.0}) if p.target is not None)
    assert spec.budget is not None and want.rho_needed is not None
    assert want.rho_needed > spec.budget.zcdp_rho
    budget = spec.budget.model_copy(update={"rho": want.rho_needed})
    at = spec.model_copy(update={"budget": budget})
    r_at = next(p for p in planning.plan(at) if p.measure == "visit_cost_median").half_width
    assert 9.0 <= r_at <= 10.0
    assert math.isclose(sum(x.rho for x in mech.measures), mech.rho, rel_tol=1e-9)
    rdir = rel.release_dir(lang_home, m.release_id)
    df = pl.read_parquet(rdir / "data/visit_cost_by_district_quarter.parquet")
    shown = df.filter(pl.col("visit_cost_median").is_not_null())
    assert shown.height > 0 and set(shown["visit_cost_median"]) <= set(map(float, GRID))
    html = (rdir / "report.html").read_text(encoding="utf-8")
    assert "中位数" in html and f"秩误差 ±{math.ceil(r)}" in html
    col = next(
        c
        for o in m.outputs
        if o.path.endswith("visit_cost_by_district_quarter.parquet")
        for c in o.columns
        if c.name == "visit_cost_median"
    )
    assert "ranks" in col.description and col.operator == "dp_aggregate"


def test_one_row_per_cell_is_what_is_charged_and_assessed(lang_home: Home) -> None:
    """The language declares one row per unit and cell in at most k cells. With k = 8 and a
    table of 4 cells a unit changes at most 4 cells by one row: OpenDP charges the count
    4/(2σ²), and the assessment's independent recomputation of ρ from the recorded scales
    (ledger_tied) agrees instead of reading k = 8 rows into it."""
    from assessment.engine import assess

    data = specs.get(MED).model_dump(mode="json", by_alias=True)
    data["privacy_unit"]["contributions"] = 8
    data["tables"] = [
        {
            "name": "by_quarter",
            "title": "按季度",
            "title_en": "By quarter",
            "by": ["quarter"],
            "measures": [{"name": "persons", "title": "结算人数", "aggregate": "count"}],
        }
    ]
    data["version"] = "1.6.0"
    m = engine.build(lang_home, specs.parse(data, "test")).manifest
    (mech,) = m.mechanisms
    (persons,) = mech.measures
    assert math.isclose(persons.rho, mech.rho, rel_tol=1e-9)
    assert math.isclose(persons.rho, 4 / (2 * persons.scale**2), rel_tol=1e-6)
    a = assess(lang_home, m.release_id)
    tied = next(c for c in a.checks if c.name == "ledger_tied")
    assert tied.status == "pass", tied.evidence
