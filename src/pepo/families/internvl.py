"""InternVL (``internvl``, the transformers-native ``-hf`` checkpoints): an InternViT tower
(``model.model.vision_tower``) on normalised ``(3, H, W)`` tiles, ``pixel_values`` ``(tiles, 3, H, W)``:
each image's tiles (its crops and, with more than one crop, a thumbnail of the whole image) after
the previous image's. TRL counts each row's tiles (``num_tiles``) when they are not one per image.
None of pepo's Qwen speed-ups; PAPO / VPPO blacken the tower's own patches on every tile
(:func:`pepo.families.patch_layout.pixel_squares`), each tile's mask drawn on its own."""

from __future__ import annotations

from pepo.families import Family, register_family
from pepo.families.patch_layout import Tiles, pixel_squares, tile_keys


def _internvl_model() -> type:
    from transformers.models.internvl.modeling_internvl import InternVLModel

    return InternVLModel


def internvl_tiles(batch: dict, num_images: list[int], groups: list[int], config) -> Tiles:
    """Every tile real, row after row (``num_tiles`` per row, or one tile per image)."""
    pixel_values = batch["pixel_values"]
    tiles_per_row = batch.get("num_tiles") or num_images
    if pixel_values.dim() != 4 or pixel_values.size(0) != sum(tiles_per_row):
        raise ValueError(f"InternVL patch masking: pixel_values {tuple(pixel_values.shape)} is not the batch's "
                         f"{sum(tiles_per_row)} (3, H, W) tiles")
    return Tiles(pixel_values, tile_keys(tiles_per_row, groups))


INTERNVL = register_family(Family(
    name="InternVL", model_types=("internvl",), backbone=_internvl_model, rope_index_parameters=(),
    patch_layout=pixel_squares(internvl_tiles),
    vision_tower="vision_tower", projectors=("multi_modal_projector",),
))
