"""Which input positions hold image tokens (the set ``V_b`` of ``docs/method.md``, Notation).

Every Hugging Face VLM expands an image into a run of placeholder tokens in ``input_ids`` and, in
its forward, overwrites the embeddings at exactly those positions with the vision features. The
placeholder's id is in the model config as ``image_token_id`` (``image_token_index`` for LLaVA and
Gemma3, aliased to ``image_token_id`` by transformers), which is what the model itself uses, so it
is read first:

=============================  ======================  ============================================
family                         placeholder             around it (not image features, not counted)
=============================  ======================  ============================================
Qwen2-VL / Qwen2.5-VL          ``<|image_pad|>``       ``<|vision_start|>``, ``<|vision_end|>``
InternVL3                      ``<IMG_CONTEXT>``       ``<img>``, ``</img>``
LLaVA / LLaVA-NeXT             ``<image>``             -
Idefics3 / SmolVLM             ``<image>``             ``<fake_token_around_image>``, row tags
Gemma3                         ``<image_soft_token>``  ``<start_of_image>``, ``<end_of_image>``
=============================  ======================  ============================================

Gemma3's processor reports ``<start_of_image>`` as its ``image_token_id``, not the placeholder, which
is why the model config wins over the processor.
"""

from __future__ import annotations

import torch


def _as_token_id(token: str | int, tokenizer) -> int:
    if isinstance(token, int):
        return token
    if tokenizer is None:
        raise ValueError(f"image_token={token!r} is a string but no tokenizer is available to look it up")
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if token_id is None or (token_id == unk and token != getattr(tokenizer, "unk_token", None)):
        raise ValueError(f"image_token={token!r} is not a token of the tokenizer; check the spelling")
    return int(token_id)


def resolve_image_token_id(model_config, processing_class=None, override: str | int | None = None) -> int | None:
    """The id of the model's image placeholder token, or ``None`` for a text-only model.

    Args:
        model_config: the policy's ``PretrainedConfig``.
        processing_class: its processor or tokenizer (to look up ``override`` and as a fallback).
        override: a token string (``"<IMG_CONTEXT>"``) or id that wins over everything else.
    """
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if override is not None:
        return _as_token_id(override, tokenizer)
    for name in ("image_token_id", "image_token_index"):
        value = getattr(model_config, name, None)
        if isinstance(value, int):
            return value
    value = getattr(processing_class, "image_token_id", None)
    if isinstance(value, int):
        return value
    token = getattr(processing_class, "image_token", None)
    if isinstance(token, str):
        return _as_token_id(token, tokenizer)
    return None


def image_token_mask(input_ids: torch.Tensor, image_token_id: int | None) -> torch.Tensor:
    """``(B, S)`` bool, True where ``input_ids`` holds the image placeholder (all of a row's images)."""
    if image_token_id is None:
        return torch.zeros_like(input_ids, dtype=torch.bool)
    return input_ids == image_token_id
