"""Batches where some rows have images and some do not.

TRL scores a batch in chunks of rows and hands each chunk its slice of the image tensors
(``GRPOTrainer._get_per_token_logps_and_entropies``). A chunk of text-only rows gets an *empty*
slice (``pixel_values`` of shape ``(0, ...)``, ``image_grid_thw`` of shape ``(0, 3)``), and the
vision towers do not accept one: Qwen2.5-VL fails in ``torch.cat`` of no position ids. The same
happens to a whole micro-batch of text-only rows cut out of a mixed generation batch. Without the
image inputs the forward is the language model's own, which is what a text-only chunk needs.
"""

from __future__ import annotations

import torch
from torch import nn

from pepo.versions import signature_matches

# the per-image / per-tile inputs a VLM forward takes (TRL's names); all empty together or none
IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "image_sizes", "pixel_attention_mask", "spatial_shapes",
                "image_position_ids")


def _drop_empty_image_inputs(module, args, kwargs):
    pixel_values = kwargs.get("pixel_values")
    if isinstance(pixel_values, torch.Tensor) and pixel_values.size(0) == 0:
        for key in IMAGE_INPUTS:
            kwargs.pop(key, None)
    return args, kwargs


def ignore_empty_image_inputs(model: nn.Module | None) -> None:
    """Make ``model``'s forward treat an empty ``pixel_values`` (a text-only chunk) as no image input.
    A VLM whose forward takes no ``pixel_values`` keyword (the hook's input) is left as it is, with
    one warning; a model without a vision tower needs no hook."""
    if model is None or getattr(model, "_pepo_ignores_empty_images", False):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper's forward is *args
    if getattr(getattr(base, "config", None), "vision_config", None) is None:
        return
    if not signature_matches("mixed_batches.pre_hook", type(base).forward, ("pixel_values",), exact=False):
        return
    model.register_forward_pre_hook(_drop_empty_image_inputs, with_kwargs=True)
    model._pepo_ignores_empty_images = True
