"""Two-sample statistics against hand-worked values and brute force."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pepo.analysis.stats import average_ranks, ks_statistic, mann_whitney_u, shift_summary


def test_average_ranks_share_ties():
    # sorted: 5 (rank 1), 10 (rank 2), 20, 20 (ranks 3 and 4 -> 3.5 each)
    assert average_ranks(np.array([10, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_mann_whitney_hand_worked_with_ties():
    # x = [1, 2, 2], y = [2, 3]; pooled 1,2,2,2,3 -> ranks 1, 3, 3, 3, 5
    # R_x = 1 + 3 + 3 = 7, U_x = 7 - 3*4/2 = 1 (pairs: 2-vs-2 ties count 1/2 twice)
    # ties: one group of t = 3 -> sum(t^3 - t) = 24; sigma^2 = 3*2/12 * (6 - 24/(5*4)) = 2.4
    # z = (1 - 3 + 0.5) / sqrt(2.4) = -0.968245836..., p = erfc(0.968245836 / sqrt 2) = 0.332921608...
    out = mann_whitney_u([1, 2, 2], [2, 3])
    assert out["u"] == 1.0
    assert out["auc"] == pytest.approx(1 / 6, abs=1e-15)
    assert out["z"] == pytest.approx(-0.9682458365518541, abs=1e-12)
    assert out["p_value"] == pytest.approx(0.33292160806556603, abs=1e-12)


def test_mann_whitney_complete_separation():
    # every x above every y: U_x = 4 * 2 = 8, auc 1; sigma^2 = 8/12 * 7 = 14/3,
    # z = (8 - 4 - 0.5) / sqrt(14/3) = 1.620185..., p = 0.105193...
    out = mann_whitney_u([3, 4, 5, 6], [1, 2])
    assert (out["u"], out["auc"]) == (8.0, 1.0)
    assert out["z"] == pytest.approx(3.5 / math.sqrt(14 / 3), abs=1e-12)
    assert out["p_value"] == pytest.approx(math.erfc(3.5 / math.sqrt(14 / 3) / math.sqrt(2)), abs=1e-12)


def test_mann_whitney_degenerate_inputs():
    assert math.isnan(mann_whitney_u([], [1.0])["u"])
    tied = mann_whitney_u([1.0, 1.0], [1.0])  # no information: no shift
    assert (tied["auc"], tied["z"], tied["p_value"]) == (0.5, 0.0, 1.0)


def test_ks_hand_worked():
    # x = [1, 2, 3], y = [2.5, 4]: at v = 2, F_x = 2/3 and F_y = 0 -> D = 2/3
    assert ks_statistic([1, 2, 3], [2.5, 4]) == pytest.approx(2 / 3, abs=1e-15)
    assert ks_statistic([1, 2], [1, 2]) == 0.0
    assert math.isnan(ks_statistic([], [1]))


def test_shift_summary_means():
    out = shift_summary([1.0, 2.0, 3.0], [0.5, 0.5])
    assert (out["n_x"], out["n_y"], out["mean_x"], out["mean_y"]) == (3, 2, 2.0, 0.5)
    assert out["mean_diff"] == 1.5 and out["auc"] == 1.0 and out["ks_d"] == 1.0


samples = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_mann_whitney_matches_pair_counting(x, y):
    pairs = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    out, swapped = mann_whitney_u(x, y), mann_whitney_u(y, x)
    assert out["u"] == pytest.approx(pairs, abs=1e-9)
    assert out["u"] + swapped["u"] == pytest.approx(len(x) * len(y), abs=1e-9)
    assert 0.0 <= out["p_value"] <= 1.0
    assert out["p_value"] == pytest.approx(swapped["p_value"], abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_ks_matches_brute_force(x, y):
    grid = sorted(set(x + y))
    brute = max(abs(sum(a <= v for a in x) / len(x) - sum(b <= v for b in y) / len(y)) for v in grid)
    assert ks_statistic(x, y) == pytest.approx(brute, abs=1e-12)
