"""Confidence intervals for one noisy input that stay true conditional on its release.

A table cell feeding an index is released only when its noisy value passes the table's
suppression (noisy count ≥ ``min_count``, relative error within target): the released value
is a draw of ``Y = x + Z`` *conditioned on* ``Y ∈ S`` for a public set ``S``. Intervals built
around ``Y`` as if unconditioned select lucky draws (the audit measured 0.62 coverage on
rarely released cells). Here the interval inverts the conditional law of ``Y`` given ``S``:

    C(y) = { x in the valid range : P_x(Y ≥ y | S) > β/2  and  P_x(Y ≤ y | S) > β/2 }

which holds the true ``x`` with probability ≥ 1 − β given ``S``, for every ``x`` (the law is
stochastically increasing in ``x``, so C(y) is an interval found by bisection). Without
selection (S = everything) it is the exact central interval of the noise. ``Z`` is OpenDP's
discrete Gaussian for integer measures (exact tails from its pmf, in log space) and a
Gaussian otherwise; above σ = 2000 the two agree to 1e-9 and the Gaussian is used.

``S`` is ``(-inf, upper] ∪ [lower, inf)`` (``upper = -inf``: only ``[lower, inf)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from scipy import special, stats

F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Selection:
    lower: float = -math.inf  # released when Y ≥ lower …
    upper: float = -math.inf  # … or Y ≤ upper

    @property
    def none(self) -> bool:
        return self.lower == -math.inf or self.upper == math.inf


@cache
def _dg_log_tails(scale: float) -> tuple[int, F, F]:
    """(K, log P(Z ≤ k), log P(Z ≥ k)) for k = −K..K of the discrete Gaussian."""
    k_max = math.ceil(scale * 40) + 2
    k = np.arange(-k_max, k_max + 1, dtype=np.float64)
    logw = -(k**2) / (2 * scale * scale)
    log_total = special.logsumexp(logw)
    log_le = np.logaddexp.accumulate(logw) - log_total
    log_ge = np.logaddexp.accumulate(logw[::-1])[::-1] - log_total
    return k_max, log_le, log_ge


def _log_cdf(v: F, scale: float, integer: bool) -> F:
    """log P(Z ≤ v) elementwise (v may be ±inf)."""
    if not integer or scale > 2000:
        return np.asarray(stats.norm.logcdf(v / scale), dtype=np.float64)
    k_max, log_le, _ge = _dg_log_tails(scale)
    idx = np.floor(np.where(np.isfinite(v), v, np.sign(v) * (k_max + 1)))
    out = np.where(idx < -k_max, -np.inf, 0.0)
    inside = (idx >= -k_max) & (idx <= k_max)
    pos = np.clip(idx, -k_max, k_max).astype(np.int64) + k_max
    return np.where(inside, log_le[pos], out)


def _log_sf(v: F, scale: float, integer: bool) -> F:
    """log P(Z ≥ v) elementwise."""
    if not integer or scale > 2000:
        return np.asarray(stats.norm.logsf(v / scale), dtype=np.float64)
    k_max, _le, log_ge = _dg_log_tails(scale)
    idx = np.ceil(np.where(np.isfinite(v), v, np.sign(v) * (k_max + 1)))
    out = np.where(idx > k_max, -np.inf, 0.0)
    inside = (idx >= -k_max) & (idx <= k_max)
    pos = np.clip(idx, -k_max, k_max).astype(np.int64) + k_max
    return np.where(inside, log_ge[pos], out)


def _log_between(a: F, b: F, scale: float, integer: bool) -> F:
    """log P(a ≤ Z ≤ b) (−inf when empty)."""
    hi = _log_cdf(b, scale, integer)
    # P(Z ≤ b) − P(Z < a); for integer Z, P(Z < a) = P(Z ≤ ⌈a⌉ − 1).
    below = _log_cdf(np.ceil(a) - 1.0, scale, integer) if integer else _log_cdf(a, scale, integer)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = hi + np.log1p(-np.exp(np.minimum(below - hi, 0.0)))
    return np.where((b >= a) & (hi > below), diff, -np.inf)


def _log_tail_in_s(x: F, y: F, sel: Selection, scale: float, integer: bool, upper: bool) -> F:
    """log P_x(Y ∈ S, Y ≥ y) (upper) or log P_x(Y ∈ S, Y ≤ y), with Y = x + Z."""
    inf = np.full_like(x, np.inf)
    parts = []
    if upper:
        parts.append(_log_between(np.maximum(y, sel.lower) - x, inf, scale, integer))
        if sel.upper > -math.inf:
            parts.append(_log_between(y - x, sel.upper - x + 0 * x, scale, integer))
    else:
        parts.append(_log_between(np.maximum(sel.lower, -inf) - x, y - x, scale, integer))
        if sel.upper > -math.inf:
            parts.append(_log_between(-inf, np.minimum(y, sel.upper) - x, scale, integer))
    return np.logaddexp.reduce(np.stack(parts), axis=0)


def _log_in_s(x: F, sel: Selection, scale: float, integer: bool) -> F:
    inf = np.full_like(x, np.inf)
    parts = [_log_between(sel.lower - x, inf, scale, integer)]
    if sel.upper > -math.inf:
        parts.append(_log_between(-inf, sel.upper - x, scale, integer))
    return np.logaddexp.reduce(np.stack(parts), axis=0)


def conditional_interval(
    y: F,
    scale: float,
    integer: bool,
    level: float,
    sel: Selection,
    valid: tuple[float, float],
) -> tuple[F, F]:
    """[L, U] per value of ``y`` holding the true value with probability ≥ ``level`` given
    the release (``y ∈ S``), searched inside ``valid``. Integer noise: integer truths."""
    y = np.asarray(y, dtype=np.float64)
    beta = 1.0 - level
    log_half = math.log(beta / 2.0)
    reach = 60.0 * scale + 1.0
    # Given a selection, the lower end can lie far below y (a value just above the threshold
    # is likely under any small truth): search much further down.
    lo_bound = np.maximum(valid[0], y - (reach if sel.none else 1e4 * reach))
    hi_bound = np.minimum(valid[1], y + reach)
    lo_bound = np.minimum(lo_bound, hi_bound)
    if integer:
        lo_bound, hi_bound = np.floor(lo_bound), np.ceil(hi_bound)

    def ok_low(x: F) -> npt.NDArray[np.bool_]:  # P_x(Y ≥ y | S) > β/2
        return (
            _log_tail_in_s(x, y, sel, scale, integer, True) - _log_in_s(x, sel, scale, integer)
            > log_half
        )

    def ok_high(x: F) -> npt.NDArray[np.bool_]:  # P_x(Y ≤ y | S) > β/2
        return (
            _log_tail_in_s(x, y, sel, scale, integer, False) - _log_in_s(x, sel, scale, integer)
            > log_half
        )

    lower = _search(lo_bound, hi_bound, ok_low, integer, want_smallest=True)
    upper = _search(lo_bound, hi_bound, ok_high, integer, want_smallest=False)
    return lower, np.maximum(upper, lower)


def _search(
    lo: F, hi: F, ok: Callable[[F], npt.NDArray[np.bool_]], integer: bool, want_smallest: bool
) -> F:
    """The smallest x with ok(x) (ok increasing in x), or the largest (ok decreasing);
    the search bound itself when ok holds everywhere / nowhere (conservative)."""
    test = ok
    a, b = lo.copy(), hi.copy()
    for _ in range(200 if integer else 80):
        if integer and np.all(b - a <= 1):
            break
        mid = np.floor((a + b) / 2) if integer else (a + b) / 2
        good = test(mid)
        if want_smallest:
            b, a = np.where(good, mid, b), np.where(good, a, mid)
        else:
            a, b = np.where(good, mid, a), np.where(good, b, mid)
    if want_smallest:
        return np.where(test(a), a, b)
    return np.where(test(b), b, a)
