"""Two-sample statistics for the shift between correct and incorrect responses (numpy only).

scipy is not a dependency of pepo; these are the textbook formulas, checked in
``tests/analysis/test_stats.py`` against hand-worked values.

* Mann-Whitney U (Mann & Whitney 1947): ``U_x = R_x - n_x (n_x + 1) / 2`` with average ranks for
  ties, i.e. the number of pairs ``(x_i, y_j)`` with ``x_i > y_j`` plus half the ties.
  ``auc = U_x / (n_x n_y)`` is the probability that a random ``x`` beats a random ``y`` (0.5: no
  shift). The two-sided p-value is the normal approximation with tie and continuity correction
  (what ``scipy.stats.mannwhitneyu(..., method="asymptotic")`` computes):

      sigma^2 = n_x n_y / 12 * ((n + 1) - sum_ties (t^3 - t) / (n (n - 1)))
      z = (U_x - n_x n_y / 2 -+ 0.5) / sigma,   p = erfc(|z| / sqrt(2))

* Kolmogorov-Smirnov ``D = sup_v |F_x(v) - F_y(v)|`` (the statistic only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["average_ranks", "ks_statistic", "mann_whitney_u", "shift_summary"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata(method="average")``)."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])  # values strictly smaller than each unique
    return (below + (counts + 1) / 2.0)[inverse]


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """``{"u", "auc", "z", "p_value"}`` of the Mann-Whitney U test of ``x`` against ``y``
    (two-sided; ``u`` counts the pairs where ``x`` is larger). NaN everywhere if a sample is empty."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nx, ny = len(x), len(y)
    if nx == 0 or ny == 0:
        return {"u": math.nan, "auc": math.nan, "z": math.nan, "p_value": math.nan}
    n = nx + ny
    ranks = average_ranks(np.concatenate([x, y]))
    u = float(ranks[:nx].sum() - nx * (nx + 1) / 2.0)
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    tie_term = float((counts**3 - counts).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = nx * ny / 12.0 * ((n + 1) - tie_term)
    centred = u - nx * ny / 2.0
    if variance <= 0:  # every value tied: no evidence of a shift
        z, p = 0.0, 1.0
    else:
        z = (centred - math.copysign(0.5, centred) if centred != 0 else 0.0) / math.sqrt(variance)
        p = min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))
    return {"u": u, "auc": u / (nx * ny), "z": z, "p_value": p}


def ks_statistic(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup |F_x - F_y|`` (NaN if a sample is empty)."""
    x, y = np.sort(np.asarray(x, dtype=np.float64)), np.sort(np.asarray(y, dtype=np.float64))
    if len(x) == 0 or len(y) == 0:
        return math.nan
    grid = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, grid, side="right") / len(x)
    cdf_y = np.searchsorted(y, grid, side="right") / len(y)
    return float(np.abs(cdf_x - cdf_y).max())


def shift_summary(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """How far sample ``x`` sits to the right of ``y``: sizes, means, ``mean_diff = mean x - mean y``,
    Mann-Whitney ``u`` / ``auc`` / ``z`` / ``p_value`` and the KS statistic ``ks_d``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mean_x = float(x.mean()) if len(x) else math.nan
    mean_y = float(y.mean()) if len(y) else math.nan
    return {
        "n_x": len(x), "n_y": len(y), "mean_x": mean_x, "mean_y": mean_y, "mean_diff": mean_x - mean_y,
        **mann_whitney_u(x, y), "ks_d": ks_statistic(x, y),
    }
