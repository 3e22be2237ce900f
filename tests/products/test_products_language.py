"""The product language: specs compiled to bounded plans and measured; refusals before charge."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from products_testkit import frames, ingest_frames

from privacy.dp import ledger
from products import engine, specs
from products import release as rel
from shuyu_core.home import Home

NEW = ("medical_settlement_report", "market_entity_report", "si_monthly_contributions")


@pytest.fixture()
def lang_home(home: Home) -> Home:
    ingest_frames(home, frames(), ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"])
    return home


def _charges(home: Home) -> list[Any]:
    return [e for e in ledger.entries(home) if e.state != "void"]


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
