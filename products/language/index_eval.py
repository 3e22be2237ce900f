"""Evaluate an index spec over noisy tables: scores, components, dependencies and bands.

Pure post-processing of the released noisy values and the public noise scales (no budget).

- **Point values.** Every measure is clamped to its valid range (a count ≥ 0, a sum with the
  sign of its bounds), the expressions are evaluated on the score grid (``index.by``; a table
  with fewer dimensions is broadcast), each component is clamped to its ``range``, normalized
  against its anchors and weighted onto 0–100.
- **Dependencies (correction 1).** Each grid cell carries the set of input cells (table,
  measure, key) its score and components read, propagated through every operator (``before``
  reads every earlier key). A value with a withheld input, or undefined by construction (a
  ``lag`` at the first keys), is withheld. Both facts are public or come from the tables'
  own (noise-independent, see below) withholding, never from the score's noise.
- **Band (correction 2).** A score is released only when every input cell it reads is
  released by its table, and a table releases a cell on its noisy value (small-cell and
  accuracy suppression): the release selects on the inputs' noise. For a cell whose score
  reads k input cells, each input gets an interval at level (1 − α)^(1/k) that inverts the
  law of its noisy value *given its release* (``index_band.conditional_interval``; exact
  discrete-Gaussian tails). The release event is a product over independent noises, so given
  it all k intervals hold at once with probability ≥ 1 − α; the band is the range of the score
  over them, enclosed by interval arithmetic through every operator. Hence
  P(true score ∈ band | score released) ≥ 1 − α for every cell, whatever the data. The band
  is conservative (an enclosure over a simultaneous box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from catalogs.index_language import (
    Bin,
    Call,
    Const,
    IndexComponent,
    IndexTerm,
    Neg,
    Node,
    Ref,
    measure_ranges,
    parse,
    refs,
)
from catalogs.product_models import ProductSpec
from products import specs
from products.language.index_band import Selection, conditional_interval

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass
class Grid:
    dims: list[str]
    keys: dict[str, list[str]]
    order_axis: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.keys[d]) for d in self.dims)


@dataclass
class Leaf:
    """One measure as an array over the grid (broadcast), with its noise and input ids."""

    value: F  # noisy estimate, grid-shaped
    scale: float
    integer: bool
    valid: tuple[float, float]
    ids: npt.NDArray[np.int64]  # input-cell id of each grid cell, grid-shaped
    withheld: B  # the released table withholds this input cell
    selection: Selection  # the set of noisy values its table releases (on its own noise)


def selection_of(
    spec: ProductSpec, valid: tuple[float, float], half_width: float, basis: bool, integer: bool
) -> Selection:
    """The noisy values of a measure that ``products.tables.finish_table`` releases, as far as
    its *own* noise decides (values clamped to ``valid`` first): the cell's count (``basis``)
    must be ≥ ``min_count``; with an accuracy target every measure needs a non-zero value
    with |value| ≥ half-width / target."""
    sup = spec.suppression
    t = sup.max_relative_error
    thr = max(sup.min_count if basis else -math.inf, half_width / t if t else -math.inf)
    lo, hi = valid
    if lo >= 0:  # value max(Y, lo): only an upper half-line can be selected
        if t is not None:
            thr = max(thr, 1.0 if integer else 0.0)
        elif thr <= lo:
            return Selection()
        return Selection(lower=math.ceil(thr) if integer else thr)
    if t is None:
        return Selection()
    a = half_width / t
    if integer:
        a = max(math.ceil(a), 1)
    if hi <= 0:
        return Selection(lower=math.inf, upper=-a)
    return Selection(lower=a, upper=-a)


def grid_of(spec: ProductSpec) -> Grid:
    idx = spec.index
    assert idx is not None
    keys = {d: specs.dimension_keys(spec.dimension(d)) for d in idx.by}
    order = None if idx.order is None else idx.by.index(idx.order)
    return Grid(list(idx.by), keys, order)


def _table_array(frame: pl.DataFrame, col: str, by: list[str], grid: Grid, fill: Any) -> Any:
    """``frame[col]`` (rows keyed by ``by``) as an array over the grid, broadcast along the
    grid's other dimensions."""
    shape = tuple(len(grid.keys[d]) for d in by)
    values = frame[col].to_numpy()
    out = np.full(shape, fill, dtype=values.dtype if values.dtype != object else np.float64)
    pos = tuple(
        frame[d]
        .cast(pl.String)
        .replace_strict({k: i for i, k in enumerate(grid.keys[d])}, return_dtype=pl.Int64)
        .to_numpy()
        for d in by
    )
    out[pos] = values
    # Order the table's axes as the grid's and add size-1 axes for the missing dimensions.
    present = [d for d in grid.dims if d in by]
    out = np.transpose(out, [by.index(d) for d in present])
    for axis, d in enumerate(grid.dims):
        if d not in by:
            out = np.expand_dims(out, axis)
    return np.broadcast_to(out, grid.shape)


def leaves(
    spec: ProductSpec,
    tables: dict[str, pl.DataFrame],
    noise: dict[str, dict[str, dict[str, Any]]],
    withheld: dict[str, pl.DataFrame] | None = None,
) -> tuple[dict[str, Leaf], int]:
    """Every measure an expression may name (``m`` and ``table.m``), and the input count."""
    grid = grid_of(spec)
    ranges = measure_ranges(spec)
    out: dict[str, Leaf] = {}
    next_id = 0
    for t in spec.tables:
        frame = tables[t.name]
        by = list(t.by)
        n_cells = math.prod(len(grid.keys[d]) for d in by)
        ids_frame = specs.key_frame(spec, by).with_row_index("__id")
        basis = next((m.name for m in t.measures if m.aggregate == "count"), None)
        for m in t.measures:
            name = f"{t.name}.{m.name}"
            if name not in ranges:
                continue
            info = noise[t.name][m.name]
            w = withheld[t.name] if withheld is not None else None
            integer = "Integer" in str(info.get("distribution", "Integer"))
            leaf = Leaf(
                value=_table_array(
                    frame.with_columns(pl.col(m.name).cast(pl.Float64)), m.name, by, grid, 0.0
                ).astype(np.float64),
                scale=float(info["scale"]),
                integer=integer,
                valid=ranges[name],
                ids=_table_array(
                    ids_frame.with_columns(pl.col("__id").cast(pl.Int64) + next_id),
                    "__id",
                    by,
                    grid,
                    -1,
                ),
                withheld=np.zeros(grid.shape, dtype=bool)
                if w is None
                else _table_array(w, m.name, by, grid, True).astype(bool),
                selection=selection_of(
                    spec, ranges[name], float(info.get("accuracy", 0.0)), m.name == basis, integer
                ),
            )
            next_id += n_cells
            out[name] = leaf
            if m.name in ranges:  # the bare name, when it is unambiguous
                out[m.name] = leaf
    return out, next_id


# --- interval arithmetic over the grid ----------------------------------------------------

IV = tuple[F, F]


def _times(x: F, y: F) -> F:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where((x == 0) | (y == 0), 0.0, x * y)


def _mul(a: IV, b: IV) -> IV:
    ps = np.stack([_times(x, y) for x in a for y in b])
    return ps.min(axis=0), ps.max(axis=0)


def _shift(a: Any, k: int, axis: int, fill: Any) -> Any:
    out = np.full_like(a, fill)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis], dst[axis] = slice(0, a.shape[axis] - k), slice(k, None)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _before(a: F, axis: int) -> F:
    with np.errstate(invalid="ignore"):
        return _shift(np.cumsum(a, axis=axis), 1, axis, 0.0)


def interval(node: Node, env: dict[str, IV], grid: Grid) -> IV:
    """The enclosure of ``node`` when every name lies in its interval (lo == hi: a point)."""
    if isinstance(node, Const):
        c = np.full(grid.shape, node.value)
        return c, c
    if isinstance(node, Ref):
        return env[node.name]
    if isinstance(node, Neg):
        lo, hi = interval(node.arg, env, grid)
        return -hi, -lo
    if isinstance(node, Bin):
        a, b = interval(node.left, env, grid), interval(node.right, env, grid)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if node.op == "+":
                return a[0] + b[0], a[1] + b[1]
            if node.op == "-":
                return a[0] - b[1], a[1] - b[0]
            if node.op == "*":
                return _mul(a, b)
            # The load-time check proved the denominator's valid range excludes 0.
            return _mul(a, (1.0 / b[1], 1.0 / b[0]))
    assert isinstance(node, Call)
    args = [interval(x, env, grid) for x in node.args]
    if node.fn == "max":
        return np.maximum(args[0][0], args[1][0]), np.maximum(args[0][1], args[1][1])
    if node.fn == "min":
        return np.minimum(args[0][0], args[1][0]), np.minimum(args[0][1], args[1][1])
    if node.fn == "abs":
        lo, hi = args[0]
        inner = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        return inner, np.maximum(np.abs(lo), np.abs(hi))
    axis = grid.order_axis
    assert axis is not None  # refused at load otherwise
    lo, hi = args[0]
    if node.fn == "lag":
        return _shift(lo, node.lag, axis, np.nan), _shift(hi, node.lag, axis, np.nan)
    if node.fn == "before":
        return _before(lo, axis), _before(hi, axis)
    with np.errstate(invalid="ignore"):
        return np.cumsum(lo, axis=axis), np.cumsum(hi, axis=axis)


def dependencies(
    node: Node, deps: dict[str, B], undefined: dict[str, B], grid: Grid
) -> tuple[B, B]:
    """(input cells read, shape grid × inputs; undefined by construction, shape grid)."""
    if isinstance(node, Const):
        return np.zeros((*grid.shape, 0), dtype=bool), np.zeros(grid.shape, dtype=bool)
    if isinstance(node, Ref):
        return deps[node.name], undefined[node.name]
    if isinstance(node, Neg):
        return dependencies(node.arg, deps, undefined, grid)
    parts = [node.left, node.right] if isinstance(node, Bin) else list(node.args)
    got = [dependencies(p, deps, undefined, grid) for p in parts]
    dep = _union([g[0] for g in got])
    und = np.logical_or.reduce([g[1] for g in got])
    if isinstance(node, Call) and node.fn in ("lag", "before", "cumsum"):
        axis = grid.order_axis
        assert axis is not None
        if node.fn == "lag":
            return _shift(dep, node.lag, axis, False), _shift(und, node.lag, axis, True)
        acc_dep = np.logical_or.accumulate(dep, axis=axis)
        acc_und = np.logical_or.accumulate(und, axis=axis)
        if node.fn == "before":
            return _shift(acc_dep, 1, axis, False), _shift(acc_und, 1, axis, False)
        return acc_dep, acc_und
    return dep, und


def _union(arrays: list[B]) -> B:
    """Elementwise OR; a constant's empty dependency set (width 0) reads nothing."""
    wide = [a for a in arrays if a.shape[-1] > 0]
    if not wide:
        return arrays[0]
    out = wide[0].copy()
    for a in wide[1:]:
        out |= a
    return out


def _widen(dep: B, n_inputs: int) -> B:
    return dep if dep.shape[-1] == n_inputs else np.zeros((*dep.shape[:-1], n_inputs), bool)


# --- the index -----------------------------------------------------------------------------


@dataclass
class IndexValues:
    grid: Grid
    score: F
    lower: F
    upper: F
    components: dict[str, F]
    withheld: B
    reasons: list[list[str | None]]  # flattened grid order, per cell
    inputs_read: npt.NDArray[np.int64]  # k per cell
    input_level: F  # per-input level (1 − α)^(1/k) per cell


def _clamp(x: F, valid: tuple[float | None, float | None]) -> F:
    lo, hi = valid
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def _score(
    spec: ProductSpec, env: dict[str, IV], grid: Grid, fixed: dict[str, IV] | None = None
) -> tuple[IV, dict[str, IV]]:
    """The score's enclosure (and each component's) when every name lies in its interval;
    ``fixed`` pins terms to a sub-interval of theirs (see ``_band``)."""
    idx = spec.index
    assert idx is not None
    env = dict(env)
    for t in idx.terms:
        env[t.name] = (fixed or {}).get(t.name) or interval(parse(t.expr), env, grid)
    total_w = sum(c.weight for c in idx.components)
    s_lo = np.zeros(grid.shape)
    s_hi = np.zeros(grid.shape)
    comps: dict[str, IV] = {}
    for c in idx.components:
        lo, hi = interval(parse(c.expr), env, grid)
        lo, hi = _clamp(lo, c.range), _clamp(hi, c.range)
        comps[c.name] = (lo, hi)
        if c.log:
            lo, hi = np.log1p(np.maximum(lo, 0.0)), np.log1p(np.maximum(hi, 0.0))
        a, b = c.anchor
        z_lo, z_hi = np.clip((lo - a) / (b - a), 0, 1), np.clip((hi - a) / (b - a), 0, 1)
        if b < a:  # a decreasing map swaps the ends
            z_lo, z_hi = z_hi, z_lo
        if c.direction == "negative":
            z_lo, z_hi = 1.0 - z_hi, 1.0 - z_lo
        s_lo, s_hi = s_lo + c.weight * z_lo, s_hi + c.weight * z_hi
    return (100.0 * s_lo / total_w, 100.0 * s_hi / total_w), comps | {
        t.name: env[t.name] for t in idx.terms
    }


PIECES = 8


def _shared(spec: ProductSpec) -> list[str]:
    """Terms and names read by two or more expressions: interval arithmetic treats each
    occurrence as a different value, so these are the ones worth subdividing."""
    idx = spec.index
    assert idx is not None
    counts: dict[str, int] = {}
    exprs: list[IndexTerm | IndexComponent] = [*idx.terms, *idx.components]
    for e in exprs:
        for r in set(refs(parse(e.expr))):
            counts[r] = counts.get(r, 0) + 1
    return [t.name for t in idx.terms] + [
        r for r, n in counts.items() if n >= 2 and r not in {t.name for t in idx.terms}
    ]


def _band(spec: ProductSpec, env: dict[str, IV], grid: Grid, leaves_of: dict[str, Leaf]) -> IV:
    """The score's enclosure over the box ``env``, tightened by subdivision: for each shared
    name, the union over ``PIECES`` sub-intervals of its enclosure (each evaluated with the
    name pinned to the piece) still holds every score the box allows, and so does the
    intersection of such unions. Rigorous: the true value of the name lies in one piece."""
    idx = spec.index
    assert idx is not None
    (lo, hi), whole = _score(spec, env, grid)
    terms = {t.name for t in idx.terms}
    for name in _shared(spec):
        b_lo, b_hi = whole[name] if name in terms else env[name]
        finite = np.isfinite(b_lo) & np.isfinite(b_hi)
        if not finite.any():
            continue
        u_lo = np.full(grid.shape, np.inf)
        u_hi = np.full(grid.shape, -np.inf)
        for i in range(PIECES):
            p_lo = b_lo if i == 0 else b_lo + (b_hi - b_lo) * (i / PIECES)
            p_hi = b_hi if i == PIECES - 1 else b_lo + (b_hi - b_lo) * ((i + 1) / PIECES)
            piece = (np.where(finite, p_lo, b_lo), np.where(finite, p_hi, b_hi))
            if name in terms:
                (s_lo, s_hi), _c = _score(spec, env, grid, {name: piece})
            else:
                leaf = leaves_of[name]
                pinned = {n: piece for n, x in leaves_of.items() if x is leaf}
                (s_lo, s_hi), _c = _score(spec, env | pinned, grid)
            u_lo, u_hi = np.minimum(u_lo, s_lo), np.maximum(u_hi, s_hi)
        lo, hi = np.maximum(lo, u_lo), np.minimum(hi, u_hi)
    return lo, hi


def compute(
    spec: ProductSpec,
    tables: dict[str, pl.DataFrame],
    noise: dict[str, dict[str, dict[str, Any]]],
    withheld: dict[str, pl.DataFrame] | None = None,
) -> IndexValues:
    """The index over noisy ``tables`` (keys + one column per measure, all cells);
    ``noise[table][measure]`` holds ``scale`` and ``distribution``; ``withheld`` (keys + one
    boolean column per measure) marks the released tables' withheld cells."""
    idx = spec.index
    assert idx is not None
    grid = grid_of(spec)
    lv, n_inputs = leaves(spec, tables, noise, withheld)

    # Dependencies: one-hot per leaf, then through the terms and components.
    deps: dict[str, B] = {}
    undefined: dict[str, B] = {}
    for name, leaf in lv.items():
        d = np.zeros((*grid.shape, n_inputs), dtype=bool)
        np.put_along_axis(d, leaf.ids[..., None], True, axis=-1)
        deps[name], undefined[name] = d, np.zeros(grid.shape, dtype=bool)
    for t in idx.terms:
        deps[t.name], undefined[t.name] = dependencies(parse(t.expr), deps, undefined, grid)
    comp_dep: dict[str, B] = {}
    comp_und: dict[str, B] = {}
    for c in idx.components:
        dep, comp_und[c.name] = dependencies(parse(c.expr), deps, undefined, grid)
        comp_dep[c.name] = _widen(dep, n_inputs)
    all_dep = _union(list(comp_dep.values()))
    k = all_dep.sum(axis=-1)
    withheld_inputs = np.zeros(n_inputs, dtype=bool)
    for leaf in lv.values():
        withheld_inputs[leaf.ids.ravel()] |= leaf.withheld.ravel()
    comp_withheld = {
        c: (comp_dep[c] & withheld_inputs).any(axis=-1) | comp_und[c] for c in comp_dep
    }

    points = {n: _clamp(leaf.value, leaf.valid) for n, leaf in lv.items()}
    (score, _same), comps = _score(spec, {n: (p, p) for n, p in points.items()}, grid)

    lower = np.full(grid.shape, np.nan)
    upper = np.full(grid.shape, np.nan)
    level = np.ones(grid.shape)
    for kk in np.unique(k):
        per_input = (1.0 - spec.alpha) ** (1.0 / kk) if kk > 0 else 1.0
        env: dict[str, IV] = {}
        for leaf in {id(x): x for x in lv.values()}.values():
            if kk > 0:
                lo, hi = conditional_interval(
                    np.ascontiguousarray(leaf.value),
                    leaf.scale,
                    leaf.integer,
                    per_input,
                    leaf.selection,
                    leaf.valid,
                )
            else:
                lo = hi = _clamp(leaf.value, leaf.valid)
            for n, other in lv.items():
                if other is leaf:
                    env[n] = (lo, hi)
        lo, hi = _band(spec, env, grid, lv)
        sel = k == kk
        lower[sel], upper[sel], level[sel] = lo[sel], hi[sel], per_input

    withheld_any = np.zeros(grid.shape, dtype=bool)
    for c in idx.components:
        withheld_any |= comp_withheld[c.name]
    reasons: list[list[str | None]] = []
    for pos in np.ndindex(*grid.shape):
        row: list[str | None] = []
        for c in idx.components:
            if comp_und[c.name][pos]:
                row.append(f"{c.name}: needs an earlier {idx.order} than the first key")
            elif comp_withheld[c.name][pos]:
                row.append(f"{c.name}: an input cell it depends on is withheld")
        reasons.append(row)
    return IndexValues(
        grid=grid,
        score=score,
        lower=np.minimum(lower, score),
        upper=np.maximum(upper, score),
        components={c.name: comps[c.name][0] for c in idx.components},
        withheld=withheld_any,
        reasons=reasons,
        inputs_read=k.astype(np.int64),
        input_level=level,
    )
