"""A verification release whose outputs tell a consent state or carry identifier-shaped query
ids (as a faulty builder would write them) fails ``result_only`` (issue 12, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from assessment_testkit import PRODUCT_VER, forge

from assessment.engine import assess
from shuyu_core.home import Home


def _rewrite(mutate: Any) -> Any:
    def apply(stage: Path, doc: dict[str, Any]) -> None:
        for out in doc["outputs"]:
            path = stage / out["path"]
            if out["format"] == "parquet":
                mutate(pl.read_parquet(path)).write_parquet(path)
            elif out["format"] == "csv":
                mutate(pl.read_csv(path, infer_schema=False)).write_csv(path)
            elif out["format"] == "json":
                mutate(pl.read_json(path)).write_json(path)

    return apply


def test_consent_state_in_reasons_fails(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo

    def tell(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(pl.col("reason").is_not_null())
            .then(pl.lit("consent_expired"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )

    a = assess(home, forge(home, releases[PRODUCT_VER], "told", _rewrite(tell)))
    check = a.check("result_only")
    assert check.status == "fail" and "consent_expired" in check.evidence
    assert a.verdict == "fail"


def test_identifier_query_id_fails(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo

    def leak(df: pl.DataFrame) -> pl.DataFrame:
        ids = df["query_id"].cast(pl.String).to_list()
        ids[1] = "13812345678"
        return df.with_columns(pl.Series("query_id", ids))

    a = assess(home, forge(home, releases[PRODUCT_VER], "leak", _rewrite(leak)))
    check = a.check("result_only")
    assert check.status == "fail" and "row 2" in check.evidence
    assert "13812345678" not in check.evidence
