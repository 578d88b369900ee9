"""LLaVA-OneVision (``llava_onevision``): a SigLIP tower (``model.model.vision_tower``) on anyres tiles,
``pixel_values`` ``(images, tiles, 3, H, W)``: each image's base tile (the whole image resized) and
its crops at the best of ``image_grid_pinpoints`` (the base tile alone for each image of a prompt with
several), then padding tiles of zeros up to the batch's most; the model counts an image's real tiles
from ``image_sizes`` (``image_size_to_num_patches``) and ``batch_num_images``. None of
pepo's Qwen speed-ups; PAPO / VPPO blacken the tower's own patches on every real tile
(:func:`pepo.families.patch_layout.pixel_squares`), each tile's mask drawn on its own. The processor
letterboxes a crop with black pixels: those squares are drawn like the others but do not change."""

from __future__ import annotations

from pepo.families import Family, register_family
from pepo.families.patch_layout import Tiles, pixel_squares


def _llava_onevision_model() -> type:
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    return LlavaOnevisionModel


def llava_onevision_tiles(batch: dict, num_images: list[int], groups: list[int], config) -> Tiles:
    """The first ``image_size_to_num_patches`` tiles of each image are real (as the model counts them); the
    base tile alone of each image of a row with several (the processor's rule, which the model follows when
    given ``batch_num_images``)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    pixel_values, image_sizes = batch["pixel_values"], batch.get("image_sizes")
    fits = image_sizes is not None and pixel_values.size(0) == sum(num_images) == len(image_sizes)
    if pixel_values.dim() != 5 or not fits:
        raise ValueError(f"LLaVA-OneVision patch masking: pixel_values {tuple(pixel_values.shape)} is not (images = "
                         f"{sum(num_images)}, tiles, 3, H, W) with one image_sizes row per image")
    sizes = iter(image_sizes.tolist())
    keys = []
    for group, count in zip(groups, num_images, strict=True):
        real = iter(range(count * pixel_values.size(1)))  # the row's real tiles, image after image
        for _ in range(count):
            size = next(sizes)
            tiles = 1 if count > 1 else image_size_to_num_patches(size, config.image_grid_pinpoints,
                                                                  config.vision_config.image_size)
            keys += [(group, next(real)) if tile < tiles else None for tile in range(pixel_values.size(1))]
    return Tiles(pixel_values.flatten(0, 1), keys)


LLAVA_ONEVISION = register_family(Family(
    name="LLaVA-OneVision", model_types=("llava_onevision",), backbone=_llava_onevision_model,
    rope_index_parameters=(), patch_layout=pixel_squares(llava_onevision_tiles),
    vision_tower="vision_tower", projectors=("multi_modal_projector",),
    # the processor gives one tile per image of a several-image row and says so in batch_num_images, which TRL
    # 1.16's forward does not pass on: the model then expects each image's anyres tiles (a split-size error)
    one_image_per_row="TRL 1.16's forward drops the processor's batch_num_images, so the model expects tiles the "
                      "processor did not make",
))
