"""Deployment schedules from the catalog: the catalog, not a hand-edited prefect.yaml, says
how often each resource is pulled from its declared source and each product is built.

A product can be no fresher than its slowest input, so its build runs on the cron of the
slowest input's ``update_frequency``, at 02:00 Asia/Shanghai, after that night's ingests
(01:00). Verification products are built per batch of queries and get no schedule. The
rendered file is a prefect.yaml of its own (the same pool, environment and pull step as
``prefect.yaml``): ``prefect --no-prompt deploy --all --prefect-file prefect.catalog.yaml``.
Schedules are rendered inactive unless asked for: an active build schedule spends privacy
budget on its own, so an operator turns it on knowingly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from catalogs.vocabulary import UpdateFrequency

TIMEZONE = "Asia/Shanghai"
PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"

# Slowest last. A realtime source is still built at most daily: each build charges the budget.
_ORDER = [
    UpdateFrequency.REALTIME,
    UpdateFrequency.DAILY,
    UpdateFrequency.WEEKLY,
    UpdateFrequency.MONTHLY,
    UpdateFrequency.QUARTERLY,
    UpdateFrequency.YEARLY,
]
BUILD_CRON = {
    UpdateFrequency.REALTIME: "0 2 * * *",
    UpdateFrequency.DAILY: "0 2 * * *",
    UpdateFrequency.WEEKLY: "0 2 * * 1",  # Mondays
    UpdateFrequency.MONTHLY: "0 2 1 * *",
    UpdateFrequency.QUARTERLY: "0 2 1 1,4,7,10 *",
    UpdateFrequency.YEARLY: "0 2 1 1 *",
}


# Pulls run at 01:00, an hour before the builds; a realtime source is pulled every 15 min.
PULL_CRON = {
    UpdateFrequency.REALTIME: "*/15 * * * *",
    UpdateFrequency.DAILY: "0 1 * * *",
    UpdateFrequency.WEEKLY: "0 1 * * 1",
    UpdateFrequency.MONTHLY: "0 1 1 * *",
    UpdateFrequency.QUARTERLY: "0 1 1 1,4,7,10 *",
    UpdateFrequency.YEARLY: "0 1 1 1 *",
}


def pull_deployments(catalog: Catalog, pool: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``pull-<code>`` deployment per resource that declares a ``source:``. A pull spends
    no privacy budget, so its schedule is active: it takes only what is new."""
    out = []
    for code, res in sorted(catalog.resources.items()):
        if res.source is None:
            continue
        out.append(
            {
                "name": "pull-" + code.lower(),
                "description": f"Pull what is new of {res.name} ({code}) from its "
                f"{res.source.kind} and check it, {res.update_frequency.value} (rendered from "
                "the catalog by `shuyu deployments render`).",
                "entrypoint": "pipelines/flows.py:ingest_flow",
                "parameters": {"code": code},
                "schedules": [
                    {
                        "cron": PULL_CRON[res.update_frequency],
                        "timezone": TIMEZONE,
                        "active": True,
                        "parameters": {"requested_by": "{{ $SHUYU_SCHEDULED_BY }}"},
                    }
                ],
                "work_pool": copy.deepcopy(pool),
            }
        )
    return out


def product_frequency(spec: ProductSpec, catalog: Catalog) -> UpdateFrequency:
    """The update frequency of the product's slowest input."""
    freqs = [catalog.get(i.resource).update_frequency for i in spec.inputs]
    return max(freqs, key=_ORDER.index)


def product_cron(spec: ProductSpec, catalog: Catalog) -> str:
    return BUILD_CRON[product_frequency(spec, catalog)]


def deployment_name(product_id: str) -> str:
    return "build-" + product_id.replace("_", "-")


def render(
    catalog: Catalog, specs: dict[str, ProductSpec], *, active: bool = False
) -> dict[str, Any]:
    """A prefect.yaml document with one scheduled build deployment per schedulable product."""
    base = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    pool = base["definitions"]["work_pool"]
    deployments = pull_deployments(catalog, pool)
    for pid, spec in sorted(specs.items()):
        if spec.kind == "verification":
            continue
        freq = product_frequency(spec, catalog)
        deployments.append(
            {
                "name": deployment_name(pid),
                "description": f"Build {spec.name} ({pid}) on its inputs' {freq.value} "
                "update cycle (rendered from the catalog by `shuyu deployments render`).",
                "entrypoint": "pipelines/flows_products.py:build_flow",
                "parameters": {"product": pid},
                "schedules": [
                    {
                        "cron": BUILD_CRON[freq],
                        "timezone": TIMEZONE,
                        "active": active,
                        "parameters": {"requested_by": "{{ $SHUYU_SCHEDULED_BY }}"},
                    }
                ],
                "work_pool": copy.deepcopy(pool),
            }
        )
    return {
        "name": base["name"],
        "prefect-version": base["prefect-version"],
        "pull": base["pull"],
        "deployments": deployments,
    }


def render_text(doc: dict[str, Any]) -> str:
    header = (
        "# Rendered by `shuyu deployments render` from the catalog and the product specs; do\n"
        "# not edit (render again). Deploy: prefect --no-prompt deploy --all --prefect-file "
        "THIS_FILE\n"
    )
    return header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)
