"""Matplotlib figures from the tables of :mod:`pepo.analysis.tables` and :mod:`pepo.analysis.dynamics`.

Every function takes the numbers (never the model), writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pepo.analysis.dynamics import METRIC_KEYS  # noqa: E402
from pepo.analysis.tables import VIEWS  # noqa: E402

__all__ = ["plot_dynamics", "plot_hidden_shift", "plot_similarity", "plot_words", "smooth", "smoothing_weight"]

VIEW_TITLES = {"all": "(a) all tokens", "top_k": "(b) top-{k} tokens", "bottom_k": "(c) bottom-{k} tokens"}
COLOURS = {"correct": "tab:green", "incorrect": "tab:red"}


def _bins(values: Sequence[float], count: int = 20) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5e-3, hi + 0.5e-3
    return np.linspace(lo, hi, count + 1)


def plot_similarity(per_question: Sequence[dict], shift: Sequence[dict], measure: str, k: int, path: Path) -> Path:
    """Figure 2: per-question visual similarity, correct vs incorrect, one panel per view."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, view in zip(axes, VIEWS):
        groups = {g: [r["value"] for r in per_question if r["measure"] == measure and r["view"] == view and r["group"] == g]
                  for g in COLOURS}
        bins = _bins(groups["correct"] + groups["incorrect"])
        for group, values in groups.items():
            if values:
                ax.hist(values, bins=bins, alpha=0.55, color=COLOURS[group], label=f"{group} ({len(values)} questions)")
                ax.axvline(float(np.mean(values)), color=COLOURS[group], linestyle="--")
        row = next((r for r in shift if r["measure"] == measure and r["view"] == view), None)
        title = VIEW_TITLES[view].format(k=k)
        if row is not None and np.isfinite(row["mean_diff"]):
            title += f"\nshift {row['mean_diff']:+.4f}, AUC {row['auc']:.2f}, p {row['p_value']:.2g}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"per-question mean visual similarity ({measure})")
        ax.set_ylabel("questions")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_hidden_shift(responses, measure: str, k: int, path: Path) -> Path:
    """Figure 3 (left): hidden-state shift without the image, high-similarity tokens vs the rest;
    (right): similarity against shift, every token."""
    from pepo.analysis.tables import top_k_indices

    high, rest, similarity, shift = [], [], [], []
    for response in responses:
        if response.shift_l2 is None:
            continue
        chosen = np.zeros(len(response), dtype=bool)
        chosen[top_k_indices(response.similarity[measure], k)] = True
        high += response.shift_l2[chosen].tolist()
        rest += response.shift_l2[~chosen].tolist()
        similarity += response.similarity[measure].tolist()
        shift += response.shift_l2.tolist()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = _bins(high + rest)
    for name, values, colour in ((f"top-{k} similarity", high, "tab:orange"), ("rest", rest, "tab:gray")):
        if values:
            left.hist(values, bins=bins, alpha=0.55, color=colour, density=True, label=f"{name} (mean {np.mean(values):.3f})")
    left.set_xlabel("hidden-state shift without the image (mean L2 over layers)")
    left.set_ylabel("density")
    left.legend(fontsize=8)
    right.scatter(similarity, shift, s=6, alpha=0.4)
    right.set_xlabel(f"visual similarity ({measure})")
    right.set_ylabel("hidden-state shift (L2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _word_cloud(ax, rows: Sequence[dict], title: str) -> None:
    """Words sized by count, packed left to right in lines, each placed by its rendered extent (no
    word-cloud dependency)."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    if not rows:
        ax.text(0.5, 0.5, "(no tokens)", ha="center", va="center")
        return
    renderer = ax.figure.canvas.get_renderer()
    to_axes = ax.transAxes.inverted()
    top = max(r["count"] for r in rows)
    x, y, line_height, gap = 0.0, 1.0, 0.0, 0.02
    for row in rows:
        colour = plt.cm.viridis(0.85 * (1 - row["count"] / top))
        text = ax.text(x, y, row["word"], fontsize=9 + 23 * row["count"] / top, va="top", color=colour)
        (x0, y0), (x1, y1) = to_axes.transform(text.get_window_extent(renderer).get_points())
        if x1 > 1.0 and x > 0.0:  # next line
            y, x, line_height = y - line_height - gap, 0.0, 0.0
            text.set_position((x, y))
            (x0, y0), (x1, y1) = to_axes.transform(text.get_window_extent(renderer).get_points())
        if y1 - y0 > y:  # no room left below
            text.remove()
            break
        x, line_height = x + (x1 - x0) + gap, max(line_height, y1 - y0)


def plot_words(entropy_rows: Sequence[dict], similarity_rows: Sequence[dict], k: int, path: Path) -> Path:
    """Figure 3 (words): the most frequent high-entropy and high-similarity tokens."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    _word_cloud(left, entropy_rows, f"high-entropy tokens (top-{k} per response)")
    _word_cloud(right, similarity_rows, f"high-similarity tokens (top-{k} per response)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average: ``s_t = (w s_{t-1} + (1 - w) x_t)`` divided by
    ``1 - w^t`` so the first points are not pulled towards 0. ``weight`` 0 returns the values."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight={weight}: must be in [0, 1)")
    out = np.empty(len(values), dtype=np.float64)
    last, norm = 0.0, 0.0
    for t, value in enumerate(values):
        last = weight * last + (1.0 - weight) * float(value)
        norm = weight * norm + (1.0 - weight)
        out[t] = last / norm
    return out


def smoothing_weight(points: int) -> float:
    """About a tenth of the run per effective window; none below 20 points (each point is shown)."""
    return 0.0 if points < 20 else 1.0 - 10.0 / points


def plot_dynamics(rows: Sequence[dict], path: Path) -> Path:
    """Figure 6: one panel per curve of :data:`METRIC_KEYS`, one colour per run: the raw per-step values
    faint, their moving average (:func:`smooth`) on top."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    for ax, (curve, (key, label)) in zip(axes.flat, METRIC_KEYS.items()):
        for index, run in enumerate(runs):
            points = sorted((r["step"], r["value"]) for r in rows if r["run"] == run and r["curve"] == curve)
            if not points:
                continue
            steps, values = zip(*points)
            colour = f"C{index % 10}"  # one colour per run in every panel, also where another run logged nothing
            weight = smoothing_weight(len(points))
            if weight == 0.0:
                ax.plot(steps, values, marker=".", label=run, color=colour)
            else:
                ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smooth(values, weight), label=f"{run} (smoothed)", color=colour, linewidth=1.8)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no run logged {key!r}", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
