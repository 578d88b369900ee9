"""Idefics3 (``idefics3``) and SmolVLM (``smolvlm``): a SigLIP tower (``model.model.vision_model``) on
``pixel_values`` ``(rows, slots, 3, H, W)``: each completion row's images (or, with image splitting,
their crops and a global image) in its first slots; a row with fewer of them has padding slots of
zeros. ``pixel_attention_mask`` ``(rows, slots, H, W)`` marks the real pixels (images smaller than
the batch's largest are padded right and bottom with zeros). None of pepo's Qwen speed-ups; PAPO /
VPPO blacken the tower's own patches on the real pixels of the real slots
(:func:`pepo.families.patch_layout.pixel_squares`): padding slots and pixels stay zero, as the model
reads padding as zeros (``Idefics3Model.get_image_features`` drops the all-zero slots)."""

from __future__ import annotations

from pepo.families import Family, register_family
from pepo.families.patch_layout import Tiles, pixel_squares


def _idefics3_model() -> type:
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Model

    return Idefics3Model


def _smolvlm_model() -> type:
    from transformers.models.smolvlm.modeling_smolvlm import SmolVLMModel

    return SmolVLMModel


def idefics3_tiles(batch: dict, num_images: list[int], groups: list[int], config) -> Tiles:
    """The slots holding a real pixel are real tiles; the others padding."""
    pixel_values, real_pixels = batch["pixel_values"], batch.get("pixel_attention_mask")
    if pixel_values.dim() != 5 or pixel_values.size(0) != len(num_images) or real_pixels is None \
            or real_pixels.shape != pixel_values.shape[:2] + pixel_values.shape[3:]:
        raise ValueError(f"Idefics3 patch masking: pixel_values {tuple(pixel_values.shape)} with pixel_attention_mask "
                         f"{None if real_pixels is None else tuple(real_pixels.shape)} is not (rows = "
                         f"{len(num_images)}, slots, 3, H, W) with (rows, slots, H, W)")
    real_slots = real_pixels.flatten(2).any(-1).cpu()  # (rows, slots)
    keys = []
    for row, (group, count) in enumerate(zip(groups, num_images, strict=True)):
        if bool(real_slots[row].any()) != (count > 0):
            raise ValueError(f"Idefics3 patch masking: row {row} has {count} images but "
                             f"{int(real_slots[row].sum())} real slots")
        real = iter(range(pixel_values.size(1)))
        keys += [(group, next(real)) if is_real else None for is_real in real_slots[row].tolist()]
    return Tiles(pixel_values.flatten(0, 1), keys, real_pixels.flatten(0, 1))


IDEFICS3 = register_family(Family(
    name="Idefics3", model_types=("idefics3",), backbone=_idefics3_model, rope_index_parameters=(),
    patch_layout=pixel_squares(idefics3_tiles),
    vision_tower="vision_model", projectors=("connector",),
))
SMOLVLM = register_family(Family(
    name="SmolVLM", model_types=("smolvlm",), backbone=_smolvlm_model, rope_index_parameters=(),
    patch_layout=pixel_squares(idefics3_tiles),
    vision_tower="vision_model", projectors=("connector",),
))
