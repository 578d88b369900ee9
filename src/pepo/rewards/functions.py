"""Reward functions in TRL's form, ``fn(completions, **kwargs) -> list[float]``, and their registry.

TRL's ``GRPOTrainer`` calls each reward with the completions (strings, or conversational lists of
message dicts) and every other dataset column as a keyword argument (``solution``, ``choices``,
``images``, ...). Recipes name rewards by string through :data:`REWARD_FUNCTIONS`; users add their
own with :func:`register_reward`.

A reward never raises on a completion: a missing tag, two answers, an empty or ``None``
completion, a grading error or a grading timeout all score 0.0. A missing dataset column is a
configuration error and raises at once, naming the column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pepo.rewards.answers import (
    box_iou,
    completion_text,
    extract_answer,
    has_valid_format,
    match_choice,
    parse_box,
)
from pepo.rewards.math_grader import grade_math, math_verify_available

__all__ = [
    "REWARD_FUNCTIONS",
    "RewardFunction",
    "accuracy_reward",
    "choice_reward",
    "format_reward",
    "get_reward",
    "grounding_iou_reward",
    "make_grounding_reward",
    "math_verify_accuracy_reward",
    "register_reward",
]

logger = logging.getLogger(__name__)

RewardFunction = Callable[..., list[float]]
REWARD_FUNCTIONS: dict[str, RewardFunction] = {}


def register_reward(name: str, fn: RewardFunction | None = None):
    """Add a reward under ``name`` (usable as ``@register_reward("name")``). Re-registering a name
    replaces it, so a user can override a built-in on purpose."""

    def add(function: RewardFunction) -> RewardFunction:
        REWARD_FUNCTIONS[name] = function
        return function

    return add if fn is None else add(fn)


def get_reward(name: str) -> RewardFunction:
    """The reward registered as ``name``; an unknown name lists the known ones."""
    if name not in REWARD_FUNCTIONS:
        raise KeyError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARD_FUNCTIONS))}")
    return REWARD_FUNCTIONS[name]


def _column(kwargs: dict, name: str, n: int, reward: str) -> list:
    if name not in kwargs or kwargs[name] is None:
        raise KeyError(
            f"reward {reward!r} needs a dataset column {name!r} (TRL passes dataset columns to rewards "
            f"as keyword arguments); got columns {sorted(kwargs)}"
        )
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"reward {reward!r}: {n} completions but {len(values)} values in column {name!r}")
    return values


def _safely(score: Callable[[], float], reward: str) -> float:
    try:
        return float(score())
    except Exception:  # a reward must not take a training step down
        logger.exception("reward %r failed on one completion; scored 0", reward)
        return 0.0


@register_reward("format")
def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 if the completion holds exactly one ``<think>...</think>`` and exactly one
    ``<answer>...</answer>``, else 0.0 (``docs/method.md``, Rewards)."""
    return [_safely(lambda c=c: has_valid_format(completion_text(c)), "format") for c in completions]


def _accuracy(completions: Sequence[Any], kwargs: dict, backend: str, name: str) -> list[float]:
    solutions = _column(kwargs, "solution", len(completions), name)

    def score(completion: Any, solution: Any) -> float:
        answer = extract_answer(completion)
        return float(answer is not None and grade_math(answer, str(solution), backend=backend))

    return [_safely(lambda c=c, s=s: score(c, s), name) for c, s in zip(completions, solutions)]


@register_reward("accuracy")
def accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 if the text in the first ``<answer>...</answer>`` equals the ``solution`` column after
    normalisation or by ``mathruler.grader.grade_answer`` (``docs/method.md``, Rewards), else 0.0. Each answer is graded
    under a time limit (:func:`pepo.rewards.set_grading_timeout`)."""
    return _accuracy(completions, kwargs, "mathruler", "accuracy")


@register_reward("accuracy_math_verify")
def math_verify_accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """As :func:`accuracy_reward`, graded by math-verify (``pip install 'pepo[math-verify]'``)."""
    if not math_verify_available():
        raise ImportError("reward 'accuracy_math_verify' needs math-verify: pip install 'pepo[math-verify]'")
    return _accuracy(completions, kwargs, "math_verify", "accuracy_math_verify")


@register_reward("choice")
def choice_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Multiple choice / classification: 1.0 if the answer matches ``solution`` after normalisation,
    by option letter or option text when a ``choices`` column exists, else 0.0 (``docs/method.md``, Rewards)."""
    solutions = _column(kwargs, "solution", len(completions), "choice")
    choices = kwargs.get("choices") or [None] * len(completions)

    def score(completion: Any, solution: Any, options: Any) -> float:
        answer = extract_answer(completion)
        return float(answer is not None and match_choice(answer, solution, list(options) if options else None))

    return [_safely(lambda c=c, s=s, o=o: score(c, s, o), "choice") for c, s, o in zip(completions, solutions, choices)]


def _image_size(kwargs: dict, index: int) -> tuple[float, float]:
    """(width, height) of sample ``index``: an ``image_size`` column, else its first image."""
    if kwargs.get("image_size") is not None:
        width, height = kwargs["image_size"][index]
        return float(width), float(height)
    for key in ("images", "image"):
        if kwargs.get(key) is not None:
            image = kwargs[key][index]
            image = image[0] if isinstance(image, (list, tuple)) else image
            return float(image.size[0]), float(image.size[1])
    raise KeyError("normalised box coordinates need an 'image_size' column or the images to scale by")


def make_grounding_reward(coords: str = "absolute", threshold: float | None = None) -> RewardFunction:
    """A grounding reward: the IoU of the box in the answer with the ``solution`` box.

    ``coords="absolute"``: the model answers in the solution's pixel frame. ``coords="normalized"``:
    the model answers in fractions of the image width/height (0..1), scaled by the image size (an
    ``image_size`` column of ``(width, height)``, or the ``images`` column) before the IoU.
    ``threshold``: return ``1.0 if IoU >= threshold`` instead of the IoU (0.5 gives IoU@50).
    """
    if coords not in ("absolute", "normalized"):
        raise ValueError(f"coords must be 'absolute' or 'normalized', got {coords!r}")
    name = f"grounding_iou_{coords}" + ("" if threshold is None else f"_at{int(round(threshold * 100))}")

    def grounding_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        solutions = _column(kwargs, "solution", len(completions), name)

        def score(index: int) -> float:
            box = parse_box(extract_answer(completions[index]))
            target = solutions[index]
            target = parse_box(target) if isinstance(target, str) else [float(v) for v in target]
            if box is not None and coords == "normalized":
                width, height = _image_size(kwargs, index)
                box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
            iou = box_iou(box, target)
            return iou if threshold is None else float(iou >= threshold)

        return [_safely(lambda i=i: score(i), name) for i in range(len(completions))]

    grounding_reward.__name__ = name  # TRL logs rewards by __name__
    grounding_reward.__qualname__ = name
    return grounding_reward


grounding_iou_reward = register_reward("grounding_iou", make_grounding_reward("absolute"))
register_reward("grounding_iou_normalized", make_grounding_reward("normalized"))
