"""Random patch blackening on processed Qwen2-VL / Qwen2.5-VL images (PAPO, VPPO).

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


def black_row(image_processor, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(row_size,)`` the ``pixel_values`` row of an all-black patch, as the processor normalises it."""
    channels = len(image_processor.image_mean)
    value = torch.zeros(channels, dtype=torch.float32)
    if getattr(image_processor, "do_rescale", True):
        value = value * float(image_processor.rescale_factor)
    if getattr(image_processor, "do_normalize", True):
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)
        std = torch.tensor(image_processor.image_std, dtype=torch.float32)
        value = (value - mean) / std
    per_channel = image_processor.temporal_patch_size * image_processor.patch_size**2
    return value.repeat_interleave(per_channel).to(dtype=dtype, device=device)


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
