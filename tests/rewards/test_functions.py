"""The TRL reward functions and their registry."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pepo.rewards import (
    REWARD_FUNCTIONS,
    accuracy_reward,
    choice_reward,
    format_reward,
    get_reward,
    grounding_iou_reward,
    make_grounding_reward,
    math_verify_accuracy_reward,
    register_reward,
)

GOOD = "<think>The angle is 30 degrees.</think><answer>15</answer>"


def test_accuracy_on_strings_and_conversations():
    completions = [
        GOOD,
        [{"role": "assistant", "content": "<think>x</think><answer>15.0</answer>"}],
        "<think>x</think><answer>16</answer>",
        "15",  # no tags
        "<answer>1</answer><answer>15</answer>",  # two answers: the first counts
        "",
        None,
    ]
    assert accuracy_reward(completions, solution=["15"] * 7) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_math_verify_accuracy_reward_grades_with_math_verify():
    # a set in another order: math-verify equal, mathruler not; so the reward shows which grader ran
    completions = ["<think>x</think><answer>$\\{2,1\\}$</answer>", "<think>x</think><answer>$\\{1,3\\}$</answer>", "15"]
    solution = ["$\\{1,2\\}$"] * 3
    assert math_verify_accuracy_reward(completions, solution=solution) == [1.0, 0.0, 0.0]
    assert accuracy_reward(completions, solution=solution) == [0.0, 0.0, 0.0]
    assert get_reward("accuracy_math_verify") is math_verify_accuracy_reward


def test_format_reward():
    assert format_reward([GOOD, "<answer>15</answer>", None, "", [{"role": "assistant", "content": GOOD}]]) == [
        1.0, 0.0, 0.0, 0.0, 1.0,
    ]


def test_choice_reward_with_and_without_choices():
    completions = ["<answer>B</answer>", "<answer>cat</answer>", "<answer>dog</answer>", "no tag B"]
    assert choice_reward(completions, solution=["B"] * 4, choices=[["dog", "cat"]] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert choice_reward(["<answer>Rose.</answer>", "<answer>tulip</answer>"], solution=["rose", "rose"]) == [1.0, 0.0]


def test_grounding_rewards():
    completions = ['<answer>{"bbox_2d": [0, 0, 10, 10]}</answer>', "<answer>[5, 0, 15, 10]</answer>", "<answer>none</answer>"]
    solution = [[0, 0, 10, 10]] * 3
    assert grounding_iou_reward(completions, solution=solution) == pytest.approx([1.0, 1 / 3, 0.0], abs=1e-12)
    at50 = make_grounding_reward(threshold=0.5)
    assert at50(completions, solution=solution) == [1.0, 0.0, 0.0]
    assert at50.__name__ == "grounding_iou_absolute_at50"
    # normalised answers are scaled by the image size: 0.5 of a 20x40 image is (10, 20)
    normalized = get_reward("grounding_iou_normalized")
    image = Image.new("RGB", (20, 40))
    assert normalized(["<answer>[0, 0, 0.5, 0.5]</answer>"], solution=["[0, 0, 10, 20]"], images=[[image]]) == [1.0]
    assert normalized(["<answer>[0, 0, 0.5, 0.5]</answer>"], solution=[[0, 0, 10, 20]], image_size=[(20, 40)]) == [1.0]


def test_missing_column_is_a_clear_error():
    with pytest.raises(KeyError, match="'solution'"):
        accuracy_reward([GOOD])
    with pytest.raises(ValueError, match="2 completions but 1"):
        accuracy_reward([GOOD, GOOD], solution=["15"])


def test_registry_names_rewards_and_users_extend_it():
    assert get_reward("accuracy") is accuracy_reward
    with pytest.raises(KeyError, match="known rewards: accuracy, "):
        get_reward("nope")

    @register_reward("length_penalty_test")
    def length_penalty(completions, **kwargs):
        return [-len(c) / 100 for c in completions]

    try:
        assert get_reward("length_penalty_test")(["abc"]) == [-0.03]
    finally:
        del REWARD_FUNCTIONS["length_penalty_test"]


def test_a_failing_completion_scores_zero_not_an_exception():
    class Hostile:
        def __str__(self):
            raise RuntimeError("boom")

    assert accuracy_reward([Hostile(), GOOD], solution=["15", "15"]) == [0.0, 1.0]
    assert grounding_iou_reward(["<answer>[0,0,1,1]</answer>"], solution=[Hostile()]) == [0.0]


completion_strategy = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.builds(lambda t: f"<think>{t}</think><answer>{t}</answer>", st.text(max_size=40)),
    st.builds(lambda t: [{"role": "assistant", "content": t}], st.text(max_size=60)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(completion_strategy, min_size=1, max_size=4), st.text(max_size=30))
def test_arbitrary_completions_never_raise(completions, solution):
    n = len(completions)
    for name in ("format", "accuracy", "choice", "grounding_iou"):
        kwargs = {"solution": [solution] * n} if name != "grounding_iou" else {"solution": [[0, 0, 5, 5]] * n}
        scores = REWARD_FUNCTIONS[name](completions, **kwargs)
        assert len(scores) == n and all(0.0 <= s <= 1.0 for s in scores)
