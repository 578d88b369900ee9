"""Rewards for RL with verifiable rewards, as TRL reward functions (``docs/method.md``, Rewards).

>>> from pepo.rewards import REWARD_FUNCTIONS
>>> sorted(REWARD_FUNCTIONS)
['accuracy', 'accuracy_math_verify', 'choice', 'format', 'grounding_iou', 'grounding_iou_normalized']

Use them as ``GRPOTrainer(reward_funcs=[format_reward, accuracy_reward], ...)`` or by name
(``get_reward("accuracy")``); add yours with ``@register_reward("name")``. Math answers are graded
in a helper process under a per-answer time limit; :func:`grading_stats` counts the timeouts.
"""

from pepo.rewards.answers import (
    box_iou,
    completion_text,
    extract_answer,
    extract_choice_letters,
    has_valid_format,
    match_choice,
    normalize_answer,
    parse_box,
)
from pepo.rewards.functions import (
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
from pepo.rewards.math_grader import grade_math, grading_stats, set_grading_timeout, shutdown_grader

__all__ = [
    "REWARD_FUNCTIONS",
    "accuracy_reward",
    "box_iou",
    "choice_reward",
    "completion_text",
    "extract_answer",
    "extract_choice_letters",
    "format_reward",
    "get_reward",
    "grade_math",
    "grading_stats",
    "grounding_iou_reward",
    "has_valid_format",
    "make_grounding_reward",
    "match_choice",
    "math_verify_accuracy_reward",
    "normalize_answer",
    "parse_box",
    "register_reward",
    "set_grading_timeout",
    "shutdown_grader",
]
