"""k-anonymity, distinct l-diversity and reaching k by generalization then suppression."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

import numpy as np
import polars as pl
import pytest

from catalogs.catalog import Catalog
from privacy.risk import (
    date_levels,
    declared_sensitive_attributes,
    enforce_k,
    hierarchy_for,
    k_anonymity,
    l_diversity,
    record_risk,
    region_levels,
    suppress_levels,
)
from shuyu_core.errors import ValidationError


def _people(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    regions = ["210802", "210803", "210804", "210811", "210881", "210882", "210102", "110105"]
    weights = np.array([20, 15, 20, 10, 15, 15, 4, 1], dtype=float)
    born = dt.date(1940, 1, 1)
    return pl.DataFrame(
        {
            "sex": rng.choice(["男", "女"], n),
            "region": rng.choice(regions, n, p=weights / weights.sum()),
            "birth": [born + dt.timedelta(days=int(d)) for d in rng.integers(0, 25000, n)],
            "diagnosis": pl.Series(rng.choice(["I10", "E11", "J06", "K29", ""], n)).replace(
                "", None
            ),
        }
    )


def test_k_anonymity_matches_a_direct_count() -> None:
    df = _people()
    qis = ["sex", "region"]
    report = k_anonymity(df.lazy(), qis)
    counts = Counter(zip(df["sex"], df["region"], strict=True))
    assert report.min_class_size == min(counts.values())
    assert report.records == df.height and report.classes.height == len(counts)
    for k in (2, 50, 200):
        below = sum(c for c in counts.values() if c < k)
        assert report.share_below_k(k) == pytest.approx(below / df.height)
        assert report.records_below_k(k) == below


def test_distinct_l_diversity_matches_a_direct_count() -> None:
    df = _people()
    qis = ["sex", "region"]
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for sex, region, dx in zip(df["sex"], df["region"], df["diagnosis"], strict=True):
        seen.setdefault((sex, region), set())
        if dx is not None:
            seen[(sex, region)].add(dx)
    assert l_diversity(df.lazy(), qis, "diagnosis") == min(len(v) for v in seen.values())
    one = pl.DataFrame({"q": ["a", "a", "b"], "s": ["x", "y", "x"]})
    assert l_diversity(one, ["q"], "s") == 1


def test_enforce_k_generalizes_then_suppresses_and_reports_the_cost() -> None:
    df = _people()
    qis = ["sex", "region", "birth"]
    hierarchy = {"sex": suppress_levels(), "region": region_levels(), "birth": date_levels()}
    before = k_anonymity(df, qis)
    assert before.min_class_size < 5
    out, cost = enforce_k(df.lazy(), qis, 5, hierarchy, max_suppression=0.02)
    result = out.collect()
    after = k_anonymity(result, qis)
    assert after.min_class_size >= 5
    assert cost.records_in == df.height
    assert cost.records_suppressed == df.height - result.height
    assert cost.records_suppressed <= 0.02 * df.height
    assert cost.min_class_size == after.min_class_size and cost.classes == after.classes.height
    # Exact birth dates cannot survive k=5 over 3000 people: the date was generalized.
    assert cost.levels_used["birth"] >= 1
    assert set(result.columns) == set(df.columns)
    # Minimal: lowering any used level breaks the suppression budget or k.
    for q, level in cost.levels_used.items():
        if level == 0:
            continue
        lower = {**cost.levels_used, q: level - 1}
        cols = [
            pl.col(name) if lower[name] == 0 else hierarchy[name][lower[name] - 1](pl.col(name))
            for name in qis
        ]
        sizes = df.select([c.cast(pl.String).alias(n) for c, n in zip(cols, qis, strict=True)])
        small = sizes.group_by(qis).len().filter(pl.col("len") < 5)["len"].sum()
        assert small > 0.02 * df.height


def test_enforce_k_with_no_feasible_node_uses_the_top_and_says_so() -> None:
    df = pl.DataFrame({"a": ["x", "y", "z", "w"]})
    out, cost = enforce_k(df.lazy(), ["a"], 5, {"a": suppress_levels()}, max_suppression=0.0)
    assert cost.levels_used == {"a": 1}
    assert cost.records_suppressed == 4 and out.collect().height == 0
    assert cost.notes


def test_enforce_k_refuses_missing_hierarchies_and_columns() -> None:
    df = _people(100)
    with pytest.raises(ValidationError, match="hierarchy"):
        enforce_k(df.lazy(), ["sex"], 5, {})
    with pytest.raises(ValidationError, match="nope"):
        k_anonymity(df.lazy(), ["nope"])


def test_hierarchy_for_catalog_quasi_identifiers() -> None:
    resource = Catalog.load().get("RKJBXX")
    qis = [f.name for f in resource.fields if f.quasi_identifier]
    schema = {
        "性别": pl.String(),
        "出生日期": pl.String(),
        "民族": pl.String(),
        "户籍区划代码": pl.String(),
    }
    levels = hierarchy_for(resource, qis, schema)
    assert len(levels["户籍区划代码"]) == 3 and len(levels["性别"]) == 1
    frame = pl.DataFrame({"户籍区划代码": ["210802"], "出生日期": ["1987"]})
    assert frame.select(levels["户籍区划代码"][0](pl.col("户籍区划代码"))).item() == "210800"
    assert frame.select(levels["出生日期"][0](pl.col("出生日期"))).item() == "1985-1989"


def test_record_risk_uses_the_catalog_declarations() -> None:
    catalog = Catalog.load()
    people = catalog.get("RKJBXX")
    df = pl.DataFrame(
        {
            "性别": ["男", "男", "女", "女", "女"],
            "出生日期": ["1980", "1980", "1990", "1990", "1991"],
            "民族": ["汉族", "汉族", "汉族", "满族", "汉族"],
            "户籍区划代码": ["210802"] * 5,
            "公民身份号码": ["t1", "t2", "t3", "t4", "t5"],
        }
    )
    measured = record_risk(df, people, k=2)
    assert measured.quasi_identifiers == ["性别", "出生日期", "民族", "户籍区划代码"]
    assert measured.anonymity.min_class_size == 1
    doc = measured.to_dict()
    assert doc["records_below_k"] == 3 and doc["share_below_k"] == pytest.approx(3 / 5)
    # 民族 is a quasi-identifier and the ID an identifier: neither is a sensitive attribute.
    assert measured.l_diversity == {}
    explicit = record_risk(df, people, k=2, sensitive=["公民身份号码"])
    assert explicit.l_diversity == {"公民身份号码": 1}
    visits = catalog.get("YBJS")
    assert declared_sensitive_attributes(visits, ["诊断编码", "诊断名称", "公民身份号码"]) == [
        "诊断编码",
        "诊断名称",
    ]
    with pytest.raises(ValidationError, match="quasi-identifier"):
        record_risk(pl.DataFrame({"诊断编码": ["I10"]}), visits)
