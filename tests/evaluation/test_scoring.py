"""Scoring, majority vote and the avg@N totals, hand-worked."""

import pytest

from pepo.data import Record, build_prompt
from pepo.evaluation import majority_vote, score_answer, summarize


def record(solution, task="math", **fields):
    return Record(id="q", prompt=build_prompt("q", 0), images=[], solution=solution, task=task, **fields)


@pytest.mark.parametrize(
    ("rec", "completion", "expected"),
    [
        (record("15"), "<think>..</think><answer>15.0</answer>", ("15.0", 1.0)),
        (record("2 \\sqrt { 3 }"), "<answer>\\boxed{2\\sqrt{3}}</answer>", ("2\\sqrt{3}", 1.0)),
        (record("15"), "the answer is 16", ("the answer is 16", 0.0)),  # lenient: whole text
        (record("b", "choice", choices=["a", "b"]), "<answer>(B)</answer>", ("(B)", 1.0)),
        (record("B", "choice"), "<answer>A</answer>", ("A", 0.0)),
        # MathVista: an answer naming no option goes to the nearest option, as in the release
        (record("bigger", "choice", choices=["smaller", "bigger"], meta={"nearest_choice": True}), "<answer>biger</answer>", ("biger", 1.0)),
        (record("1.5", meta={"answer_type": "float", "precision": 1}), "<answer>1.54</answer>", ("1.5", 1.0)),
        (record("3", meta={"answer_type": "integer"}), "<answer>3.0</answer>", ("3", 1.0)),
        (record([0, 0, 10, 10], "grounding"), "<answer>[0, 0, 10, 8]</answer>", ("[0, 0, 10, 8]", 1.0)),  # IoU 0.8
        (record([0, 0, 10, 10], "grounding"), "<answer>[5, 0, 15, 10]</answer>", ("[5, 0, 15, 10]", 0.0)),  # IoU 1/3
    ],
)
def test_score_answer(rec, completion, expected):
    assert score_answer(rec, completion) == expected


def test_majority_vote_most_frequent_then_earliest():
    assert majority_vote(["3", "4", "4.", "3"], [1.0, 0.0, 0.0, 1.0]) == ("3", 1.0)  # 2-2 tie: earliest
    assert majority_vote(["", "7", " 7 "], [0.0, 0.0, 0.0]) == ("7", 0.0)
    assert majority_vote(["", ""], [0.0, 0.0]) == ("", 0.0)


def test_summarize_hand_worked():
    rows = [
        {"score": 0.75, "majority_correct": 1.0, "categories": {"skills": ["a", "b"], "v": "x"}, "completion_tokens": [4, 6]},
        {"score": 0.25, "majority_correct": 0.0, "categories": {"skills": ["a"], "v": "y"}, "completion_tokens": [2, 4]},
    ]
    totals = summarize(rows)
    # avg@N = mean(0.75, 0.25) = 50%; majority 1/2 = 50%;
    # stderr = sqrt(((0.25^2 + 0.25^2) / 1) / 2) = 0.25 -> 25 points
    assert totals["avg_at_n"] == 50.0 and totals["majority"] == 50.0
    assert totals["avg_at_n_stderr"] == pytest.approx(25.0, abs=1e-12)
    assert totals["mean_completion_tokens"] == 4.0
    assert totals["categories"]["skills"]["a"]["questions"] == 2 and totals["categories"]["skills"]["b"]["avg_at_n"] == 75.0
    assert totals["categories"]["v"]["y"] == {"questions": 1, "avg_at_n": 25.0, "avg_at_n_stderr": 0.0, "majority": 0.0}
    assert summarize([])["questions"] == 0
