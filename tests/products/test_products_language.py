"""The product language: specs compiled to bounded plans and measured; refusals before charge."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import polars as pl
import pytest
from products_testkit import frames, ingest_frames, with_changes

from governance import audit
from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home

NEW = ("medical_settlement_report", "market_entity_report", "si_monthly_contributions")


@pytest.fixture()
def lang_home(home: Home) -> Home:
    ingest_frames(home, frames(), ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"])
    return home


@pytest.mark.parametrize("product", NEW)
def test_new_products_build_from_specs_only(lang_home: Home, product: str) -> None:
    out = engine.build(lang_home, product)
    m = out.manifest
    assert m.budget is not None and m.mechanisms
    spec = specs.get(product)
    for t in spec.tables:
        df = pl.read_parquet(
            rel.release_dir(lang_home, m.release_id) / "data" / f"{t.name}.parquet"
        )
        # Public keys: every cell of the cross product, whatever the data holds.
        assert df.height == specs.key_frame(spec, list(t.by)).height
    # Lineage: every column of every table names its sources and derivation.
    for o in m.outputs:
        for c in o.columns:
            assert c.operator is not None, (o.path, c.name)


MED = "medical_settlement_report"
MARKET = "market_entity_report"


def _with_query(spec_id: str, version: str, **changes: Any) -> Any:
    spec = specs.get(spec_id)
    assert spec.query is not None
    query = spec.query.model_dump(mode="json", by_alias=True)
    query.update(changes)
    return with_changes(spec, version=version, query=query)


def _refused_before_charge(home: Home, spec: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        engine.build(home, spec)
    assert ledger.all_entries(home) == []  # nothing charged, nothing voided
    last = [e for e in audit.entries(home) if e["action"] == "product.build"][-1]
    # A spec error is audited as an error (exit 2), with the one-line reason.
    assert last["outcome"] == "error" and last["object"] == spec.id
    assert re.search(match, str(last["details"]["error"]))


def test_unknown_field_is_refused_before_the_charge(lang_home: Home) -> None:
    spec = specs.get(MED)
    assert spec.query is not None
    derive = [d.model_dump(by_alias=True) for d in spec.query.derive]
    derive[1]["field"] = "诊断代码"  # not a YBJS field
    _refused_before_charge(
        lang_home, _with_query(MED, "1.0.1", derive=derive), "unknown field YBJS.诊断代码"
    )


def test_undeclared_column_is_refused_before_the_charge(lang_home: Home) -> None:
    spec = specs.get(MED)
    assert spec.query is not None
    derive = [d.model_dump(by_alias=True) for d in spec.query.derive]
    derive[0]["field"] = "RKJBXX.性别"  # catalogued, but not declared under inputs
    _refused_before_charge(
        lang_home, _with_query(MED, "1.0.2", derive=derive), "not declared under inputs"
    )


def test_bad_dimension_word_is_refused_before_the_charge(lang_home: Home) -> None:
    spec = specs.get(MED)
    assert spec.query is not None
    derive = [d.model_dump(by_alias=True) for d in spec.query.derive]
    derive[0] = {"dimension": "district", "field": "诊断编码", "as": "age_band"}
    _refused_before_charge(
        lang_home, _with_query(MED, "1.0.3", derive=derive), "needs bands as its key set"
    )


def test_join_off_the_unit_and_references_is_refused(lang_home: Home) -> None:
    joins = [{"resource": "RKJBXX", "key": "诊断编码", "field": "户籍区划代码"}]
    _refused_before_charge(
        lang_home, _with_query(MED, "1.0.4", joins=joins), "neither on the privacy unit"
    )


def test_spec_level_mistakes_are_refused_at_validation() -> None:
    spec = specs.get(MED)
    data = spec.model_dump(mode="json", by_alias=True)
    data["tables"][0]["measures"][2]["bounds"] = [0, 50000]  # differs from value cost
    with pytest.raises(ValidationError, match="differ from value"):
        specs.parse(data)
    data = spec.model_dump(mode="json", by_alias=True)
    data["query"]["derive"] = data["query"]["derive"][:2]  # quarter not derived
    with pytest.raises(ValidationError, match="cover exactly the declared dimensions"):
        specs.parse(data)


def test_join_below_its_match_rate_is_refused_before_the_charge(home: Home) -> None:
    f = frames()
    half = f["RKJBXX"].filter(pl.col("公民身份号码").hash(7) % 2 == 0)
    ingest_frames(home, {"RKJBXX": half, "YBJS": f["YBJS"]}, ["RKJBXX", "YBJS"])
    _refused_before_charge(home, specs.get(MED), "join match rate too low: RKJBXX matches")


def _truth_market() -> pl.DataFrame:
    from products.language.vocabulary import mapping

    firms = frames()["SCZTDJ"].filter(
        pl.col("登记状态").is_in(["存续", "在业"]),
        pl.col("成立日期") <= pl.date(2025, 12, 31),
        pl.col("统一社会信用代码").is_not_null(),
    )
    sections = {lo[0]: code for lo, _hi, code in mapping("gbt4754_section")}
    return (
        firms.with_columns(
            section=pl.col("行业代码").str.slice(0, 1).replace_strict(sections, default=None),
            district=pl.col("区划代码"),
            capital=pl.col("注册资本").fill_null(0).clip(0, 1000).round(0),
        )
        .drop_nulls(["section", "district"])
        .unique(subset=["统一社会信用代码"])
        .group_by("section", "district")
        .agg(true_entities=pl.len(), true_capital=pl.col("capital").sum())
    )


def test_market_report_noise_matches_the_declared_scale(lang_home: Home) -> None:
    out = engine.build(lang_home, MARKET)
    m = out.manifest
    scale = {
        n.column: n.scale
        for mech in m.mechanisms
        if mech.output == "by_section_district"
        for n in mech.measures
    }
    df = pl.read_parquet(
        rel.release_dir(lang_home, m.release_id) / "data/by_section_district.parquet"
    )
    got = df.join(_truth_market(), on=["section", "district"], how="left").fill_null(0)
    # A cell of the public key set with no entity is released as noise around 0.
    assert got.height == 20 * 6
    shown = got.filter(~pl.col("suppressed"))
    assert shown.height > 0
    # |noise| ≤ 6σ for every shown cell: P(violation) < 120 · 2e-9 under the declared σ.
    for measure, truth in (("entities", "true_entities"), ("capital", "true_capital")):
        err = (shown[measure].cast(pl.Float64) - shown[truth].cast(pl.Float64)).to_numpy()
        assert abs(err).max() <= 6 * scale[measure] + 1, measure


def test_noise_rms_matches_the_declared_scale(lang_home: Home) -> None:
    """All 120 cells of one draw (suppressed ones included, read from the raw draw): the RMS
    error of 120 N(0, σ²) draws lies in [0.7σ, 1.3σ] except with probability < 1e-6 (χ² with
    120 degrees of freedom)."""
    from catalogs.catalog import Catalog
    from products.language.builder import LanguageReportBuilder
    from shuyu_core import snapshots

    spec = specs.get(MARKET)
    inputs = {"SCZTDJ": snapshots.get(lang_home, "SCZTDJ", None)}
    ctx = engine.BuildContext(
        lang_home, spec, Catalog.load(), inputs, "rms-test", engine.BuildOptions(), []
    )
    draw = LanguageReportBuilder().draw(ctx)
    sigma = {n["column"]: n["scale"] for n in draw.meta["noise"]["by_section_district"]}
    raw = draw.tables["by_section_district"]
    got = raw.join(_truth_market(), on=["section", "district"], how="left").fill_null(0)
    assert got.height == 120
    err = (got["entities"].cast(pl.Float64) - got["true_entities"].cast(pl.Float64)).to_numpy()
    rms = math.sqrt(float((err**2).mean()))
    assert 0.7 * sigma["entities"] <= rms <= 1.3 * sigma["entities"]


def _noise(column: str, scale: float, accuracy: float) -> dict[str, Any]:
    return {
        "column": column,
        "aggregate": "sum",
        "distribution": "Integer Gaussian",
        "scale": scale,
        "accuracy": accuracy,
        "alpha": 0.05,
        "rho": 0.1,
    }


def test_a_derived_value_is_withheld_with_its_withheld_input() -> None:
    """Correction 1: cost withheld (relative error) ⇒ cost_per_person withheld too, else
    cost_per_person × persons would give the withheld cost back."""
    from products.tables import finish_table

    spec = specs.get(MED)
    table = spec.tables[0]
    keys = specs.key_frame(spec, list(table.by))
    n = keys.height
    cost = [10.0] + [5_000_000.0] * (n - 1)  # cell 0: cost far inside its noise
    raw = keys.with_columns(
        persons=pl.lit(500, pl.Int64),
        settlements=pl.lit(900, pl.Int64),
        cost=pl.Series(cost),
    )
    meta = {
        "noise": {
            table.name: [
                _noise("persons", 10.0, 20.0),
                _noise("settlements", 10.0, 20.0),
                _noise("cost", 200_000.0, 400_000.0),
            ]
        }
    }
    out = finish_table(spec, table, raw, meta, "test-release").frame
    first, second = out.row(0, named=True), out.row(1, named=True)
    assert first["persons"] == 500 and first["cost"] is None
    assert first["cost_per_person"] is None
    assert "cost_per_person: an input it depends on is withheld" in first["suppression_reason"]
    assert second["cost"] is not None and second["cost_per_person"] is not None


@pytest.mark.parametrize("sigma", [2.0, 7.5, 40.0])
def test_stated_count_interval_level_is_the_actual_level(sigma: float) -> None:
    """Correction 3: the half-width of integer noise covers exactly its stated level. Draws of
    OpenDP's own discrete Gaussian sampler; tolerance 5 standard errors of a proportion."""
    import opendp.prelude as dp

    from privacy.dp.accuracy import discrete_gaussian_half_width

    dp.enable_features("contrib")
    h, level = discrete_gaussian_half_width(sigma, 0.05)
    assert level >= 0.95
    assert discrete_gaussian_half_width(sigma, 1 - level + 1e-9)[0] == h
    runs = 40_000
    meas = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T=int), size=runs), dp.l2_distance(T=int), scale=sigma
    )
    noise = np.asarray(meas([0] * runs))
    covered = float(np.mean(np.abs(noise) <= h))
    assert abs(covered - level) <= 5 * math.sqrt(level * (1 - level) / runs)
    # The interval one integer narrower covers less than 95 %: h is the smallest.
    assert float(np.mean(np.abs(noise) <= h - 1)) < 0.95 + 5 * math.sqrt(0.05 * 0.95 / runs)


def test_one_epsilon_convention_and_the_data_period_pays(lang_home: Home) -> None:
    """Corrections 5 and 6: release.json states the ledger's ε (its δ), and the charge is
    booked in the data's reference period (2025), whatever the build date."""
    from catalogs.product_models import epsilon_from_rho

    m = engine.build(lang_home, MED).manifest
    assert m.budget is not None
    entries = ledger.entries_for_release(lang_home, m.release_id)
    assert {e.period for e in entries} == {"2025"}
    assert {e.resource for e in entries} == {"YBJS", "RKJBXX"}
    for e in entries:
        assert m.budget.epsilon == pytest.approx(e.epsilon)
        assert m.budget.delta == e.delta
    assert m.budget.epsilon == pytest.approx(epsilon_from_rho(m.budget.rho, m.budget.delta))
    assert ledger.show(lang_home, "YBJS", period="2025")["budgets"][0]["releases"] == 1


def test_the_binding_limit_is_per_unit_across_resources(lang_home: Home) -> None:
    """Correction 6: persons are one unit across YBJS, RKJBXX and SBCBJF; the domain's
    per-unit ceiling (2.0 per year) binds over all of them, each release counted once."""
    from catalogs.product_models import ProductSpec

    builds: list[ProductSpec] = [
        with_changes(specs.get(MED), version="2.0.0", budget={"rho": 0.9, "delta": 1e-7}),
        with_changes(specs.get("si_monthly_contributions"), version="2.0.0", budget={"rho": 0.9}),
    ]
    for spec in builds:
        engine.build(lang_home, spec)
    third = with_changes(specs.get("si_enrolment_report"), version="2.0.0")  # ρ 0.5
    # Each resource's own line has room (SBCBJF 1.1, RKJBXX 1.1 left); the person does not.
    with pytest.raises(PermissionDenied, match=r"ρ per 公民身份号码 in 2025 would reach 2\.3"):
        engine.build(lang_home, third)
    last = [e for e in audit.entries(lang_home) if e["action"] == "product.build"][-1]
    assert last["outcome"] == "refused" and last["details"]["check"] == "privacy_floors"
    assert {e.version for e in ledger.all_entries(lang_home)} == {"2.0.0"}
    assert len({e.release_id for e in ledger.all_entries(lang_home)}) == 2


def test_difference_and_share_with_simulated_intervals_and_dependencies() -> None:
    """Shares sum to 1 over the table and are withheld all together when one cell is;
    a difference's simulated half-width matches z·sqrt(σ₁² + σ₂²) within simulation error."""
    from catalogs.product_models import TableSpec
    from products.tables import finish_table

    spec = specs.get(MARKET)
    table = TableSpec.model_validate(
        {
            "name": "t",
            "title": "t",
            "title_en": "t",
            "by": ["section"],
            "measures": [
                {"name": "a", "title": "a", "aggregate": "count"},
                {"name": "b", "title": "b", "aggregate": "count"},
            ],
            "derived": [
                {"name": "a_share", "title": "s", "op": "share", "numerator": "a"},
                {
                    "name": "a_minus_b",
                    "title": "d",
                    "op": "difference",
                    "numerator": "a",
                    "denominator": "b",
                },
            ],
        }
    )
    keys = specs.key_frame(spec, ["section"])
    n = keys.height
    meta = {"noise": {"t": [_noise("a", 3.0, 6.0), _noise("b", 4.0, 8.0)]}}
    raw = keys.with_columns(a=pl.lit(1000, pl.Int64), b=pl.lit(400, pl.Int64))
    out = finish_table(spec, table, raw, meta, "r").frame
    assert out["a_share"].sum() == pytest.approx(1.0, abs=1e-6)
    hw = out["a_minus_b_ci95"].to_numpy()
    # 4000 simulations: the 95% half-width's relative standard error is about 2%.
    assert np.all(np.abs(hw / (1.96 * 5.0) - 1) < 0.1)
    small = raw.with_columns(a=pl.when(pl.int_range(n) == 0).then(1).otherwise(1000))
    out = finish_table(spec, table, small, meta, "r").frame
    assert out["a"][0] is None  # below the suppression threshold
    assert out["a_share"].null_count() == n  # every share withheld with it
    assert out["a_minus_b"][0] is None and out["a_minus_b"][1] is not None


def test_unit_first_plan_equals_the_row_plan(lang_home: Home) -> None:
    """The unit-first shortcut (reduce the base per unit, then join) gives exactly the cells
    of the general plan (join every row, group by unit and cell, cap the cells)."""
    from catalogs.catalog import Catalog
    from products.language import compile as qc
    from shuyu_core import snapshots

    spec = specs.get("si_enrolment_report")
    inputs = {i.resource: snapshots.get(lang_home, i.resource, None) for i in spec.inputs}
    ctx = engine.BuildContext(
        lang_home, spec, Catalog.load(), inputs, "plans", engine.BuildOptions(), []
    )
    rows = qc.rows(ctx)
    for t in spec.tables:
        fast = qc.unit_first(ctx, t)
        assert fast is not None  # every dimension comes from RKJBXX joined on the unit
        cols = [qc.UNIT_COL, *t.by, *sorted({m.field for m in t.measures if m.field})]
        a = fast.select(cols).collect().sort(qc.UNIT_COL)
        b = qc.bounded(spec, rows, t).select(cols).collect().sort(qc.UNIT_COL)
        assert a.height > 100 and a.equals(b)
    # A dimension from the base (a date) can give a unit several cells: no shortcut.
    med = specs.get(MED)
    med_ctx = engine.BuildContext(
        lang_home,
        med,
        Catalog.load(),
        {i.resource: snapshots.get(lang_home, i.resource, None) for i in med.inputs},
        "plans-med",
        engine.BuildOptions(),
        [],
    )
    assert qc.unit_first(med_ctx, med.tables[0]) is None


def test_plan_predicts_the_build_noise_and_the_rho_for_a_target(lang_home: Home) -> None:
    """`shuyu products plan`: the planned σ and half-width are the ones the build records;
    the ρ it names for a target half-width reaches it, and 2% less ρ does not."""
    from products import planning

    spec = specs.get(MARKET)
    planned = {(p.table, p.measure): p for p in planning.plan(spec, {"entities": 2.0})}
    assert ledger.all_entries(lang_home) == []  # planning charges nothing
    m = engine.build(lang_home, spec).manifest
    for mech in m.mechanisms:
        for x in mech.measures:
            p = planned[(mech.output, x.column)]
            assert p.scale == pytest.approx(x.scale, rel=1e-6)
            assert p.half_width == pytest.approx(x.ci_half_width)
    p = planned[("by_section_district", "entities")]
    assert spec.budget is not None
    assert p.rho_needed is not None and p.half_width > 2 and p.rho_needed > spec.budget.zcdp_rho
    at = {"rho": p.rho_needed, "delta": spec.budget.delta}
    enough = planning.plan(with_changes(spec, budget=at))
    assert next(x for x in enough if x.table == p.table and x.measure == "entities").half_width <= 2
    short = {"rho": p.rho_needed * 0.98, "delta": spec.budget.delta}
    less = planning.plan(with_changes(spec, budget=short))
    assert next(x for x in less if x.table == p.table and x.measure == "entities").half_width > 2


def test_a_field_of_a_resource_not_joined_is_refused(lang_home: Home) -> None:
    filters = [{"field": "RKJBXX.性别", "op": "eq", "value": "男"}]
    spec = _with_query(MED, "1.0.8", filters=filters, joins=[])
    _refused_before_charge(lang_home, spec, "RKJBXX is neither the base nor joined")
