"""Answer extraction and comparison: the text side of every reward (no sympy here).

The conventions are the paper's (``docs/method.md``, Rewards, and the public release's
``rewards/plugin.py`` / ``evaluation/evaluate_*.py``):

* the answer is the text inside the first ``<answer>...</answer>``;
* normalisation: Unicode NFKC, casefold, collapse whitespace, strip one trailing ``.`` or ``。``,
  ``π`` -> ``\\pi``;
* boxes are ``[x1, y1, x2, y2]`` (or JSON holding one), compared by IoU;
* multiple choice compares option letters or option texts.

Every function here takes arbitrary input (``None``, non-strings, huge strings) and never raises.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

__all__ = [
    "ANSWER_PATTERN",
    "THINK_PATTERN",
    "box_iou",
    "completion_text",
    "extract_answer",
    "extract_choice_letters",
    "has_valid_format",
    "match_choice",
    "normalize_answer",
    "parse_box",
]

ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
THINK_PATTERN = re.compile(r"<think>.*?</think>", re.DOTALL)
# Evaluation is lenient about tag spelling, like the release's evaluate_*.py scripts.
_LENIENT_ANSWER = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_LENIENT_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{(.*)\}\s*$", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or a conversational list of message dicts
    (``[{"role": "assistant", "content": "..."}]``, content possibly a list of typed parts).
    Anything else (``None``, numbers) becomes ``""`` or ``str(x)``; never raises."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        parts = []
        for item in completion:
            if isinstance(item, dict) and "content" in item:
                parts.append(completion_text(item["content"]))
            elif isinstance(item, dict) and item.get("type") == "text":
                parts.append(str(item.get("text") or ""))
            elif isinstance(item, str):
                parts.append(item)
        return "".join(parts)
    try:
        return str(completion)
    except Exception:  # a hostile __str__
        return ""


def has_valid_format(text: str) -> bool:
    """Exactly one ``<think>...</think>`` and exactly one ``<answer>...</answer>`` (``docs/method.md``, Rewards)."""
    return len(THINK_PATTERN.findall(text)) == 1 and len(ANSWER_PATTERN.findall(text)) == 1


def extract_answer(text: Any, lenient: bool = False) -> str | None:
    """The answer of a completion, or ``None`` when there is none.

    Strict (training rewards): the text inside the first ``<answer>...</answer>``.
    Lenient (evaluation, as the release's ``evaluate_*.py``): tags in any case/spacing; an
    unclosed ``<answer>`` takes the rest of the text; no tag takes the whole text; a trailing
    ``\\boxed{...}`` is unwrapped.
    """
    text = completion_text(text)
    if not lenient:
        match = ANSWER_PATTERN.search(text)
        return match.group(1).strip() if match else None
    match = _LENIENT_ANSWER.search(text)
    if match and match.group(1).strip():
        answer = match.group(1).strip()
    else:
        opening = _LENIENT_OPEN.search(text)
        answer = text[opening.end() :].strip() if opening else text.strip()
    boxed = _BOXED.search(answer)
    if boxed:
        answer = boxed.group(1).strip()
    return answer


def normalize_answer(answer: Any) -> str:
    """Spec 7 normalisation: NFKC, casefold, collapse whitespace, strip one trailing ``.``/``。``,
    ``π`` -> ``\\pi``. ``None`` becomes ``""``."""
    if answer is None:
        return ""
    text = unicodedata.normalize("NFKC", answer if isinstance(answer, str) else str(answer))
    text = re.sub(r"\s+", " ", text.casefold()).strip()
    if text.endswith(".") or text.endswith("\u3002"):
        text = text[:-1].strip()
    return text.replace("\u03c0", "\\pi")


# ---------------------------------------------------------------------------------------------
# Multiple choice / classification
# ---------------------------------------------------------------------------------------------

# "(B)", "B", "B.", "B)", "B:", "option B", "answer: b" -- a letter standing on its own.
_PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")
_LONE_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-Za-z])(?![A-Za-z0-9])")


def extract_choice_letters(answer: str) -> list[str]:
    """Option letters named in an answer, upper-cased, in order: ``(B)`` forms first, else
    letters standing alone (``"B"``, ``"B."``, ``"A, C"``)."""
    letters = _PAREN_LETTER.findall(answer) or _LONE_LETTER.findall(answer)
    return [letter.upper() for letter in letters]


def _as_option(answer: str, choices: list[str] | None) -> str:
    """Map an answer to normalised option text: a lone letter (or ``(B) text``) picks the
    option when choices exist; otherwise the normalised answer itself."""
    norm = normalize_answer(answer)
    if not choices:
        return norm
    options = [normalize_answer(c) for c in choices]
    if norm in options:
        return norm
    # "B", "(B)", "B.", "B) text", "(B) text": the letter in front decides.
    lead = re.match(r"^\(?([a-z])\)?(?:[.:)\s]|$)", norm)
    if lead:
        index = ord(lead.group(1)) - ord("a")
        if 0 <= index < len(options):
            return options[index]
    return norm


def match_choice(answer: Any, solution: Any, choices: list[str] | None = None) -> bool:
    """Exact match after normalisation, by option letter or option text (``docs/method.md``, Rewards).

    With ``choices``, both sides are mapped to option text first, so ``"B"``, ``"(B)"`` and the
    text of option B all match a solution given as ``"B"`` or as that text. Without choices, a
    solution made of letters (``"B"``, or ``"A, C"`` for LogicVista's multi-answer questions) is
    compared with the set of letters the answer names."""
    if answer is None or solution is None:
        return False
    answer, solution = str(answer), str(solution)
    if choices:
        return _as_option(answer, choices) == _as_option(solution, choices)
    norm_answer, norm_solution = normalize_answer(answer), normalize_answer(solution)
    if norm_answer == norm_solution:
        return True
    if re.fullmatch(r"[a-z](\s*,\s*[a-z])*", norm_solution):  # "b", or "a, c" (all of A and C)
        return set(extract_choice_letters(answer)) == set(extract_choice_letters(solution.upper()))
    return False


# ---------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------

_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_BRACKET_BOX = re.compile(rf"[\[(]\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*[\])]")
_BOX_KEYS = ("bbox_2d", "bbox", "box", "bounding_box")


def _box_from_json(value: Any) -> list[float] | None:
    if isinstance(value, dict):
        for key in _BOX_KEYS:
            if key in value:
                return _box_from_json(value[key])
        return None
    if isinstance(value, list):
        if len(value) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
        for item in value:  # a list of detections: the first box wins
            box = _box_from_json(item)
            if box is not None:
                return box
    return None


def parse_box(answer: Any) -> list[float] | None:
    """A box ``[x1, y1, x2, y2]`` from an answer: JSON (``[..]``, ``{"bbox_2d": [..]}``, a list of
    such dicts, possibly in a fenced block) or the first bracketed quadruple in the text.
    Returns ``None`` when there is none or the numbers are not finite."""
    if answer is None:
        return None
    text = str(answer).strip()
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    box = None
    try:
        box = _box_from_json(json.loads(text))
    except (ValueError, RecursionError):
        pass
    if box is None:
        found = _BRACKET_BOX.search(text)
        if found:
            box = [float(v) for v in found.groups()]
    if box is None or not all(math.isfinite(v) for v in box):
        return None
    return box


def box_iou(box_a: list[float] | None, box_b: list[float] | None) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes; corners given in either order
    are sorted first. A degenerate or missing box gives 0.0."""
    if box_a is None or box_b is None:
        return 0.0
    ax1, ax2 = sorted((box_a[0], box_a[2]))
    ay1, ay2 = sorted((box_a[1], box_a[3]))
    bx1, bx2 = sorted((box_b[0], box_b[2]))
    by1, by2 = sorted((box_b[1], box_b[3]))
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not union > 0 or not math.isfinite(union):
        return 0.0
    return float(inter / union)
