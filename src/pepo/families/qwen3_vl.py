"""Qwen3-VL (``qwen3_vl``) and Qwen3.5 (``qwen3_5``, natively multimodal).

Qwen3-VL: Qwen2.5-VL's image tokens and processor layout with 16 px patches, an
M-RoPE index with the same positions for images and text (its own for videos: timestamps), and
DeepStack: the vision tower also returns ``deepstack_features``, one row per image token for each
of a few tower layers, added to the first decoder layers' hidden states at the image positions.
Image sharing gathers those too. Qwen3.5: the same processor layout, vision tower (without DeepStack)
and ``get_rope_index`` (transformers 5.24: the same source), a language model alternating Gated
DeltaNet linear attention with full attention."""

from __future__ import annotations

from pepo.families import Family, register_family
from pepo.families.patch_layout import PATCH_ROWS
from pepo.families.qwen2_vl import QWEN2_VL_ROPE_INDEX


def _qwen3_vl_model() -> type:
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    return Qwen3VLModel


QWEN3_VL = register_family(Family(
    name="Qwen3-VL", model_types=("qwen3_vl",), backbone=_qwen3_vl_model, rope_index_parameters=QWEN2_VL_ROPE_INDEX,
    vectorised_rope_index=True, tower_merged_outputs=("pooler_output", "deepstack_features"), shares_prompts=True,
    # use_cache reaches Qwen3VLTextModel.forward through the backbone's **kwargs
    backbone_forward_inputs=("input_ids", "attention_mask", "position_ids", "cache", "pixel_values", "image_grid_thw",
                             "**kwargs"),
    patch_layout=PATCH_ROWS, vision_tower="visual", projectors=("visual.merger", "visual.deepstack_merger_list"),
))


def _qwen3_5_model() -> type:
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5Model

    return Qwen3_5Model


QWEN3_5 = register_family(Family(
    name="Qwen3.5", model_types=("qwen3_5",), backbone=_qwen3_5_model, rope_index_parameters=QWEN2_VL_ROPE_INDEX,
    # no prompt sharing: the linear attention layers' cache cannot be gathered to the batch's rows
    # (transformers 5.24's LinearAttentionLayer has no batch_select_indices): the plain forward and generate
    vectorised_rope_index=True, tower_merged_outputs=("pooler_output",), shares_prompts=False,
    patch_layout=PATCH_ROWS, vision_tower="visual", projectors=("visual.merger",),
))
