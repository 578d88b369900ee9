"""Answer extraction, normalisation, boxes and choices: hand-worked examples and properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pepo.rewards import (
    box_iou,
    completion_text,
    extract_answer,
    extract_choice_letters,
    has_valid_format,
    match_choice,
    normalize_answer,
    parse_box,
)


def test_completion_text_accepts_strings_and_conversations():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text(None) == ""
    assert completion_text(12) == "12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>t</think><answer>15</answer>", True),
        ("<answer>15</answer>", False),  # no think
        ("<think>t</think>", False),  # no answer
        ("<think>a</think><think>b</think><answer>1</answer>", False),  # two thinks
        ("<think>a</think><answer>1</answer><answer>2</answer>", False),  # two answers
        ("<think>\nmulti\nline\n</think>\n<answer>\n3\n</answer>", True),
        ("", False),
    ],
)
def test_format(text, expected):
    assert has_valid_format(text) is expected


def test_extract_answer_strict_takes_the_first_answer_or_none():
    assert extract_answer("<think>x</think><answer> 15 </answer>") == "15"
    assert extract_answer("<answer>1</answer><answer>2</answer>") == "1"
    assert extract_answer("the answer is 15") is None
    assert extract_answer("<answer>15") is None
    assert extract_answer(None) is None


def test_extract_answer_lenient_is_the_release_evaluation_rule():
    assert extract_answer("<ANSWER>15</ answer>", lenient=True) == "15"
    assert extract_answer("blah <answer> 7.5", lenient=True) == "7.5"  # unclosed: the rest
    assert extract_answer("just 12", lenient=True) == "just 12"  # no tag: the whole text
    assert extract_answer("<answer>\\boxed{2\\sqrt{3}}</answer>", lenient=True) == "2\\sqrt{3}"
    assert extract_answer(None, lenient=True) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  15. ", "15"),
        ("10π", "10\\pi"),
        ("ＡＢＣ", "abc"),  # NFKC folds full-width letters, casefold lowers them
        ("21  \\sqrt {\n3 }", "21 \\sqrt { 3 }"),
        ("答案。", "答案"),
        (None, ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[10, 20, 30, 40]", [10.0, 20.0, 30.0, 40.0]),
        ('{"bbox_2d": [1, 2, 3, 4], "label": "cat"}', [1.0, 2.0, 3.0, 4.0]),
        ('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]', [1.0, 2.0, 3.0, 4.0]),
        ('```json\n{"bbox": [0.1, 0.2, 0.3, 0.4]}\n```', [0.1, 0.2, 0.3, 0.4]),
        ("the box is (1.5, 2, 3, 4.25) I think", [1.5, 2.0, 3.0, 4.25]),
        ("[1, 2, 3]", None),
        ("no box", None),
        (None, None),
    ],
)
def test_parse_box(answer, expected):
    assert parse_box(answer) == expected


def test_box_iou_hand_worked():
    # [0,0,10,10] vs [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150 -> 1/3
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3, abs=1e-12)
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([10, 10, 0, 0], [0, 0, 10, 10]) == 1.0  # corners in either order
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert box_iou([0, 0, 0, 5], [0, 0, 0, 5]) == 0.0  # zero area
    assert box_iou(None, [0, 0, 1, 1]) == 0.0


@pytest.mark.parametrize(
    ("answer", "solution", "choices", "expected"),
    [
        ("B", "B", None, True),
        ("(b)", "B", None, True),
        ("The answer is B.", "B", None, True),
        ("A, C", "A", None, False),  # two letters named: not a single choice
        ("C", "B", None, False),
        ("C, A", "A, C", None, True),  # LogicVista multi-letter answers: the same set
        ("A", "A, C", None, False),
        ("Boeing 707-320", "boeing 707-320", None, True),
        ("Boeing 707", "Boeing 707-320", None, False),
        ("B", "cat", ["dog", "cat"], True),  # letter -> option text
        ("(B) cat", "B", ["dog", "cat"], True),
        ("cat", "B", ["dog", "cat"], True),
        ("dog", "B", ["dog", "cat"], False),
        ("E", "B", ["dog", "cat"], False),
        (None, "B", None, False),
    ],
)
def test_match_choice(answer, solution, choices, expected):
    assert match_choice(answer, solution, choices) is expected


def test_extract_choice_letters():
    assert extract_choice_letters("(A) and (c)") == ["A", "C"]
    assert extract_choice_letters("A, C") == ["A", "C"]
    assert extract_choice_letters("none") == []


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_functions_never_raise(text):
    extract_answer(text)
    extract_answer(text, lenient=True)
    normalize_answer(text)
    has_valid_format(text)
    match_choice(text, "A", ["x", "y"])
    box = parse_box(text)
    assert box is None or len(box) == 4
    assert 0.0 <= box_iou(box, [0, 0, 10, 10]) <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4),
       st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4))
def test_box_iou_is_in_unit_interval_and_symmetric(box_a, box_b):
    iou = box_iou(box_a, box_b)
    assert 0.0 <= iou <= 1.0
    assert iou == box_iou(box_b, box_a)
