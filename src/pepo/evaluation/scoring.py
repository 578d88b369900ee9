"""Scoring one sampled answer, majority voting, and the avg@N totals (``docs/method.md``, Data and evaluation).

avg@N: each question is sampled N times (N = 8 at temperature 1.0 in the paper; N = 1 is greedy);
its score is the mean correctness of the N samples, and the benchmark score is the mean over
questions, in percent. The majority answer (most frequent normalised answer, ties to the earliest)
is reported beside it.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from typing import Any

from pepo.data.records import Record
from pepo.rewards import box_iou, extract_answer, grade_math, match_choice, normalize_answer, parse_box

__all__ = ["majority_vote", "paired_standard_error", "score_answer", "summarize"]

IOU_THRESHOLD = 0.5  # grounding is scored as IoU@50


def _mathvista_free_form(answer: str, meta: dict[str, Any]) -> str:
    """MathVista's normalisation of free-form answers (the release's ``normalize_extracted_answer``):
    integers as ``int(float(x))``, floats rounded to the question's precision."""
    try:
        if meta.get("answer_type") == "integer":
            return str(int(float(answer)))
        if meta.get("answer_type") == "float":
            return str(round(float(answer), int(meta.get("precision") or 0)))
    except (ValueError, OverflowError):
        pass
    return answer


def score_answer(record: Record, completion: str) -> tuple[str, float]:
    """``(extracted answer, correctness in {0, 1})`` of one completion for ``record``.

    The answer is taken leniently, as the release's evaluation scripts do (see
    :func:`pepo.rewards.extract_answer`), then graded by the record's task.
    """
    answer = extract_answer(completion, lenient=True) or ""
    if record.task == "grounding":
        return answer, float(box_iou(parse_box(answer), record.solution) >= IOU_THRESHOLD)
    if record.task == "choice":
        correct = match_choice(answer, record.solution, record.choices)
        if not correct and record.choices and record.meta.get("nearest_choice") and answer:
            # MathVista's release maps an answer that names no option to the most similar option
            options = [normalize_answer(c) for c in record.choices]
            nearest = difflib.get_close_matches(normalize_answer(answer), options, n=1, cutoff=0.0)
            correct = bool(nearest) and match_choice(nearest[0], record.solution, record.choices)
        return answer, float(correct)
    if record.meta.get("answer_type") in ("integer", "float"):
        answer = _mathvista_free_form(answer, record.meta)
    return answer, float(grade_math(answer, str(record.solution)))


def paired_standard_error(before: list[float], after: list[float]) -> float:
    """Standard error of the mean per-question difference ``after - before`` (the same questions
    scored twice): the unit a lift such as "after RL vs the warm start" is measured in. NaN below
    two questions."""
    if len(before) != len(after):
        raise ValueError(f"paired scores need the same questions: {len(before)} before, {len(after)} after")
    diffs = [b - a for a, b in zip(before, after)]
    if len(diffs) < 2:
        return float("nan")
    mean = sum(diffs) / len(diffs)
    return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))


def majority_vote(answers: list[str], scores: list[float]) -> tuple[str, float]:
    """The most frequent non-empty normalised answer (ties: the earliest) and its correctness."""
    keys = [normalize_answer(a) for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return "", 0.0
    best = max(counts, key=lambda k: (counts[k], -keys.index(k)))
    first = keys.index(best)
    return answers[first], scores[first]


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [row["score"] for row in rows]
    n = len(scores)
    mean = sum(scores) / n
    std_error = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n) if n > 1 else 0.0
    return {
        "questions": n,
        "avg_at_n": 100.0 * mean,
        "avg_at_n_stderr": 100.0 * std_error,
        "majority": 100.0 * sum(row["majority_correct"] for row in rows) / n,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over per-question rows: avg@N and majority accuracy in percent (and the standard
    error of avg@N over questions), overall and per category value (a list-valued category, e.g.
    MathVista's ``skills``, counts the question under each of its values)."""
    if not rows:
        return {"questions": 0, "avg_at_n": 0.0, "avg_at_n_stderr": 0.0, "majority": 0.0, "categories": {}}
    totals = _stats(rows)
    lengths = [length for row in rows for length in row.get("completion_tokens", [])]
    if lengths:
        totals["mean_completion_tokens"] = sum(lengths) / len(lengths)
    groups: dict[str, dict[str, list]] = {}
    for row in rows:
        for key, value in row.get("categories", {}).items():
            for item in value if isinstance(value, list) else [value]:
                groups.setdefault(key, {}).setdefault(str(item), []).append(row)
    totals["categories"] = {
        key: {value: _stats(members) for value, members in sorted(values.items())} for key, values in sorted(groups.items())
    }
    return totals
