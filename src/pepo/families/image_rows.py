"""Which rows of ``pixel_values`` belong to which image, for the processors that give ``image_grid_thw``.

A Qwen2-VL, Qwen2.5-VL, Qwen3-VL or Qwen3.5 image processor writes one ``pixel_values`` row per
patch, image after image in batch order; ``image_grid_thw`` (N, 3) holds each image's ``(t, h, w)``
patches, so image ``i`` has ``t * h * w`` rows right after image ``i - 1``'s. The vision tower merges
``merge x merge`` neighbouring patches into one row of its output (one image token per merged row).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import accumulate

import torch

__all__ = ["image_rows", "rows_of"]


def image_rows(image_grid_thw, merge: int = 1) -> list[range]:
    """Each image's rows, in batch order: of ``pixel_values`` (``merge=1``), or of the tower's merged
    output, i.e. its image tokens (``merge`` = the tower's ``spatial_merge_size``).

    ``image_grid_thw``: a (N, 3) tensor or array, or a sequence of N ``(t, h, w)``."""
    grids = image_grid_thw.tolist() if hasattr(image_grid_thw, "tolist") else image_grid_thw
    sizes = [math.prod(int(v) for v in grid) // (merge * merge) for grid in grids]
    return [range(end - size, end) for size, end in zip(sizes, accumulate(sizes))]


def rows_of(ranges: Sequence[range], images: Iterable[int], device=None) -> torch.Tensor:
    """The rows of ``images`` (indices into ``ranges``, in that order, repeats allowed) as one long tensor."""
    parts = [torch.arange(ranges[i].start, ranges[i].stop) for i in images]
    return (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)).to(device)
