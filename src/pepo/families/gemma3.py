"""Gemma 3 (``gemma3``): a SigLIP tower (``model.model.vision_tower``) on one normalised ``(3, H, W)``
image per image (``pixel_values`` ``(images, 3, H, W)``), average-pooled to ``mm_tokens_per_image``
tokens by ``multi_modal_projector``. None of pepo's Qwen speed-ups; PAPO / VPPO blacken the tower's
own patches on each image (:func:`pepo.families.patch_layout.pixel_squares`)."""

from __future__ import annotations

from pepo.families import Family, register_family
from pepo.families.patch_layout import Tiles, pixel_squares, tile_keys


def _gemma3_model() -> type:
    from transformers.models.gemma3.modeling_gemma3 import Gemma3Model

    return Gemma3Model


def gemma3_tiles(batch: dict, num_images: list[int], groups: list[int], config) -> Tiles:
    """One tile per image, image after image in row order."""
    pixel_values = batch["pixel_values"]
    if pixel_values.dim() != 4 or pixel_values.size(0) != sum(num_images):
        raise ValueError(f"Gemma 3 patch masking: pixel_values {tuple(pixel_values.shape)} is not one (3, H, W) image "
                         f"per image of the batch ({sum(num_images)})")
    return Tiles(pixel_values, tile_keys(num_images, groups))


def check_no_pan_and_scan(processing_class, config) -> None:
    if getattr(processing_class.image_processor, "do_pan_and_scan", False):
        raise ValueError("perception_aware patch masking on Gemma 3 takes one image per image: set the image "
                         "processor's do_pan_and_scan to false (its crops do not say which image they belong to)")


GEMMA3 = register_family(Family(
    name="Gemma 3", model_types=("gemma3",), backbone=_gemma3_model, rope_index_parameters=(),
    patch_layout=pixel_squares(gemma3_tiles, check_no_pan_and_scan),
    vision_tower="vision_tower", projectors=("multi_modal_projector",),
))
