"""Qwen2.5-VL's and Qwen3-VL's M-RoPE position index with tensor operations instead of a Python loop over rows.

transformers' ``Qwen2_5_VLModel.get_rope_index`` walks each row of the batch in Python (token types
to a list, grouped, one ``arange`` per group): 41.0 ms against 1.6 ms for this module's form on the
demo's 256 rows of 63 tokens, one CPU thread (``python benchmarks/bench_mrope.py``,
``benchmarks/results/bench_mrope.md``), and an RL step calls it twice (the generation's prefill and the loss forward).
:func:`vectorise_rope_index` shadows the method on a model's instance with :func:`rope_index`, which
returns the very same tensors (for the families :mod:`pepo.families` marks ``vectorised_rope_index``) (tested against transformers on random batches) in a fixed number of
tensor operations; batches with video tokens, and any batch whose image-token runs do not match
``image_grid_thw``, go to transformers' own method.

The index (Qwen2.5-VL, arXiv 2502.13923, section 2.1): a text token's three positions are equal and
advance by one per token; the tokens of an image with merged grid ``(t, h, w)`` that starts at
position ``s`` get ``(s + i_t, s + i_h, s + i_w)`` in row-major order, and the text after it starts at
``s + max(h, w)``. Padding (``attention_mask`` 0) gets position 0 and is skipped when counting.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from pepo.families import family_of
from pepo.versions import signature_matches

__all__ = ["rope_index", "vectorise_rope_index"]


def rope_index(
    model: nn.Module,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.get_rope_index`` (a ``Qwen2_5_VLModel`` or ``Qwen3VLModel``) for image and text tokens, vectorised.

    Args: input_ids (B, S); mm_token_type_ids (B, S): 0 text, 1 image, 2 video; image_grid_thw
    (N, 3), the images in batch order; attention_mask (B, S) or None.
    Returns position_ids (3, B, S) of ``input_ids``' dtype and the deltas (B, 1) that generation adds
    to the text positions of later tokens.
    """
    if second_per_grid_ts is not None:  # Qwen2.5-VL's video timing; a Qwen3-VL takes no such parameter
        kwargs["second_per_grid_ts"] = second_per_grid_ts
    fallback = functools.partial(
        type(model).get_rope_index, model, input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw,
        video_grid_thw=video_grid_thw, attention_mask=attention_mask, **kwargs,
    )
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if video_grid_thw is not None or bool(((mm_token_type_ids == 2) & valid).any()):
        return fallback()
    batch, length = input_ids.shape
    # Put each row's counted tokens first, in order: runs of image tokens are then runs in memory.
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    counted = valid.gather(1, order)
    image = ((mm_token_type_ids == 1) & valid).gather(1, order)
    starts = image & ~F.pad(image[:, :-1], (1, 0))
    ends = image & ~F.pad(image[:, 1:], (0, 1))
    grids = image_grid_thw if image_grid_thw is not None else input_ids.new_zeros(0, 3)
    merge = model.config.vision_config.spatial_merge_size
    t, h, w = grids[:, 0], grids[:, 1] // merge, grids[:, 2] // merge
    image_rank = image.long().cumsum(1) - 1  # each image token's rank among its row's image tokens
    first, last = image_rank[starts], image_rank[ends]  # (G,) per run, in batch order: the images' order
    if first.numel() != grids.shape[0] or not torch.equal(last - first + 1, t * h * w):
        return fallback()
    # Positions advanced before each token: one per text token, max(h, w) at the end of each image.
    advance = (counted & ~image).long()
    advance[ends] = torch.maximum(grids[:, 1], grids[:, 2]) // merge
    before = advance.cumsum(1) - advance
    offsets = torch.zeros(3, batch, length, dtype=torch.long, device=input_ids.device)
    if first.numel():
        run = (starts.flatten().long().cumsum(0) - 1).clamp(min=0).view(batch, length)  # each token's image
        k = (image_rank - first[run]).clamp(min=0)  # rank inside its image
        hw, width, height = (h * w)[run], w[run], h[run]
        offsets = torch.stack([k // hw, (k // width) % height, k % width]) * image
    positions = (before + offsets) * counted
    position_ids = torch.zeros(3, batch, length, dtype=input_ids.dtype, device=input_ids.device)
    position_ids.scatter_(2, order.expand(3, batch, length), positions.to(input_ids.dtype))
    deltas = positions.amax(dim=(0, 2)) + 1 - counted.sum(1)
    return position_ids, deltas.unsqueeze(1)


def vectorise_rope_index(model: nn.Module) -> bool:
    """Shadow ``get_rope_index`` with :func:`rope_index` on the backbones inside ``model`` of a family that
    :mod:`pepo.families` marks ``vectorised_rope_index`` (an instance attribute: the class and other models
    are untouched). Returns whether one was found; other families keep transformers' method, and so
    does every model when that method no longer has the parameters it was written for (one warning)."""
    family = family_of(model)
    if family is None or not family.vectorised_rope_index:
        return False
    backbone = family.backbone()
    found = family.backbones_in(model)
    if found and not signature_matches("mrope.get_rope_index", backbone.get_rope_index, family.rope_index_parameters):
        return False
    for module in found:
        if type(module).get_rope_index is backbone.get_rope_index:  # a subclass's own stays
            module.get_rope_index = functools.partial(rope_index, module)
    return bool(found)
