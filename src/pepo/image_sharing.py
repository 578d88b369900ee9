"""Encode each distinct image of a batch once (the vision towers of the families :mod:`pepo.families`
gives ``tower_merged_outputs``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

GRPO puts every prompt in the batch ``num_generations`` times, each copy with its own copy of the
image: the demo's RL step runs the vision tower on 256 images of which 32 are distinct, twice (the
generation's prefill and the loss forward). :func:`share_image_encoding` puts two hooks on the tower:
before its forward, the images that are equal to an earlier one (same grid, same pixel bits) are
dropped from ``pixel_values`` / ``grid_thw``; after it, every image's rows are gathered back from its
first copy (the pre-merge ``last_hidden_state`` by patch rows; the family's per-image-token fields, such as
Qwen3-VL's ``deepstack_features``, by token rows). The output is the one the tower gives on the whole batch, row for row; the gradient of
a shared image is the sum over its copies, as it is when each copy is encoded on its own.

Equality is exact: an integer fingerprint of each image's bits (integer sums without overflow, the same
for any summation order, so on every device) proposes the groups, and one ``torch.equal`` over the
whole batch confirms them; a batch whose check fails (a fingerprint collision) is encoded whole.
Three reads to the host per tower call (the grid sizes, the fingerprints, the check); the tower itself
already reads the grid sizes to build its position and window indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pepo.families import family_of
from pepo.families.image_rows import image_rows, rows_of
from pepo.versions import signature_matches

__all__ = ["image_fingerprints", "share_image_encoding"]

_FINGERPRINT_SEED = 20251124
_PRIME = 2**31 - 1
_CHUNK_ELEMENTS = 2**22  # bounds the int64 copy made while fingerprinting
_INTEGER_VIEW = {4: torch.int32, 2: torch.int16, 8: torch.int64}  # element size -> integer type of that size


@dataclass
class _Plan:
    """Which rows to encode, and how to gather the whole batch back from them."""

    keep_images: torch.Tensor  # (N_distinct,) indices of the distinct images (their first copies)
    keep_rows: torch.Tensor  # their pre-merge rows of ``pixel_values``
    rows: torch.Tensor  # (N_patches,) each pre-merge row of the batch, as a row of the encoded distinct images
    merged_rows: torch.Tensor  # (N_patches / merge**2,) the same for the merged rows (image tokens)


def image_fingerprints(pixel_values: torch.Tensor, sizes: list[int]) -> list[int]:
    """One integer per image from its exact bits: each row's bits times random integers, summed
    modulo a prime, then the rows times random integers by their position. No overflow (a row's
    sum < 2**31 * 2**20 * its 1176 values; an image's < 2**31 * 2**12 * up to 2**16 rows), and
    integer sums do not depend on the order of summation: equal images give equal numbers."""
    bits = pixel_values.contiguous().view(_INTEGER_VIEW[pixel_values.element_size()]).flatten(1)
    generator = torch.Generator(device="cpu").manual_seed(_FINGERPRINT_SEED)
    column_weights = torch.randint(1, 2**20, (bits.size(1),), generator=generator).to(bits.device)
    position_weights = torch.randint(1, 2**12, (max(sizes),), generator=generator).to(bits.device)
    chunk = max(1, _CHUNK_ELEMENTS // bits.size(1))
    per_row = torch.cat([
        (bits[i : i + chunk].to(torch.int64) * column_weights).sum(1).remainder(_PRIME)
        for i in range(0, bits.size(0), chunk)
    ])
    position = torch.cat([torch.arange(n) for n in sizes]).to(bits.device)
    image = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(bits.device)
    mixed = per_row * position_weights[position]
    return torch.zeros(len(sizes), dtype=torch.int64, device=bits.device).index_add_(0, image, mixed).tolist()


def _plan(pixel_values: torch.Tensor, grid_thw: torch.Tensor, merge: int) -> _Plan | None:
    """How to encode only the distinct images of the batch, or ``None`` when all are distinct."""
    grids = [tuple(g) for g in grid_thw.tolist()]
    if len(grids) < 2:
        return None
    rows = image_rows(grids)
    fingerprints = image_fingerprints(pixel_values, [len(r) for r in rows])
    first: dict[tuple, int] = {}
    source = [first.setdefault(key, i) for i, key in enumerate(zip(grids, fingerprints))]  # each image's first copy
    distinct = sorted(set(source))
    if len(distinct) == len(grids):
        return None
    device = pixel_values.device
    if not torch.equal(pixel_values, pixel_values[rows_of(rows, source, device)]):
        return None  # a fingerprint collision: encode the whole batch
    # the distinct images, encoded back to back: each image's rows there are its first copy's
    packed = {j: i for i, j in enumerate(distinct)}
    packed_source = [packed[j] for j in source]
    packed_grids = [grids[j] for j in distinct]
    return _Plan(
        keep_images=torch.tensor(distinct, device=grid_thw.device),
        keep_rows=rows_of(rows, distinct, device),
        rows=rows_of(image_rows(packed_grids), packed_source, device),
        merged_rows=rows_of(image_rows(packed_grids, merge), packed_source, device),
    )


def _before(tower: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: keep the distinct images only (Qwen towers take ``(hidden_states, grid_thw)``)."""
    tower._pepo_image_plan = None
    pixel_values = args[0] if args else kwargs.get("hidden_states")
    grid_thw = args[1] if len(args) > 1 else kwargs.get("grid_thw")
    if not isinstance(pixel_values, torch.Tensor) or grid_thw is None or pixel_values.size(0) == 0:
        return None
    plan = _plan(pixel_values, grid_thw, tower.spatial_merge_size)
    if plan is None:
        return None
    tower._pepo_image_plan = plan
    kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "grid_thw")}
    return (pixel_values[plan.keep_rows], grid_thw[plan.keep_images], *args[2:]), kwargs


def _after(tower: nn.Module, args: tuple, kwargs: dict, output):
    """Forward hook: every image's rows, gathered from its first copy's."""
    plan: _Plan | None = tower._pepo_image_plan
    tower._pepo_image_plan = None
    if plan is None:
        return output
    if isinstance(output, torch.Tensor):  # towers that return the merged image tokens only
        return output[plan.merged_rows]
    for name in tower._pepo_merged_outputs:  # one row per image token: a tensor, or a list of them (per layer)
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            setattr(output, name, value[plan.merged_rows])
        elif value is not None:
            setattr(output, name, [part[plan.merged_rows] for part in value])
    if output.last_hidden_state is not None:
        output.last_hidden_state = output.last_hidden_state[plan.rows]
    return output


def share_image_encoding(model: nn.Module) -> bool:
    """Hook the vision tower(s) of ``model`` so that each distinct image of a call is encoded once.
    Returns whether a tower was hooked: only a family that :mod:`pepo.families` gives
    ``tower_merged_outputs`` is (the others encode every image, as transformers does), and not a tower
    whose forward no longer has the parameters the hooks were written for (one warning)."""
    family = family_of(model)
    if family is None or not family.tower_merged_outputs:
        return False
    towers = [backbone.visual for backbone in family.backbones_in(model)]
    # the hooks read (hidden_states, grid_thw) and rewrite the family's per-token fields and last_hidden_state
    if any(not signature_matches("image_sharing.vision_tower", type(tower).forward, family.tower_forward_parameters)
           for tower in towers):
        return False
    for tower in towers:
        if not getattr(tower, "_pepo_shares_images", False):
            tower._pepo_merged_outputs = family.tower_merged_outputs
            tower.register_forward_pre_hook(_before, with_kwargs=True)
            tower.register_forward_hook(_after, with_kwargs=True)
            tower._pepo_shares_images = True
    return bool(towers)
