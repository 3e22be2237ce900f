"""Build schedules come from the catalog: the slowest input's update frequency."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from catalogs.catalog import Catalog
from pipelines import schedules
from products import specs
from shuyu_core.home import Home


def test_a_monthly_product_is_built_on_the_first_of_the_month_in_shanghai() -> None:
    catalog = Catalog.load()
    spec = specs.get("si_enrolment_report")  # SBCBJF and RKJBXX, both monthly
    assert {catalog.get(i.resource).update_frequency.value for i in spec.inputs} == {"monthly"}
    assert schedules.product_cron(spec, catalog) == "0 2 1 * *"


def test_the_slowest_input_sets_the_cycle() -> None:
    catalog = Catalog.load()
    daily_only = specs.get("business_vitality_index")  # SCZTDJ, daily
    assert schedules.product_cron(daily_only, catalog) == "0 2 * * *"
    mixed = specs.get("medical_desensitized_extract")  # YBJS daily + RKJBXX monthly
    freqs = {catalog.get(i.resource).update_frequency.value for i in mixed.inputs}
    assert freqs == {"daily", "monthly"}
    assert schedules.product_cron(mixed, catalog) == "0 2 1 * *"


def test_render_writes_inactive_build_schedules_and_skips_verification(
    home: Home, tmp_path: Path
) -> None:
    from pipelines import cli

    cli._register()
    out = tmp_path / "prefect.catalog.yaml"
    result = CliRunner().invoke(cli.app, ["deployments", "render", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))
    by_name = {d["name"]: d for d in doc["deployments"]}
    assert "build-identity-verification" not in by_name  # built per batch of queries
    monthly = by_name["build-si-enrolment-report"]
    (schedule,) = monthly["schedules"]
    assert schedule == {
        "cron": "0 2 1 * *",
        "timezone": "Asia/Shanghai",
        "active": False,
        "parameters": {"requested_by": "{{ $SHUYU_SCHEDULED_BY }}"},
    }
    assert monthly["parameters"] == {"product": "si_enrolment_report"}
    # The same pool, environment and pull step as prefect.yaml.
    base = yaml.safe_load(schedules.PREFECT_YAML.read_text(encoding="utf-8"))
    assert monthly["work_pool"] == base["definitions"]["work_pool"]
    assert doc["pull"] == base["pull"]


def test_a_resource_with_a_source_is_pulled_on_its_update_frequency() -> None:
    catalog = Catalog.load()
    doc = schedules.render(catalog, specs.load_all())
    pulls = {d["name"]: d for d in doc["deployments"] if d["name"].startswith("pull-")}
    with_source = {c for c, r in catalog.resources.items() if r.source is not None}
    assert "SCZTDJ" in with_source  # shipped: the market regulator's 前置库 table
    assert set(pulls) == {"pull-" + c.lower() for c in with_source}
    daily = pulls["pull-scztdj"]
    assert daily["entrypoint"] == "pipelines/flows.py:ingest_flow"
    assert daily["parameters"] == {"code": "SCZTDJ"}  # no source path: pull what is new
    (sched,) = daily["schedules"]
    assert (sched["cron"], sched["timezone"], sched["active"]) == (
        "0 1 * * *",
        "Asia/Shanghai",
        True,
    )
