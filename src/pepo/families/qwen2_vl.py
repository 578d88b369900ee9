"""Qwen2-VL and Qwen2.5-VL (``qwen2_vl``, ``qwen2_5_vl``): ``<|image_pad|>`` between
``<|vision_start|>`` and ``<|vision_end|>``; 14 px patches merged 2 x 2; the vision tower (with its
``merger`` projector) at ``model.model.visual``; M-RoPE positions from ``get_rope_index``."""

from __future__ import annotations

from pepo.families import Family, register_family
from pepo.families.patch_layout import PATCH_ROWS

#: transformers 5.24's ``Qwen2VLModel.get_rope_index`` (Qwen3-VL's is the same)
QWEN2_VL_ROPE_INDEX = ("self", "input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw",
                       "attention_mask", "**kwargs")
#: transformers 5.24's ``Qwen2_5_VLModel.get_rope_index``, which :func:`pepo.mrope.rope_index` reproduces
QWEN2_5_VL_ROPE_INDEX = ("self", "input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw",
                         "second_per_grid_ts", "attention_mask", "**kwargs")


def _qwen2_vl_model() -> type:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    return Qwen2VLModel


def _qwen2_5_vl_model() -> type:
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    return Qwen2_5_VLModel


QWEN2_VL = register_family(Family(
    name="Qwen2-VL", model_types=("qwen2_vl",), backbone=_qwen2_vl_model, rope_index_parameters=QWEN2_VL_ROPE_INDEX,
    tower_merged_outputs=("pooler_output",), shares_prompts=True, patch_layout=PATCH_ROWS, vision_tower="visual",
    projectors=("visual.merger",),
))
QWEN2_5_VL = register_family(Family(
    name="Qwen2.5-VL", model_types=("qwen2_5_vl",), backbone=_qwen2_5_vl_model,
    rope_index_parameters=QWEN2_5_VL_ROPE_INDEX, vectorised_rope_index=True, tower_merged_outputs=("pooler_output",),
    shares_prompts=True, patch_layout=PATCH_ROWS, vision_tower="visual", projectors=("visual.merger",),
))
