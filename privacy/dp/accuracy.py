"""Accuracy statements for released values, and suppression (both pure post-processing).

Released noisy aggregates carry OpenDP's CI half-width at α (from the mechanism's known noise
distribution). Derived values (means, ratios, index scores) get theirs by simulation from the
same distributions: draw each input's noise again around the released estimate, recompute
the derived value, and take the central 1−α interval. This uses released values and public
scales only, so it costs no privacy budget.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def gaussian_half_width(scale: float, alpha: float = 0.05) -> float:
    """Half-width of the central 1−α interval of N(0, scale²)."""
    return NormalDist().inv_cdf(1 - alpha / 2) * scale


def discrete_gaussian_half_width(scale: float, alpha: float = 0.05) -> tuple[int, float]:
    """Smallest integer h with P(|Z| ≤ h) ≥ 1 − α for Z discrete Gaussian (σ = ``scale``),
    and that exact level. OpenDP's accuracy utility bounds the tail conservatively, so its
    "95 %" interval covers 99.5–99.9 %; this one states the level it actually has.

    Above σ = 2000 the discrete and continuous Gaussians agree to better than 1e-9 in level,
    so the continuous quantile rounded up is used (the pmf would need millions of points).
    """
    if scale <= 0:
        return 0, 1.0
    if scale > 2000:
        h = int(np.ceil(NormalDist().inv_cdf(1 - alpha / 2) * scale))
        level = 2 * NormalDist(0, scale).cdf(h + 0.5) - 1
        return h, float(level)
    k_max = int(np.ceil(scale * 14)) + 2
    k = np.arange(0, k_max + 1, dtype=np.float64)
    w = np.exp(-(k**2) / (2 * scale * scale))
    total = w[0] + 2 * w[1:].sum()
    cover = (w[0] + 2 * np.concatenate(([0.0], np.cumsum(w[1:])))) / total  # P(|Z| ≤ k)
    h = int(np.searchsorted(cover, 1 - alpha - 1e-15))
    return h, float(cover[h])


def simulate_noise(
    estimates: FloatArray, scale: float, sims: int, rng: np.random.Generator
) -> FloatArray:
    """``sims`` plausible true values per cell: estimate minus a fresh Gaussian draw."""
    est = np.asarray(estimates, dtype=np.float64)
    return est[None, :] - rng.normal(0.0, scale, size=(sims, est.shape[0]))


def interval(samples: FloatArray, alpha: float = 0.05) -> tuple[FloatArray, FloatArray]:
    """Per-column central 1−α interval of simulated values (NaN-safe).

    A column whose every simulation is undefined (e.g. a ratio over a denominator that is
    never positive) gets a NaN interval; callers withhold such cells.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        lo = np.nanquantile(samples, alpha / 2, axis=0)
        hi = np.nanquantile(samples, 1 - alpha / 2, axis=0)
    return lo, hi


def ratio_half_width(
    numerator: FloatArray,
    num_scale: float,
    denominator: FloatArray,
    den_scale: float,
    alpha: float = 0.05,
    sims: int = 4000,
    seed: int = 0,
) -> FloatArray:
    """Half-width of the simulated 1−α interval of numerator/denominator per cell."""
    rng = np.random.default_rng(seed)
    num = simulate_noise(np.asarray(numerator, dtype=np.float64), num_scale, sims, rng)
    den = simulate_noise(np.asarray(denominator, dtype=np.float64), den_scale, sims, rng)
    # A simulated denominator at or below zero has no meaningful ratio; such cells are
    # suppressed anyway (their noisy count is under the threshold).
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den >= 1.0, num / np.maximum(den, 1.0), np.nan)
    lo, hi = interval(ratio, alpha)
    return np.asarray((hi - lo) / 2.0, dtype=np.float64)


def relative_error(half_width: FloatArray, estimate: FloatArray) -> FloatArray:
    """CI half-width over |estimate| (inf where the estimate is 0)."""
    hw = np.asarray(half_width, dtype=np.float64)
    est = np.abs(np.asarray(estimate, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(est > 0, hw / est, np.inf)


@dataclass(frozen=True)
class Suppression:
    suppressed: npt.NDArray[np.bool_]
    reasons: list[str | None]


def suppress(
    count: FloatArray,
    rel_error: FloatArray,
    min_count: float,
    max_relative_error: float | None,
    extra: npt.NDArray[np.bool_] | None = None,
    extra_reason: str = "",
) -> Suppression:
    """Withhold cells whose noisy count is under ``min_count`` or whose relative error is
    above the accuracy target; ``extra`` marks cells suppressed for a caller's reason."""
    cnt = np.asarray(count, dtype=np.float64)
    rel = np.asarray(rel_error, dtype=np.float64)
    small = cnt < min_count
    inaccurate = (
        np.zeros_like(small)
        if max_relative_error is None
        else (~small) & ~(rel <= max_relative_error)
    )
    other = (
        np.zeros_like(small)
        if extra is None
        else np.asarray(extra, dtype=bool) & ~small & ~inaccurate
    )
    reasons: list[str | None] = []
    for s, i, o in zip(small, inaccurate, other, strict=True):
        if s:
            reasons.append(f"noisy count below {min_count:g}")
        elif i:
            # No value in the reason: with the public CI half-width it would give the
            # withheld estimate back.
            reasons.append(f"relative error above target {max_relative_error:g}")
        elif o:
            reasons.append(extra_reason)
        else:
            reasons.append(None)
    return Suppression(suppressed=small | inaccurate | other, reasons=reasons)


def quantile_rank_error(rank_scale: float, candidates: int, alpha: float = 0.05) -> float:
    """Half-width r, in ranks (units), of the interval a DP quantile supports at level 1 − α.

    OpenDP's quantile is report-noisy-max with Gumbel noise over public candidates c₁…c_m
    scored by the rank error e(c) = |#(x < c) − q·(n − #(x = c))|: the candidate minimising
    e(c) + Gumbel noise of scale b (``rank_scale``, in ranks) is released, which picks c with
    probability ∝ exp(−e(c)/b) (the Gumbel-max trick). A candidate whose rank error exceeds
    the best candidate's by t or more is picked with probability at most exp(−t/b), so by the
    union bound over the other m − 1 candidates

        P(e(released) > e(best) + r) ≤ α   for   r = b · ln((m − 1)/α).

    So with probability ≥ 1 − α the released value lies between the true quantiles at ranks
    q·n − r and q·n + r, widened by the candidate grid's own gap e(best) (zero when a
    candidate sits at the true quantile). r depends on the spec only (ρ, contributions,
    candidate count, α), never on the data; r/n is the interval in quantile levels.
    """
    if candidates < 2:
        return 0.0
    return float(rank_scale * math.log((candidates - 1) / alpha))
