"""Random patch blackening on processed images (PAPO, VPPO).

PAPO (arXiv 2507.06448, ``verl/trainer/papo_utils.py``) and VPPO (arXiv 2510.09285,
``verl/workers/perc_utils.py``) degrade each image by setting every 14 x 14 px patch to black with
probability ``p`` (0.6 and 0.5). We do it on the processed ``pixel_values`` instead of re-running the
processor: a Qwen image processor resizes the image to a multiple of ``patch_size * merge_size``,
normalises it, and writes one row of ``pixel_values`` per ``patch_size`` x ``patch_size`` patch
(``channel x temporal_patch_size x patch_size x patch_size`` values, channel-major), in the order
``(block row, block column, row in block, column in block)`` of ``merge_size`` x ``merge_size`` blocks.
Blackening a patch is therefore setting its row to the normalised value of black,
``(0 * rescale_factor - mean_c) / std_c`` per channel: the same tensor as processing the resized
image with those patches painted black (``tests/test_patch_masking.py``).

One difference from the released code, stated: it blackens a 14 px grid of the *original* image,
before the processor resizes it, so its squares need not line up with the encoder's patches; we
blacken the encoder's own patches of the resized image.

Where a family's processor writes each patch is part of what the family says
(:attr:`pepo.families.Family.patch_layout`, :mod:`pepo.families.patch_layout`); this module holds the
generic code for the two layouts (:func:`check_patch_layout`, :func:`mask_patches`):

* **patch rows**: one ``pixel_values`` row per patch, as above.
* **pixel squares**: processors giving images in pixel space, a stack of ``(C, H, W)`` tiles (Gemma 3,
  InternVL, Idefics3 / SmolVLM, LLaVA-OneVision). The family says which tiles are real and whose
  (:class:`pepo.families.patch_layout.Tiles`); every ``patch x patch`` square of a real tile, ``patch``
  the vision encoder's own ``vision_config.patch_size``, is set to black's normalised value with
  probability ``p`` (on the real pixels only: padding stays as the processor wrote it). Squares
  left over at the right / bottom edge (a side not a multiple of ``patch``) are not patches: the
  encoder's convolution drops those pixels. A processor that shows an image several times (tiles
  and a thumbnail, anyres crops and a base image) gets an independent mask per view, where the
  released code blackens the original image once before the processor makes its views.
"""

from __future__ import annotations

import hashlib

import torch

from pepo.families.image_rows import image_rows

REQUIRED_ATTRIBUTES = ("patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std")


def check_patch_processor(processing_class) -> None:
    """Raise ``ValueError`` unless ``processing_class`` is a Qwen2-VL-family processor (rows per patch)."""
    image_processor = getattr(processing_class, "image_processor", None)
    missing = [name for name in REQUIRED_ATTRIBUTES if getattr(image_processor, name, None) is None]
    if missing:
        raise ValueError(
            f"perception_aware patch masking needs a Qwen2-VL / Qwen2.5-VL image processor (one pixel_values row "
            f"per patch, with image_grid_thw); {type(processing_class).__name__} has no {missing}. Use a Qwen2-VL "
            "family model or perception_aware='none'."
        )


def black_value(image_processor) -> torch.Tensor:
    """``(channels,)`` float32: the normalised value of a black pixel, as the processor normalises it."""
    channels = len(image_processor.image_mean)
    value = torch.zeros(channels, dtype=torch.float32)
    if getattr(image_processor, "do_rescale", True):
        value = value * float(image_processor.rescale_factor)
    if getattr(image_processor, "do_normalize", True):
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)
        std = torch.tensor(image_processor.image_std, dtype=torch.float32)
        value = (value - mean) / std
    return value


def black_row(image_processor, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(row_size,)`` the ``pixel_values`` row of an all-black patch, as the processor normalises it."""
    per_channel = image_processor.temporal_patch_size * image_processor.patch_size**2
    return black_value(image_processor).repeat_interleave(per_channel).to(dtype=dtype, device=device)


def patch_positions(image_grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``(rows, 4)`` long: for each ``pixel_values`` row, ``(image, t, y, x)`` of its patch on the grid.

    Patch ``(y, x)`` covers pixels ``[y * patch_size, (y + 1) * patch_size)`` x ``[x * patch_size, ...)``
    of the resized image.
    """
    positions = []
    for image, (t, h, w) in enumerate(image_grid_thw.tolist()):
        tt, by, bx, my, mx = torch.meshgrid(
            torch.arange(t), torch.arange(h // merge_size), torch.arange(w // merge_size),
            torch.arange(merge_size), torch.arange(merge_size), indexing="ij",
        )
        y = (by * merge_size + my).flatten()
        x = (bx * merge_size + mx).flatten()
        positions.append(torch.stack([torch.full_like(y, image), tt.flatten(), y, x], 1))
    return torch.cat(positions) if positions else torch.zeros(0, 4, dtype=torch.long)


def _seed(*parts: int) -> int:
    digest = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_patch_masks(
    image_grid_thw: torch.Tensor, num_images: list[int], group_ids: list[int], prob: float, seed: int
) -> torch.Tensor:
    """``(rows,)`` bool, True on the ``pixel_values`` rows to blacken: each patch with probability ``prob``.

    Args:
        image_grid_thw: ``(images, 3)`` grid of every image of the batch, in row order.
        num_images: images of each completion row (0 for a text-only row).
        group_ids: prompt group of each completion row. Rows of one group (the completions of one
            prompt) get the same mask for their ``i``-th image: one mask per prompt.
        prob: blackening probability (PAPO 0.6, VPPO 0.5).
        seed: e.g. ``hash(run seed, global step)``; the mask of ``(seed, group, i)`` is the same on
            every process, so a group split across processes still shares one mask.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"random_patch_masks: prob must be in [0, 1], got {prob}")
    if len(num_images) != len(group_ids):
        raise ValueError(f"random_patch_masks: {len(num_images)} rows in num_images but {len(group_ids)} group ids")
    sizes = [len(rows) for rows in image_rows(image_grid_thw)]
    masks, image = [], 0
    for group, count in zip(group_ids, num_images, strict=True):
        for i in range(count):
            generator = torch.Generator().manual_seed(_seed(seed, group, i))
            masks.append(torch.rand(int(sizes[image]), generator=generator) < prob)
            image += 1
    if image != len(sizes):
        raise ValueError(f"random_patch_masks: num_images sums to {image} but image_grid_thw has {len(sizes)} images")
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


def blacken_patches(pixel_values: torch.Tensor, row_mask: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
    """A copy of ``(rows, row_size)`` ``pixel_values`` with the rows of ``row_mask`` set to ``black``."""
    if pixel_values.dim() != 2 or row_mask.shape != pixel_values.shape[:1] or black.shape != pixel_values.shape[1:]:
        raise ValueError(
            f"blacken_patches: pixel_values {tuple(pixel_values.shape)}, row_mask {tuple(row_mask.shape)} and black "
            f"{tuple(black.shape)} do not fit (rows, row_size), (rows,), (row_size,)"
        )
    row_mask = row_mask.to(pixel_values.device).unsqueeze(1)
    return torch.where(row_mask, black.to(device=pixel_values.device, dtype=pixel_values.dtype), pixel_values)


# ---- generic code fed by the family's layout (pepo.families.patch_layout) ---------------------------


def encoder_patch_size(config) -> int:
    """The vision encoder's patch side in pixels, from ``config.vision_config.patch_size`` (an int or a square pair)."""
    size = getattr(getattr(config, "vision_config", None), "patch_size", None)
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"perception_aware patch masking: the model config's vision_config.patch_size is {size!r}, "
                         "not a positive int (the vision encoder's square patch side)")
    return size


def square_masks(keys: list, grid: tuple[int, int], prob: float, seed: int) -> torch.Tensor:
    """``(T, rows, columns)`` bool, True on the squares to blacken: each with probability ``prob`` on a real
    tile, none on a padding tile (key None). The mask of a key is the same wherever it is drawn (one mask
    per prompt: the completions of a group share the keys of their tiles; every process draws the same)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"square_masks: prob must be in [0, 1], got {prob}")
    masks = torch.zeros(len(keys), *grid, dtype=torch.bool)
    for tile, key in enumerate(keys):
        if key is not None:
            generator = torch.Generator().manual_seed(_seed(seed, *key))
            masks[tile] = (torch.rand(grid[0] * grid[1], generator=generator) < prob).view(grid)
    return masks


def blacken_squares(pixels: torch.Tensor, masks: torch.Tensor, patch: int, black: torch.Tensor,
                    real_pixels: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of ``(T, C, H, W)`` ``pixels`` with each square of ``masks`` (``(T, H // patch, W // patch)``)
    set to ``black`` (``(C,)``) on its real pixels; pixels right of / below the last whole square stay."""
    tiles, channels, height, width = pixels.shape
    rows, columns = height // patch, width // patch
    if masks.shape != (tiles, rows, columns) or black.shape != (channels,):
        raise ValueError(f"blacken_squares: pixels {tuple(pixels.shape)}, masks {tuple(masks.shape)}, black "
                         f"{tuple(black.shape)} do not fit (T, C, H, W), (T, H // {patch}, W // {patch}), (C,)")
    covered = torch.zeros(tiles, height, width, dtype=torch.bool)
    covered[:, : rows * patch, : columns * patch] = masks.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    covered = covered.to(pixels.device)
    if real_pixels is not None:
        covered &= real_pixels.to(device=pixels.device, dtype=torch.bool)
    black = black.to(device=pixels.device, dtype=pixels.dtype).view(1, channels, 1, 1)
    return torch.where(covered.unsqueeze(1), black, pixels)


def check_patch_layout(layout, processing_class, config) -> None:
    """Refuse, in one line, a processor or model config the family's ``layout`` cannot mask (before training)."""
    if layout.kind == "patch rows":
        check_patch_processor(processing_class)
    else:
        image_processor = getattr(processing_class, "image_processor", None)
        missing = [name for name in ("image_mean", "image_std") if getattr(image_processor, name, None) is None]
        if missing:
            raise ValueError(f"perception_aware patch masking needs the image processor's normalisation to blacken "
                             f"pixels; {type(processing_class).__name__} has no image_processor {missing}. Pass the "
                             "model's processor or use perception_aware='none'.")
        encoder_patch_size(config)
    if layout.check is not None:
        layout.check(processing_class, config)


def mask_patches(layout, batch: dict, num_images: list[int], groups: list[int], prob: float, seed: int,
                 processing_class, config) -> torch.Tensor:
    """A copy of ``batch["pixel_values"]`` with each patch blackened with probability ``prob``, laid out as the
    family's ``layout`` says; ``num_images`` and ``groups`` per completion row (see :func:`random_patch_masks`)."""
    pixel_values = batch["pixel_values"]
    if layout.kind == "patch rows":
        row_mask = random_patch_masks(batch["image_grid_thw"].cpu(), num_images, groups, prob, seed)
        black = black_row(processing_class.image_processor, pixel_values.dtype, pixel_values.device)
        return blacken_patches(pixel_values, row_mask, black)
    tiles = layout.tiles(batch, num_images, groups, config)
    patch = encoder_patch_size(config)
    height, width = tiles.pixels.shape[-2:]
    masks = square_masks(tiles.keys, (height // patch, width // patch), prob, seed)
    black = black_value(processing_class.image_processor)
    return blacken_squares(tiles.pixels, masks, patch, black, tiles.real_pixels).view_as(pixel_values)
