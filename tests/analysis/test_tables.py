"""The numbers behind Figures 2 and 3 on constructed responses with known answers."""

import math

import numpy as np
import pytest

from pepo.analysis.tables import (
    figure2_per_question,
    figure2_shift,
    figure3_shift,
    normalize_word,
    spearman,
    top_k_indices,
    view_means,
    word_counts,
)

from .helpers import response


def test_view_means_hand_worked():
    # sorted 0.1, 0.3, 0.5, 0.9: all 1.8 / 4 = 0.45, top-2 (0.9 + 0.5) / 2 = 0.7, bottom-2 0.2
    assert view_means(np.array([0.1, 0.5, 0.3, 0.9]), 2) == pytest.approx({"all": 0.45, "top_k": 0.7, "bottom_k": 0.2})
    # a response shorter than K uses all its tokens in every view
    assert view_means(np.array([0.2, 0.4]), 5) == pytest.approx({"all": 0.3, "top_k": 0.3, "bottom_k": 0.3})


def test_top_k_ties_keep_the_earlier_position():
    assert top_k_indices(np.array([1.0, 3.0, 3.0, 0.0]), 2).tolist() == [1, 2]
    assert top_k_indices(np.array([1.0, 0.0, 0.0]), 1, largest=False).tolist() == [1]


INCORRECT = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
CORRECT_SPIKE = [0.1, 0.2, 0.3, 0.4, 5.0, 5.0]  # the same response with its two most visual tokens raised


def _spiked_questions():
    """4 questions (offset 0.01 q each), 2 correct and 2 incorrect responses each, plus a 5th
    question answered wrongly only."""
    out = []
    for q in range(4):
        for s in range(2):
            out.append(response(f"q{q}", s, True, np.array(CORRECT_SPIKE) + 0.01 * q))
            out.append(response(f"q{q}", 2 + s, False, np.array(INCORRECT) + 0.01 * q))
    out.append(response("q4", 0, False, np.array(INCORRECT) + 0.2))
    return out


def test_figure2_shift_only_in_the_top_k_view_when_only_the_top_tokens_differ():
    # K = 2. correct: top-2 mean 5.0, bottom-2 0.15, all 11 / 6; incorrect: 0.55, 0.15, 0.35
    # -> shift all 11/6 - 0.35 = 1.48333..., top 4.45, bottom exactly 0
    per_question = figure2_per_question(_spiked_questions(), ["cosine"], k=2)
    q0 = {(r["view"], r["group"]): r for r in per_question if r["question_id"] == "q0"}
    assert q0["top_k", "correct"]["value"] == pytest.approx(5.0) and q0["top_k", "correct"]["n_responses"] == 2
    assert q0["bottom_k", "incorrect"]["value"] == pytest.approx(0.15)
    shift = {r["view"]: r for r in figure2_shift(per_question)}
    assert shift["all"]["paired_mean_diff"] == pytest.approx(11 / 6 - 0.35, abs=1e-12)
    assert shift["top_k"]["paired_mean_diff"] == pytest.approx(4.45, abs=1e-12)
    assert shift["bottom_k"]["paired_mean_diff"] == pytest.approx(0.0, abs=1e-12)
    # unpaired: 4 correct questions against 5 incorrect ones (q4 only wrong, value offset 0.2)
    top = shift["top_k"]
    assert (top["questions_correct"], top["questions_incorrect"], top["paired_questions"]) == (4, 5, 4)
    assert top["mean_correct"] == pytest.approx(5.015) and top["mean_incorrect"] == pytest.approx(0.55 + 0.06 / 5 + 0.2 / 5)
    assert top["auc"] == 1.0 and top["ks_d"] == 1.0 and top["paired_share_correct_higher"] == 1.0
    # bottom: correct values 0.15 + 0.01 q (q = 0..3), incorrect the same plus 0.35 (q4):
    # U = pairs where correct is larger + ties / 2 = (0 + 1 + 2 + 3) + 4 * 0.5 = 8 of 20 -> auc 0.4
    bottom = shift["bottom_k"]
    assert bottom["u"] == 8.0 and bottom["auc"] == pytest.approx(0.4)
    assert bottom["paired_share_correct_higher"] == 0.0


def test_figure2_uniform_shift_is_the_same_in_every_view():
    rng = np.random.default_rng(0)
    responses = []
    for q in range(5):
        for s in range(3):
            base = rng.normal(size=12)
            responses.append(response(f"q{q}", s, False, base))
            responses.append(response(f"q{q}", 3 + s, True, base + 0.25))
    for row in figure2_shift(figure2_per_question(responses, ["cosine", "l2"], k=4)):
        assert row["paired_mean_diff"] == pytest.approx(0.25, abs=1e-12)
        assert row["mean_diff"] == pytest.approx(0.25, abs=1e-12)
        assert row["paired_questions"] == 5


def test_figure2_without_correct_responses_reports_nan():
    rows = figure2_shift(figure2_per_question([response("q", 0, False, [0.1, 0.2])], ["cosine"], k=1))
    assert len(rows) == 3
    assert all(r["questions_correct"] == 0 and math.isnan(r["mean_diff"]) and math.isnan(r["auc"]) for r in rows)


def test_figure3_high_similarity_tokens_move_more():
    # shift = 10 x similarity: high (top-1 per response) = [9, 8], rest = [1, 5, 2, 2, 3, 4]
    responses = [
        response("a", 0, True, [0.1, 0.9, 0.5, 0.2], shift=[1.0, 9.0, 5.0, 2.0]),
        response("b", 0, False, [0.2, 0.3, 0.8, 0.4], shift=[2.0, 3.0, 8.0, 4.0]),
    ]
    rows = {r["metric"]: r for r in figure3_shift(responses, "cosine", k=1)}
    l2 = rows["shift_l2"]
    assert (l2["tokens_high"], l2["tokens_rest"]) == (2, 6)
    assert l2["mean_high"] == pytest.approx(8.5) and l2["mean_rest"] == pytest.approx(17 / 6)
    assert l2["auc"] == 1.0 and l2["spearman_similarity_shift"] == pytest.approx(1.0)
    assert rows["shift_cos"]["mean_high"] == pytest.approx(0.85)


def test_figure3_skipped_without_shift():
    assert figure3_shift([response("a", 0, True, [0.1, 0.2])], "cosine", k=1) == []


def test_spearman_hand_worked():
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # ranks x = 1, 2, 3, y = 1, 3, 2: centred (-1, 0, 1) . (-1, 1, 0) = 1, norms 2 and 2 -> 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(spearman([1, 1], [1, 2]))


def test_normalize_word():
    assert normalize_word(" Angle") == "angle"
    assert normalize_word("<think>") is None and normalize_word(",") is None and normalize_word(" ") is None
    assert normalize_word("3") == "3"


def test_word_counts_hand_worked():
    tokens = ["The", "angle", ",", "<think>", "therefore", "angle"]
    responses = [
        # k = 1: entropy picks "therefore", similarity picks the first "angle" (ties: earlier); "," and
        # "<think>" hold the largest values but are not words
        response("a", 0, True, [0.1, 0.9, 5.0, 5.0, 0.2, 0.9], tokens=tokens, entropy=[0, 0, 9, 9, 3, 1]),
        response("b", 0, True, [0.0, 0.8, 5.0, 5.0, 0.1, 0.2], tokens=tokens, entropy=[0, 2, 9, 9, 1, 0]),
    ]
    similarity = word_counts(responses, "similarity/cosine", k=1)
    assert similarity == [{"word": "angle", "count": 2, "share": 1.0, "lift": 2.0}]  # angle is 4 of 8 words
    entropy = word_counts(responses, "entropy", k=1)
    # selected: therefore, angle (1 each, share 1/2); overall therefore 2/8, angle 4/8
    assert entropy == [{"word": "angle", "count": 1, "share": 0.5, "lift": 1.0},
                       {"word": "therefore", "count": 1, "share": 0.5, "lift": 2.0}]
