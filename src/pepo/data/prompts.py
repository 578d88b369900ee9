"""From question text to the model's own chat template: one path for training and evaluation.

Training (TRL's ``GRPOTrainer``) and evaluation (:mod:`pepo.evaluation`) both start from the
conversational prompt that :func:`build_prompt` makes; TRL renders it with
``processing_class.apply_chat_template`` and evaluation with :func:`render_prompt`, which is that
same call, so the model sees the same text in both.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["IMAGE_MARKER", "PROMPT_SUFFIX", "build_prompt", "render_prompt"]

IMAGE_MARKER = "<image>"
PROMPT_SUFFIX = (
    "First output the thinking process in <think> </think> tags and then output the final answer in "
    "<answer> </answer> tags."
)


def build_prompt(text: str, n_images: int) -> list[dict[str, Any]]:
    """A one-turn user conversation with ``{"type": "image"}`` placeholders.

    Placeholders go where ``<image>`` markers stand in ``text`` (Geometry3K's ``"<image>\\n..."``);
    without markers, all images go first (what TRL does for string prompts). The markers and the
    newline after each are removed from the text.
    """
    pieces = re.split(rf"{re.escape(IMAGE_MARKER)}\n?", text)
    n_markers = len(pieces) - 1
    content: list[dict[str, Any]] = []
    if n_markers == 0:
        content += [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": text})
    else:
        if n_markers != n_images:
            raise ValueError(f"the prompt has {n_markers} {IMAGE_MARKER} markers but the record has {n_images} images; "
                             f"put one {IMAGE_MARKER} per entry of images, in their order (or none: all images first)")
        for i, piece in enumerate(pieces):
            if piece:
                content.append({"type": "text", "text": piece})
            if i < n_markers:
                content.append({"type": "image"})
    return [{"role": "user", "content": content}]


def render_prompt(processor: Any, prompt: list[dict[str, Any]]) -> str:
    """The prompt as the model's chat template writes it, ready for generation (the same
    ``apply_chat_template(..., add_generation_prompt=True)`` call TRL makes)."""
    return processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
