"""Checks beyond the blocking ones: rectifiable findings, verification correctness, ids."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import polars as pl
from assessment_testkit import forge

from assessment.engine import assess
from pipelines.flows_assessment import artifact_key
from shuyu_core.home import Home


def test_totals_inconsistent_with_subtotals_is_rectify(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo

    def inflate(stage: Path, doc: dict[str, Any]) -> None:
        # one district: every sub-cell released, the total 500 above their sum
        sub_path = stage / "data" / "insured_by_district_age_sex.parquet"
        sub = pl.read_parquet(sub_path)
        first = sub["district"][0]
        mine = pl.col("district") == first
        sub = sub.with_columns(
            pl.when(mine).then(pl.col("insured").fill_null(10)).otherwise(pl.col("insured")),
            pl.when(mine).then(pl.lit(False)).otherwise(pl.col("suppressed")).alias("suppressed"),
        )
        sub.write_parquet(sub_path)
        total = int(sub.filter(mine)["insured"].sum()) + 500
        path = stage / "data" / "contribution_base_by_district.parquet"
        df = pl.read_parquet(path)
        df = df.with_columns(
            pl.when(mine).then(pl.lit(total)).otherwise(pl.col("insured")).alias("insured")
        )
        df.write_parquet(path)
        doc["outputs"] = [o for o in doc["outputs"] if o["format"] != "csv"]

    bad = forge(home, releases["si_enrolment_report"], "totals", inflate)
    a = assess(home, bad)
    totals = a.check("totals")
    assert totals.status == "warn"
    assert "1 outside" in totals.evidence
    # the forged release also has no ledger entry of its own: that blocks
    assert a.check("ledger_tied").status == "fail" and a.verdict == "fail"


def test_verification_answering_wrongly_fails_correctness(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases["identity_verification"]
    ok = assess(home, rid).check("verification_correctness")
    assert ok.status == "pass" and "correct (100.0%)" in ok.evidence
    # corrupt the keyed index the release answered from: names no longer line up
    for path in (home.work / "verification").glob("RKJBXX-*.parquet"):
        idx = pl.read_parquet(path)
        idx.with_columns(pl.col("name_token").shift(1)).write_parquet(path)
    bad = assess(home, rid).check("verification_correctness")
    assert bad.status == "fail"
    assert "person:" in bad.evidence


def test_concurrent_assessments_get_distinct_ids(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases["identity_verification"]
    ids: list[str] = []

    def run() -> None:
        ids.append(assess(home, rid).assessment_id)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == [f"{rid}-A{n:03d}" for n in (1, 2, 3)]


def test_artifact_key_is_prefect_safe() -> None:
    key = artifact_key("si_enrolment_report-v1.0.0-f752ce6e9bcee165")
    assert key == "assessment-si-enrolment-report-v1-0-0-f752ce6e9bcee165"


def test_noise_scales_must_be_paid_for_by_the_charge(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases["si_enrolment_report"]
    good = assess(home, rid).check("ledger_tied")
    assert good.status == "pass" and "noise scales imply ρ=0.5" in good.evidence

    def less_noise(stage: Path, doc: dict[str, Any]) -> None:
        for cell in doc["accuracy"]:
            if cell["scale"] is not None and cell["method"] == "analytic":
                cell["scale"] = cell["scale"] / 2

    bad = forge(home, rid, "lessnoise", less_noise)
    ev = assess(home, bad).check("ledger_tied").evidence
    assert "the noise scales imply ρ=2" in ev and "more than the ρ=0.5 charged" in ev


def test_totals_compare_only_tables_where_each_unit_sits_in_one_cell() -> None:
    """A person counted in several diagnosis chapters of one district and quarter makes the
    chapter sub-totals add up to more than the district's distinct persons, by design: the
    totals check must not call that an inconsistency, and must still compare the tables
    whose cells partition the persons."""
    from assessment.checks import _units_partition
    from products.specs import get

    si = get("si_enrolment_report")
    by_name = {t.name: t for t in si.tables}
    assert _units_partition(
        si, by_name["contribution_base_by_district"], by_name["insured_by_district_age_sex"]
    )
    med = get("medical_settlement_report")
    tables = {t.name: t for t in med.tables}
    assert not _units_partition(
        med, tables["visit_cost_by_district_quarter"], tables["by_district_chapter_quarter"]
    )
