"""Coverage of index bands against a TRUE score, by simulation (correction 2).

A small fixed truth (two districts × four quarters: one large district, one whose counts sit
around the suppression threshold) is released ``runs`` times: each run draws fresh noise
with numpy at the mechanism's scales (exact discrete Gaussian, sampled from its pmf), runs the
tables' real post-processing (clamping, small-cell and accuracy suppression:
``products.tables.finish_table``) and the index's (``index_eval.compute``), and checks whether
each released score's band holds the true score (the same formula on the noise-free tables).

Also used by docs/products.md's measured coverage (``python tests/products/index_coverage_sim.py``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from catalogs.product_models import ProductSpec
from privacy.dp.accuracy import discrete_gaussian_half_width
from products import specs
from products.engine import Draw
from products.language import index_eval
from products.language.index_builder import clamped, withheld_cells
from products.tables import finish_table

QUARTERS = ["2024Q1", "2024Q2", "2024Q3", "2024Q4"]
DISTRICTS = ["big", "small"]
SCALES = {"new": 1.5, "new_capital": 300.0, "deregistered": 1.5, "active": 1.5}
TRUTH = {
    # per district, per quarter
    "new": {"big": [30, 25, 35, 28], "small": [6, 5, 7, 6]},
    "new_capital": {"big": [6000, 5200, 7400, 5600], "small": [1300, 800, 1500, 900]},
    "deregistered": {"big": [10, 12, 8, 15], "small": [5, 6, 5, 7]},
    "active": {"big": 400, "small": 30},
}


def spec_data(suppression: dict[str, float] | None = None) -> dict[str, object]:
    row = {
        "base": "SCZTDJ",
        "derive": [{"dimension": "district", "field": "区划代码", "as": "value"}],
    }
    by_q = {
        "base": "SCZTDJ",
        "derive": [
            {"dimension": "district", "field": "区划代码", "as": "value"},
            {"dimension": "quarter", "field": "成立日期", "as": "quarter"},
        ],
    }
    return {
        "id": "coverage_index",
        "name": "覆盖率测试指数",
        "name_en": "Coverage test index",
        "version": "1.0.0",
        "kind": "index",
        "scenario": "business-vitality-index",
        "agreement_id": "DA-2025-001",
        "developer": "dev-001",
        "purpose_category": "industry",
        "pricing_note": "test",
        "inputs": [
            {
                "resource": "SCZTDJ",
                "fields": ["统一社会信用代码", "成立日期", "区划代码", "注册资本"],
            }
        ],
        "privacy_unit": {"resource": "SCZTDJ", "field": "统一社会信用代码", "contributions": 1},
        "budget": {"rho": 1.0, "delta": 1e-7},
        "reference_period": ["2024-01-01", "2024-12-31"],
        "dimensions": [
            {"name": "district", "title": "区县", "values": DISTRICTS},
            {"name": "quarter", "title": "季度", "quarters": [QUARTERS[0], QUARTERS[-1]]},
        ],
        "tables": [
            {
                "name": "new_t",
                "title": "新设",
                "title_en": "New",
                "filter": "new",
                "by": ["district", "quarter"],
                "measures": [
                    {"name": "new", "title": "新设", "aggregate": "count"},
                    {
                        "name": "new_capital",
                        "title": "资本",
                        "aggregate": "sum",
                        "field": "capital",
                        "bounds": [0, 1000],
                    },
                ],
            },
            {
                "name": "dereg_t",
                "title": "注销",
                "title_en": "Deregistered",
                "filter": "dereg",
                "by": ["district", "quarter"],
                "measures": [{"name": "deregistered", "title": "注销", "aggregate": "count"}],
            },
            {
                "name": "active_t",
                "title": "存续",
                "title_en": "Active",
                "filter": "active",
                "by": ["district"],
                "measures": [{"name": "active", "title": "存续", "aggregate": "count"}],
            },
        ],
        "index": {
            "output": "idx",
            "by": ["district", "quarter"],
            "order": "quarter",
            "rows": {
                "new": {
                    **by_q,
                    "values": [
                        {
                            "name": "capital",
                            "per_unit": "max",
                            "field": "注册资本",
                            "bounds": [0, 1000],
                        }
                    ],
                },
                "dereg": by_q,
                "active": row,
            },
            "terms": [{"name": "stock", "expr": "max(active + before(new - deregistered), 1)"}],
            "components": [
                {
                    "name": "new_rate",
                    "title": "新设率",
                    "expr": "new / stock",
                    "range": [0, 1],
                    "weight": 0.3,
                    "anchor": [0, 0.08],
                },
                {
                    "name": "dereg_rate",
                    "title": "注销率",
                    "expr": "deregistered / stock",
                    "range": [0, 1],
                    "weight": 0.2,
                    "direction": "negative",
                    "anchor": [0, 0.04],
                },
                {
                    "name": "capital_per_new",
                    "title": "户均",
                    "expr": "new_capital / max(new, 1)",
                    "range": [0, 1000],
                    "weight": 0.2,
                    "anchor": [0, 400],
                },
                {
                    "name": "growth",
                    "title": "增长",
                    "expr": "(new - deregistered) / stock",
                    "range": [-1, None],
                    "weight": 0.3,
                    "anchor": [-0.02, 0.06],
                },
            ],
        },
        "suppression": suppression or {"min_count": 5, "max_relative_error": 1.0},
        "alpha": 0.05,
    }


def truth_tables(spec: ProductSpec) -> dict[str, pl.DataFrame]:
    out: dict[str, pl.DataFrame] = {}
    for t in spec.tables:
        keys = specs.key_frame(spec, list(t.by))
        cols = {}
        for m in t.measures:
            src = TRUTH[m.name]
            if "quarter" in t.by:
                vals = [
                    src[d][QUARTERS.index(q)]
                    for d, q in keys.select("district", "quarter").iter_rows()
                ]  # type: ignore[index]
            else:
                vals = [src[d] for d in keys["district"].to_list()]  # type: ignore[index]
            cols[m.name] = pl.Series(vals, dtype=pl.Float64)
        out[t.name] = keys.with_columns(**cols)
    return out


def noise_meta(spec: ProductSpec) -> dict[str, object]:
    meta: dict[str, list[dict[str, object]]] = {}
    for t in spec.tables:
        rows = []
        for m in t.measures:
            h, level = discrete_gaussian_half_width(SCALES[m.name], spec.alpha)
            rows.append(
                {
                    "column": m.name,
                    "aggregate": m.aggregate,
                    "distribution": "Integer Gaussian",
                    "scale": SCALES[m.name],
                    "accuracy": float(h),
                    "alpha": 1.0 - level,
                }
            )
        meta[t.name] = rows
    return {"noise": meta}


class DiscreteGaussian:
    """Exact discrete Gaussian sampler (inverse CDF over its pmf)."""

    def __init__(self, scale: float) -> None:
        k_max = int(np.ceil(scale * 14)) + 2
        self.k = np.arange(-k_max, k_max + 1)
        w = np.exp(-(self.k.astype(np.float64) ** 2) / (2 * scale * scale))
        self.cdf = np.cumsum(w / w.sum())

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = np.searchsorted(self.cdf, rng.random(n), side="right")
        return self.k[np.minimum(idx, self.k.size - 1)].astype(np.float64)


@dataclass
class Coverage:
    runs: int
    released: np.ndarray  # per cell: runs where the score was released
    covered: np.ndarray  # per cell: released runs whose band held the true score
    widths: list[float] = field(default_factory=list)
    release_sets: set[tuple[bool, ...]] = field(default_factory=set)

    @property
    def rate(self) -> float:
        return float(self.covered.sum() / max(self.released.sum(), 1))

    def rate_where(self, mask: np.ndarray) -> tuple[float, int]:
        n = int(self.released[mask].sum())
        return float(self.covered[mask].sum() / max(n, 1)), n


def old_band(
    spec: ProductSpec,
    tables: dict[str, pl.DataFrame],
    noise: dict[str, dict[str, dict[str, object]]],
    withheld: np.ndarray,
    rng: np.random.Generator,
    sims: int = 400,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The band this replaces (the baseline): the central 95 % of scores re-simulated with
    Gaussian noise around the noisy values, shown only when the noisy stock is ≥ 20 and the
    band's half-width ≤ 25 (and no input is withheld). Returns (lower, upper, shown)."""
    grid = index_eval.grid_of(spec)
    lv, _n = index_eval.leaves(spec, tables, noise)  # type: ignore[arg-type]
    assert grid.order_axis is not None
    sim_grid = index_eval.Grid(grid.dims, grid.keys, grid.order_axis + 1)  # a leading sims axis
    env: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for leaf in {id(x): x for x in lv.values()}.values():
        draws = leaf.value[None] - rng.normal(0.0, leaf.scale, (sims, *leaf.value.shape))
        for name, other in lv.items():
            if other is leaf:
                env[name] = (draws, draws)
    (scores, _same), _terms = index_eval._score(spec, env, sim_grid)
    lower, upper = np.quantile(scores, 0.025, axis=0), np.quantile(scores, 0.975, axis=0)
    point = {n: (x.value, x.value) for n, x in lv.items()}
    _s, at_point = index_eval._score(spec, point, grid)
    stock = at_point["stock"][0]
    shown = ~withheld & (stock >= 20) & ((upper - lower) / 2 <= 25)
    return lower, upper, shown


def simulate(
    runs: int, seed: int = 7, suppression: dict[str, float] | None = None, old: bool = False
) -> Coverage:
    spec = specs.parse(spec_data(suppression), "coverage-sim")
    truth = truth_tables(spec)
    meta = noise_meta(spec)
    noise = {t: {r["column"]: r for r in rows} for t, rows in meta["noise"].items()}  # type: ignore[attr-defined]
    true = index_eval.compute(spec, truth, noise).score
    samplers = {m: DiscreteGaussian(s) for m, s in SCALES.items()}
    rng = np.random.default_rng(seed)
    shape = true.shape
    released = np.zeros(shape, dtype=np.int64)
    covered = np.zeros(shape, dtype=np.int64)
    cov = Coverage(runs, released, covered)
    for r in range(runs):
        tables = {
            name: df.with_columns(
                *(pl.col(m) + samplers[m].draw(rng, df.height) for m in df.columns if m in SCALES)
            )
            for name, df in truth.items()
        }
        draw = Draw(tables=tables, meta=meta)
        noisy = clamped(spec, draw)
        results = [
            finish_table(spec, t, noisy.tables[t.name], meta, f"sim-{r}") for t in spec.tables
        ]
        values = index_eval.compute(spec, tables, noise, withheld_cells(spec, results))
        lower, upper, shown = values.lower, values.upper, ~values.withheld
        if old:
            lower, upper, shown = old_band(spec, tables, noise, values.withheld, rng)  # type: ignore[arg-type]
        inside = (lower <= true + 1e-9) & (true <= upper + 1e-9)
        released += shown
        covered += shown & inside
        cov.widths += list(((upper - lower) / 2)[shown])
        cov.release_sets.add(tuple(shown.ravel()))
    return cov


if __name__ == "__main__":  # measured coverage for docs/products.md
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    c = simulate(n, old="--old" in sys.argv)
    small = np.zeros(c.released.shape, dtype=bool)
    small[DISTRICTS.index("small"), :] = True
    rare = c.released < 0.2 * n
    print(f"runs {n}; released scores {int(c.released.sum())}; coverage {c.rate:.4f}")
    print(f"small district: {c.rate_where(small)}; rarely released (<20%): {c.rate_where(rare)}")
    print(f"release share per cell:\n{c.released / n}")
    print(f"coverage per cell:\n{np.round(c.covered / np.maximum(c.released, 1), 4)}")
    print(f"median half-width {np.median(c.widths):.2f}; file {Path(__file__).name}")
