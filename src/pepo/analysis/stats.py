"""Two-sample statistics for the shift between correct and incorrect responses (``scipy.stats``).

The formulas, so the numbers can be checked by hand (``tests/analysis/test_stats.py`` does):

* Mann-Whitney U (Mann & Whitney 1947): ``U_x = R_x - n_x (n_x + 1) / 2`` with average ranks for
  ties, i.e. the number of pairs ``(x_i, y_j)`` with ``x_i > y_j`` plus half the ties.
  ``auc = U_x / (n_x n_y)`` is the probability that a random ``x`` beats a random ``y`` (0.5: no
  shift). The two-sided p-value is ``scipy.stats.mannwhitneyu(..., method="asymptotic")``: the
  normal approximation with tie and continuity correction,

      sigma^2 = n_x n_y (n + 1) / 12 * tiecorrect,   tiecorrect = 1 - sum_ties (t^3 - t) / (n^3 - n)
      z = (U_x - n_x n_y / 2 -+ 0.5) / sigma,         p = erfc(|z| / sqrt(2))

* Kolmogorov-Smirnov ``D = sup_v |F_x(v) - F_y(v)|`` (``scipy.stats.ks_2samp``, the statistic only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["average_ranks", "ks_statistic", "mann_whitney_u", "shift_summary"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata(method="average")``)."""
    return stats.rankdata(np.asarray(values, dtype=np.float64), method="average")


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """``{"u", "auc", "z", "p_value"}`` of the Mann-Whitney U test of ``x`` against ``y``
    (two-sided; ``u`` counts the pairs where ``x`` is larger). NaN everywhere if a sample is empty."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nx, ny = len(x), len(y)
    if nx == 0 or ny == 0:
        return {"u": math.nan, "auc": math.nan, "z": math.nan, "p_value": math.nan}
    # scipy reports U and p but not z: z uses the same tie-corrected variance.
    variance = nx * ny * (nx + ny + 1) / 12.0 * stats.tiecorrect(average_ranks(np.concatenate([x, y])))
    if variance <= 0:  # every value tied: no evidence of a shift
        u = nx * ny / 2.0
        return {"u": u, "auc": u / (nx * ny), "z": 0.0, "p_value": 1.0}
    result = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
    u = float(result.statistic)
    centred = u - nx * ny / 2.0
    z = (centred - math.copysign(0.5, centred) if centred != 0 else 0.0) / math.sqrt(variance)
    return {"u": u, "auc": u / (nx * ny), "z": z, "p_value": float(result.pvalue)}


def ks_statistic(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup |F_x - F_y|`` (NaN if a sample is empty)."""
    if len(x) == 0 or len(y) == 0:
        return math.nan
    # Only the statistic is used: method="asymp" skips the exact p-value's cost, and errstate
    # silences that p-value's division by zero for one-value samples.
    with np.errstate(divide="ignore"):
        result = stats.ks_2samp(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), method="asymp")
    return float(result.statistic)


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
