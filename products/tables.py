"""Post-processing of noisy tables: accuracy per cell, derived values, suppression.

Everything here reads only the released noisy values and the public noise scales, so it
costs no privacy budget and can be recomputed from the stored draw at any time.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from catalogs.product_models import DerivedSpec, ProductSpec, TableSpec
from privacy.dp import accuracy
from products import outputs
from products.release import AccuracyCell, SuppressedCell
from products.specs import dimension_labels

if TYPE_CHECKING:  # the engine imports the builders, which import this module
    from products.engine import BuildContext, Draw


@dataclass
class TableResult:
    name: str
    frame: pl.DataFrame  # the released table
    raw: pl.DataFrame  # the noisy draw before suppression (stays in the domain)
    accuracy: list[AccuracyCell] = field(default_factory=list)
    suppressed: list[SuppressedCell] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)


def _seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode("utf-8"))


def _noise(meta: dict[str, Any], table: str) -> dict[str, dict[str, Any]]:
    return {n["column"]: n for n in meta["noise"][table]}


SIMULATIONS = 4000


def _derived(
    d: DerivedSpec,
    est: dict[str, np.ndarray],
    noise: dict[str, dict[str, Any]],
    alpha: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A derived value per cell and its simulated half-width (public scales, no budget)."""
    num, s_num = est[d.numerator], float(noise[d.numerator]["scale"])
    if d.op == "ratio":
        assert d.denominator is not None
        den = est[d.denominator]
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(den >= 1.0, num / np.maximum(den, 1.0), np.nan)
        hw = accuracy.ratio_half_width(
            num, s_num, den, float(noise[d.denominator]["scale"]), alpha=alpha, seed=seed
        )
        return value, hw
    rng = np.random.default_rng(seed)
    sim_num = accuracy.simulate_noise(num, s_num, SIMULATIONS, rng)
    if d.op == "difference":
        assert d.denominator is not None
        den = est[d.denominator]
        sim_den = accuracy.simulate_noise(
            den, float(noise[d.denominator]["scale"]), SIMULATIONS, rng
        )
        value, sims = num - den, sim_num - sim_den
    else:  # share of the table's total
        total = float(num.sum())
        value = num / total if total >= 1.0 else np.full(num.shape, np.nan)
        totals = sim_num.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            sims = np.where(totals >= 1.0, sim_num / totals, np.nan)
    lo, hi = accuracy.interval(sims, alpha)
    return value, (hi - lo) / 2.0


def finish_table(
    spec: ProductSpec,
    table: TableSpec,
    raw: pl.DataFrame,
    meta: dict[str, Any],
    release_id: str,
) -> TableResult:
    """Released table with CI columns, derived values and suppression applied."""
    noise = _noise(meta, table.name)
    alpha = spec.alpha
    sup = spec.suppression
    n = raw.height
    keys = raw.select(table.by)
    key_dicts = [{k: str(v) for k, v in row.items()} for row in keys.iter_rows(named=True)]

    counts = [m for m in table.measures if m.aggregate == "count"]
    basis = counts[0].name if counts else None
    est: dict[str, np.ndarray] = {}
    hw: dict[str, np.ndarray] = {}
    for m in table.measures:
        est[m.name] = raw[m.name].cast(pl.Float64).to_numpy()
        hw[m.name] = np.full(n, float(noise[m.name]["accuracy"]))

    # The cell's count decides small-cell suppression for every measure of the cell.
    if basis is not None:
        base_sup = accuracy.suppress(
            est[basis],
            accuracy.relative_error(hw[basis], est[basis]),
            sup.min_count,
            sup.max_relative_error,
        )
        cell_suppressed = base_sup.suppressed
        cell_reason = base_sup.reasons
    else:
        cell_suppressed = np.zeros(n, dtype=bool)
        cell_reason = [None] * n

    values: dict[str, np.ndarray] = dict(est)
    methods: dict[str, str] = {m.name: "analytic" for m in table.measures}
    for d in table.derived:
        values[d.name], hw[d.name] = _derived(
            d, est, noise, alpha, _seed(release_id, table.name, d.name)
        )
        methods[d.name] = "simulation"

    result = TableResult(name=table.name, frame=raw, raw=raw)
    columns: dict[str, Any] = {}
    for dim in table.by:
        columns[dim] = keys[dim].to_list()
        labels = dimension_labels(spec.dimension(dim))
        if any(labels.get(k, k) != k for k in labels):
            columns[f"{dim}_name"] = [labels.get(str(k), "") for k in keys[dim].to_list()]
            result.descriptions[f"{dim}_name"] = f"{spec.dimension(dim).title} (label)"
        result.descriptions[dim] = spec.dimension(dim).title

    reasons_any: list[list[str]] = [[r] if r else [] for r in cell_reason]
    titles = {m.name: (m.title, m.unit) for m in table.measures}
    titles.update({d.name: (d.title, d.unit) for d in table.derived})
    # A derived value is withheld with any input it depends on: a published ratio and its
    # published denominator would give a withheld numerator back.
    inputs = {d.name: d.operands for d in table.derived}
    shares = {d.name: d.numerator for d in table.derived if d.op == "share"}
    quantiles = {m.name: m for m in table.measures if m.aggregate == "quantile"}
    # A quantile's interval is in ranks: ±r units around the true q-quantile (public, from
    # the spec). Over the cell's noisy count n̂ that is ±r/n̂ in quantile level; when it
    # reaches past the group's minimum or maximum (r/n̂ > min(q, 1 − q)) the released
    # candidate says nothing the candidates did not, and it is withheld (post-processing of
    # released values; the rule names no value).
    rank_share: dict[str, np.ndarray] = {}
    for name in quantiles:
        r = float(noise[name]["rank_error"])
        size = est[basis] if basis is not None else np.zeros(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            rank_share[name] = np.where(size >= 1.0, r / np.maximum(size, 1.0), np.inf)
    withheld: dict[str, np.ndarray] = {}
    for name in [*(m.name for m in table.measures), *(d.name for d in table.derived)]:
        val = values[name]
        rel = accuracy.relative_error(hw[name], val)
        # A quantile has no interval on its value (it is a candidate chosen by rank error):
        # only its count cell and an undefined value withhold it.
        own = ~np.isfinite(val) | (
            np.zeros(n, dtype=bool)
            if sup.max_relative_error is None or name in quantiles
            else ~(rel <= sup.max_relative_error)
        )
        if name in quantiles:
            q = float(quantiles[name].quantile or 0.5)
            own |= ~(rank_share[name] <= min(q, 1.0 - q))
        upstream = np.zeros(n, dtype=bool)
        for dep in inputs.get(name, ()):
            upstream |= withheld[dep]
        if name in shares and withheld[shares[name]].any():
            # A share uses the table's total: one withheld cell would come back as the total
            # (from any published share and count) minus the published cells.
            upstream[:] = True
        suppressed = cell_suppressed | own | upstream
        withheld[name] = suppressed
        is_count = name in {m.name for m in counts}
        digits = 0 if is_count else 2
        # A mechanism's half-width is public (it depends on the spec only); a simulated one
        # depends on the noisy values, so it is withheld with a suppressed value.
        shown_hw = np.isfinite(hw[name]) & (
            np.ones(n, dtype=bool) if methods[name] == "analytic" else ~suppressed
        )
        shown: list[float | int | None] = []
        for i in range(n):
            reason: str | None = None
            if suppressed[i]:
                shown.append(None)
                # Reasons carry no value of the cell: a relative error with the public
                # half-width would give the withheld estimate back.
                reason = cell_reason[i] or (
                    f"{name}: an input it depends on is withheld"
                    if upstream[i]
                    else f"{name}: rank error reaches past the group's minimum or maximum"
                    if name in quantiles and np.isfinite(val[i])
                    else f"{name}: relative error above target {sup.max_relative_error:g}"
                    if np.isfinite(val[i])
                    else f"{name}: undefined (denominator below 1)"
                )
                if not cell_suppressed[i]:
                    reasons_any[i].append(reason)
                result.suppressed.append(
                    SuppressedCell(output=table.name, key=key_dicts[i], measure=name, reason=reason)
                )
            else:
                shown.append(round(val[i]) if is_count else round(float(val[i]), digits))
            result.accuracy.append(
                AccuracyCell(
                    output=table.name,
                    key=key_dicts[i],
                    measure=name,
                    estimate=None if suppressed[i] else float(val[i]),
                    ci_half_width=float(hw[name][i]) if shown_hw[i] else None,
                    # a mechanism's exact level (1 − alpha), else the simulated one's
                    alpha=float(noise[name]["alpha"]) if name in noise else alpha,
                    relative_error=None
                    if suppressed[i] or not np.isfinite(rel[i])
                    else float(rel[i]),
                    method=methods[name],
                    distribution=noise[name]["distribution"] if name in noise else "derived",
                    scale=float(noise[name]["scale"]) if name in noise else None,
                    suppressed=bool(suppressed[i]),
                    reason=reason,
                    rank_error=float(noise[name]["rank_error"]) if name in quantiles else None,
                    relative_rank_error=float(rank_share[name][i])
                    if name in quantiles and not suppressed[i]
                    else None,
                )
            )
        title, unit = titles[name]
        columns[name] = pl.Series(name, shown, dtype=pl.Int64 if is_count else pl.Float64)
        columns[f"{name}_ci95"] = [
            round(float(h), 2) if ok else None for h, ok in zip(hw[name], shown_hw, strict=True)
        ]
        result.descriptions[name] = f"{title}{f' ({unit})' if unit else ''}, DP estimate"
        if name in quantiles:
            qm, nq = quantiles[name], noise[name]
            result.descriptions[name] = (
                f"{title}{f' ({unit})' if unit else ''}, DP {qm.quantile:g}-quantile: one of "
                f"{nq['candidates']} public candidates; with probability ≥ {1 - alpha:.0%} "
                f"within ±{float(nq['rank_error']):.1f} ranks (units) of the true quantile, "
                "plus the candidate grid's gap"
            )
        level = 1 - float(noise[name]["alpha"]) if name in noise else 1 - alpha
        result.descriptions[f"{name}_ci95"] = (
            f"half-width of the {level:.1%} confidence interval of {name} (exact level)"
        )
    columns["suppressed"] = [bool(x) for x in cell_suppressed]
    columns["suppression_reason"] = pl.Series(
        "suppression_reason", ["; ".join(r) if r else None for r in reasons_any], dtype=pl.String
    )
    result.descriptions["suppressed"] = "the cell is withheld (small or inaccurate count)"
    result.descriptions["suppression_reason"] = "why a cell or a measure is withheld"
    result.frame = pl.DataFrame(columns)
    return result


def finish_tables(ctx: BuildContext, draw: Draw) -> list[TableResult]:
    """``finish_table`` of every table of the spec, in spec order."""
    return [
        finish_table(ctx.spec, t, draw.tables[t.name], draw.meta, ctx.release_id)
        for t in ctx.spec.tables
    ]


def write_tables(ctx: BuildContext, results: list[TableResult], stage: Path) -> list[Any]:
    """Write each released table in every output format of the spec (dp_aggregate values)."""
    from products.release import ColumnLineage

    # Lineage: dimension columns hold public keys (from code lists, bands, quarters); every
    # other column is the mechanism's output over the declared input fields.
    dims = {d.name for d in ctx.spec.dimensions}
    read = [f"{code}.{f}" for code, fields in ctx.spec.declared_fields.items() for f in fields]
    files = []
    for r in results:
        lineage = {
            c: ColumnLineage(sources=[], operator="public_key")
            if c in dims or c.removesuffix("_name") in dims
            else ColumnLineage(sources=read, operator="dp_aggregate")
            for c in r.frame.columns
        }
        files += outputs.write_table(
            stage,
            r.name,
            r.frame,
            list(ctx.spec.outputs.formats),
            "dp_aggregate",
            r.descriptions,
            lineage,
        )
    return files
