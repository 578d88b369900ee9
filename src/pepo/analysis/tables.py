"""The numbers behind paper Figures 2 and 3, from recorded responses (numpy and scipy, no plotting).

Figure 2 (visual similarity, correct vs incorrect). Per response: the mean similarity over
(a) ``all`` its tokens, (b) its ``top_k`` most visual tokens, (c) its ``bottom_k`` least visual
tokens (a response shorter than K uses all its tokens). Per question and group (correct /
incorrect): the mean over that group's responses. The distributions are those per-question values;
the shift is ``mean(correct) - mean(incorrect)`` plus Mann-Whitney U and KS over the two sets of
questions, and, over the questions that have both correct and incorrect responses, the paired
mean difference and the share of questions where correct is higher.

Figure 3 (hidden-state shift without the image). Per response, the top-K tokens by visual
similarity are "high"; every other token is "rest". The shift of the two groups is compared with
the same statistics, and the rank correlation of similarity and shift over all tokens is reported.
Word lists: per response, the top-K tokens by entropy and by similarity, counted over responses
(text lower-cased and stripped; tokens without a letter or digit and markup tags such as
``<think>`` are left out), with ``lift`` = share among the selected tokens / share among all tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

from pepo.analysis.signals import ResponseTokens
from pepo.analysis.stats import shift_summary

__all__ = [
    "VIEWS",
    "figure2_per_question",
    "figure2_shift",
    "figure3_shift",
    "normalize_word",
    "spearman",
    "top_k_indices",
    "view_means",
    "word_counts",
]

VIEWS = ("all", "top_k", "bottom_k")
GROUPS = ("correct", "incorrect")
_MARKUP = re.compile(r"^<[^<>]*>$")


def top_k_indices(values: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Indices of the ``k`` largest (or smallest) values; ties keep the earlier position."""
    order = np.argsort(-values if largest else values, kind="stable")
    return order[: min(k, len(values))]


def view_means(similarity: np.ndarray, k: int) -> dict[str, float]:
    """One response's mean similarity over all / its top-K / its bottom-K tokens."""
    similarity = np.asarray(similarity, dtype=np.float64)
    return {
        "all": float(similarity.mean()),
        "top_k": float(similarity[top_k_indices(similarity, k)].mean()),
        "bottom_k": float(similarity[top_k_indices(similarity, k, largest=False)].mean()),
    }


def figure2_per_question(responses: Sequence[ResponseTokens], measures: Sequence[str], k: int) -> list[dict]:
    """Rows ``{question_id, measure, view, group, value, n_responses}``: per question, the mean over
    its correct (resp. incorrect) responses of each response's view mean."""
    per: dict[tuple, list[float]] = {}
    questions: dict[str, None] = {}
    for response in responses:
        questions.setdefault(response.question_id)
        group = "correct" if response.correct else "incorrect"
        for measure in measures:
            for view, value in view_means(response.similarity[measure], k).items():
                per.setdefault((response.question_id, measure, view, group), []).append(value)
    rows = []
    for question in questions:
        for measure in measures:
            for view in VIEWS:
                for group in GROUPS:
                    values = per.get((question, measure, view, group))
                    if values:
                        rows.append({"question_id": question, "measure": measure, "view": view, "group": group,
                                     "value": float(np.mean(values)), "n_responses": len(values)})
    return rows


def figure2_shift(per_question: Sequence[dict]) -> list[dict]:
    """Per ``(measure, view)``: :func:`~pepo.analysis.stats.shift_summary` of the correct against
    the incorrect per-question values (``x`` = correct), plus the paired comparison."""
    cells: dict[tuple, dict[str, dict[str, float]]] = {}
    for row in per_question:
        cells.setdefault((row["measure"], row["view"]), {"correct": {}, "incorrect": {}})[row["group"]][row["question_id"]] = row["value"]
    out = []
    for (measure, view), groups in cells.items():
        correct, incorrect = groups["correct"], groups["incorrect"]
        both = [q for q in correct if q in incorrect]
        differences = np.array([correct[q] - incorrect[q] for q in both])
        summary = shift_summary(list(correct.values()), list(incorrect.values()))
        out.append({
            "measure": measure, "view": view,
            "questions_correct": summary.pop("n_x"), "questions_incorrect": summary.pop("n_y"),
            "mean_correct": summary.pop("mean_x"), "mean_incorrect": summary.pop("mean_y"), **summary,
            "paired_questions": len(both),
            "paired_mean_diff": float(differences.mean()) if len(both) else math.nan,
            "paired_share_correct_higher": float((differences > 0).mean()) if len(both) else math.nan,
        })
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``: Pearson correlation of average ranks);
    NaN if undefined (fewer than two values, or a constant sample)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:  # spearmanr would warn and return NaN
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def figure3_shift(responses: Sequence[ResponseTokens], measure: str, k: int) -> list[dict]:
    """Per shift metric (``shift_l2``, ``shift_cos``): high-similarity tokens (top-K per response)
    against the rest, and the Spearman correlation of similarity and shift over all tokens."""
    out = []
    for metric in ("shift_l2", "shift_cos"):
        high, rest, similarity, shift = [], [], [], []
        for response in responses:
            values = getattr(response, metric)
            if values is None:
                continue
            chosen = np.zeros(len(values), dtype=bool)
            chosen[top_k_indices(response.similarity[measure], k)] = True
            high.extend(values[chosen].tolist())
            rest.extend(values[~chosen].tolist())
            similarity.extend(response.similarity[measure].tolist())
            shift.extend(values.tolist())
        if not shift:
            continue
        summary = shift_summary(high, rest)
        out.append({
            "metric": metric, "measure": measure,
            "tokens_high": summary.pop("n_x"), "tokens_rest": summary.pop("n_y"),
            "mean_high": summary.pop("mean_x"), "mean_rest": summary.pop("mean_y"), **summary,
            "spearman_similarity_shift": spearman(similarity, shift),
        })
    return out


def normalize_word(token: str) -> str | None:
    """Lower-cased, stripped token text; ``None`` for punctuation, whitespace and markup tags."""
    word = token.strip().lower()
    if not word or _MARKUP.match(word) or not any(c.isalnum() for c in word):
        return None
    return word


def word_counts(responses: Sequence[ResponseTokens], signal: str, k: int, top: int = 30) -> list[dict]:
    """The ``top`` most frequent words among each response's top-K tokens by ``signal``
    (``"entropy"`` or ``"similarity/<measure>"``): rows ``{word, count, share, lift}``."""
    selected: Counter[str] = Counter()
    overall: Counter[str] = Counter()
    for response in responses:
        values = response.entropy if signal == "entropy" else response.similarity[signal.split("/", 1)[1]]
        words = [normalize_word(t) for t in response.tokens]
        overall.update(w for w in words if w)
        # top-K among the tokens that are words (punctuation does not take a slot)
        candidates = np.array([i for i, w in enumerate(words) if w], dtype=int)
        if len(candidates) == 0:
            continue
        chosen = candidates[top_k_indices(np.asarray(values)[candidates], k)]
        selected.update(words[i] for i in chosen)
    n_selected, n_overall = sum(selected.values()), sum(overall.values())
    rows = []
    for word, count in sorted(selected.items(), key=lambda item: (-item[1], item[0]))[:top]:
        share = count / n_selected
        rows.append({"word": word, "count": count, "share": share, "lift": share / (overall[word] / n_overall)})
    return rows
