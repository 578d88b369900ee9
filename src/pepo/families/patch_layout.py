"""How a family's processor lays out the patches PAPO and VPPO blacken (:attr:`pepo.families.Family.patch_layout`).

Two layouts, blackened by :mod:`pepo.patch_masking`'s generic code:

* **patch rows** (:data:`PATCH_ROWS`): one ``pixel_values`` row per encoder patch, with
  ``image_grid_thw`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5; which rows are whose image:
  :mod:`pepo.families.image_rows`).
* **pixel squares** (:func:`pixel_squares`): normalised images in pixel space, a stack of
  ``(C, H, W)`` tiles (Gemma 3, InternVL, Idefics3 / SmolVLM, LLaVA-OneVision). The family's
  ``tiles`` function says which tiles of a batch are real and whose (:class:`Tiles`), and which of
  their pixels are padding; every ``patch x patch`` square of the encoder's own patch size is
  blackened with probability ``p``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

__all__ = ["PATCH_ROWS", "PatchLayout", "Tiles", "pixel_squares", "tile_keys"]


class Tiles(NamedTuple):
    """A batch's images in pixel space, as a family's processor laid them out."""

    pixels: torch.Tensor  # (T, C, H, W): a view of ``pixel_values`` with every tile (image, crop, padding) of the batch
    keys: list  # per tile: ``(prompt group, index among its row's real tiles)``, or None for a padding tile
    real_pixels: torch.Tensor | None = None  # (T, H, W) bool, False on padding pixels; None: all pixels real


#: ``tiles(batch, num_images, groups, config) -> Tiles``: ``num_images`` and ``groups`` per completion row
TilesOf = Callable[[dict, list, list, Any], Tiles]


@dataclass(frozen=True)
class PatchLayout:
    """Where a family's processor writes each encoder patch of an image (see the module docstring)."""

    kind: str  # "patch rows" or "pixel squares"
    tiles: TilesOf | None = None  # pixel squares: the batch's tiles
    check: Callable[[Any, Any], None] | None = None  # ``check(processing_class, config)``: the family's own refusals


PATCH_ROWS = PatchLayout("patch rows")


def pixel_squares(tiles: TilesOf, check: Callable[[Any, Any], None] | None = None) -> PatchLayout:
    """The pixel-squares layout whose batch tiles ``tiles`` finds; ``check`` adds the family's own refusals
    (one-line ``ValueError``) of a processor or model config."""
    return PatchLayout("pixel squares", tiles, check)


def tile_keys(tiles_per_row: list[int], groups: list[int]) -> list[tuple[int, int]]:
    """The keys of rows holding ``tiles_per_row[r]`` real tiles each, tile after tile, row after row."""
    if len(tiles_per_row) != len(groups):
        raise ValueError(f"tile_keys: {len(tiles_per_row)} rows of tiles but {len(groups)} group ids")
    return [(group, j) for group, count in zip(groups, tiles_per_row, strict=True) for j in range(int(count))]
