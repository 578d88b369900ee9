"""Training curves (paper Figure 6, pepo demo's curves.png): the raw per-step values faint, a smoothed line on top."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pepo.analysis import plots

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=60), st.floats(0.0, 0.99))
def test_smoothed_values_stay_within_the_range_seen_so_far(values, weight):
    smoothed = plots.smooth(values, weight)
    assert smoothed.shape == (len(values),) and np.isfinite(smoothed).all()
    assert smoothed[0] == pytest.approx(values[0], rel=1e-9, abs=1e-9)  # debiased: no pull towards 0
    for t in range(len(values)):
        lo, hi = min(values[: t + 1]), max(values[: t + 1])
        assert lo - 1e-6 * (1 + abs(lo)) <= smoothed[t] <= hi + 1e-6 * (1 + abs(hi))


@given(finite, st.integers(1, 50), st.floats(0.0, 0.99))
def test_a_constant_stays_constant(value, n, weight):
    np.testing.assert_allclose(plots.smooth([value] * n, weight), value, rtol=1e-9, atol=1e-9)


def test_smoothing_reduces_noise_and_keeps_the_trend():
    rng = np.random.default_rng(0)
    steps = np.arange(200)
    trend = steps / 200
    raw = trend + rng.normal(0, 0.3, 200)
    smoothed = plots.smooth(raw, plots.smoothing_weight(200))
    assert np.std(np.diff(smoothed)) < 0.2 * np.std(np.diff(raw))
    assert smoothed[-1] > smoothed[20] + 0.5  # the upward trend survives
    np.testing.assert_array_equal(plots.smooth(raw, 0.0), raw)
    with pytest.raises(ValueError, match="weight=1.0"):
        plots.smooth(raw, 1.0)


def test_dynamics_figure_draws_faint_raw_values_under_a_smoothed_line(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    rng = np.random.default_rng(1)
    rows = [{"run": run, "step": s, "curve": "reward", "value": float(v)}
            for run in ("grpo", "pepo_g") for s, v in enumerate(rng.normal(0.5, 0.2, 100), start=1)]
    rows += [{"run": "short", "step": s, "curve": "entropy", "value": 1.0 + s} for s in (1, 2, 3)]
    path = plots.plot_dynamics(rows, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reward_ax, entropy_ax = figures[0].axes[0], figures[0].axes[3]
    lines = reward_ax.get_lines()
    assert len(lines) == 4  # per run: the raw values, then the smoothed line
    for raw, smooth in zip(lines[::2], lines[1::2]):
        assert raw.get_alpha() < 0.5 and smooth.get_alpha() in (None, 1.0) and raw.get_color() == smooth.get_color()
        np.testing.assert_allclose(smooth.get_ydata(), plots.smooth(raw.get_ydata(), plots.smoothing_weight(100)))
        assert np.std(smooth.get_ydata()) < 0.5 * np.std(raw.get_ydata())
    assert [t.get_text() for t in reward_ax.get_legend().get_texts()] == ["grpo (smoothed)", "pepo_g (smoothed)"]
    # a run of 3 points is too short to smooth: each point shown as it was logged
    (short,) = entropy_ax.get_lines()
    np.testing.assert_array_equal(short.get_ydata(), [2.0, 3.0, 4.0])
    assert short.get_marker() == "."
