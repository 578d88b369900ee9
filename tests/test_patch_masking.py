"""Patch blackening on ``pixel_values`` is the processor's output for the image blackened the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from pepo.families.image_rows import image_rows
from pepo.patch_masking import (
    black_row,
    blacken_patches,
    check_patch_processor,
    patch_positions,
    random_patch_masks,
)


def qwen_image_processor(family: str = "qwen2_5_vl"):
    """Qwen2.5-VL's image processor settings (patch 14, merge 2, CLIP mean/std), or Qwen3-VL's
    (the same processor class with patch 16 and mean = std = 0.5, as its preprocessor config has)."""
    if family == "qwen3_vl":
        return Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32,
                                        max_pixels=32 * 32 * 64, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=28 * 28, max_pixels=28 * 28 * 64,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def blackened_image(image: Image.Image, patches: torch.Tensor, patch_size: int) -> Image.Image:
    array = np.array(image).copy()
    for y, x in patches.tolist():
        array[y * patch_size : (y + 1) * patch_size, x * patch_size : (x + 1) * patch_size] = 0
    return Image.fromarray(array)


@pytest.mark.parametrize("family, size", [("qwen2_5_vl", (56, 56)), ("qwen2_5_vl", (84, 112)), ("qwen2_5_vl", (112, 56)),
                                          ("qwen3_vl", (64, 64)), ("qwen3_vl", (96, 128))])
def test_masked_rows_equal_processing_the_blackened_image(family, size):
    processor = qwen_image_processor(family)
    patch = processor.patch_size
    rng = np.random.default_rng(sum(size))
    # sides are multiples of 2 patches within the pixel bounds: the processor does not resize
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    processed = processor(images=[image], return_tensors="pt")
    pixel_values, grid = processed["pixel_values"], processed["image_grid_thw"]
    assert grid.tolist() == [[1, size[1] // patch, size[0] // patch]]

    row_mask = torch.rand(pixel_values.size(0), generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < row_mask.sum() < row_mask.numel()
    masked = blacken_patches(pixel_values, row_mask, black_row(processor))

    positions = patch_positions(grid, processor.merge_size)
    expected = processor(images=[blackened_image(image, positions[row_mask][:, 2:], patch)], return_tensors="pt")
    assert torch.equal(masked, expected["pixel_values"])
    assert torch.equal(pixel_values, processor(images=[image], return_tensors="pt")["pixel_values"])  # not in place


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_black_row_is_a_black_patch(family):
    processor = qwen_image_processor(family)
    side = 2 * processor.patch_size
    black = processor(images=[Image.new("RGB", (side, side), (0, 0, 0))], return_tensors="pt")["pixel_values"]
    assert torch.equal(black, black_row(processor).expand_as(black))


def test_patch_positions_cover_the_grid_once():
    grid = torch.tensor([[1, 4, 6], [1, 2, 2]])
    positions = patch_positions(grid, merge_size=2)
    assert positions.shape == (28, 4)
    first = {tuple(p) for p in positions[:24, 2:].tolist()}
    assert first == {(y, x) for y in range(4) for x in range(6)}
    # the first merge block is the top-left 2 x 2 patches, row-major
    assert positions[:4, 2:].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_one_mask_per_prompt_and_the_same_on_every_process():
    grid = torch.tensor([[1, 4, 4]] * 4)
    masks = random_patch_masks(grid, [1, 1, 1, 1], group_ids=[0, 0, 1, 1], prob=0.5, seed=7).view(4, 16)
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[2], masks[3])
    assert not torch.equal(masks[0], masks[2])
    # the second process holding group 1's rows draws the same mask for them
    again = random_patch_masks(grid[:2], [1, 1], group_ids=[1, 1], prob=0.5, seed=7).view(2, 16)
    assert torch.equal(again[0], masks[2])
    assert not torch.equal(random_patch_masks(grid, [1, 1, 1, 1], [0, 0, 1, 1], 0.5, seed=8).view(4, 16), masks)


def test_text_only_rows_have_no_rows_to_mask():
    grid = torch.tensor([[1, 2, 2]])
    masks = random_patch_masks(grid, [0, 1, 0], group_ids=[0, 0, 0], prob=1.0, seed=0)
    assert masks.tolist() == [True] * 4
    with pytest.raises(ValueError, match="num_images sums to 1"):
        random_patch_masks(torch.tensor([[1, 2, 2]] * 2), [0, 1], [0, 0], 0.5, 0)


@settings(max_examples=30, deadline=None)
@given(prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_mask_probability_extremes_and_rate(prob, seed):
    grid = torch.tensor([[1, 20, 20]])
    masks = random_patch_masks(grid, [1], [0], prob, seed)
    if prob == 0.0:
        assert not masks.any()
    elif prob == 1.0:
        assert masks.all()
    else:
        assert abs(masks.float().mean().item() - prob) < 0.15  # 400 patches: 6 standard deviations at p = 0.5


def test_a_processor_without_patch_rows_is_refused():
    class NotQwen:
        image_processor = object()

    with pytest.raises(ValueError, match="Qwen2-VL"):
        check_patch_processor(NotQwen())
    check_patch_processor(type("P", (), {"image_processor": qwen_image_processor()})())


@settings(max_examples=40, deadline=None)
@given(prompts=st.lists(st.lists(st.sampled_from([(1, 8, 8), (1, 8, 16)]), max_size=3), min_size=1, max_size=4),
       seed=st.integers(0, 2**31))
def test_several_images_a_row_each_get_their_own_mask(prompts, seed):
    """Prompts of 0 to 3 images, two completions each: every image of a row gets its own rows masked,
    one mask per (prompt, image index), the same for both completions, whatever the other rows hold."""
    rows = [images for images in prompts for _ in range(2)]
    groups = [i // 2 for i in range(len(rows))]
    grids = [grid for images in rows for grid in images]
    if not grids:
        return
    masks = random_patch_masks(torch.tensor(grids), [len(r) for r in rows], groups, prob=0.5, seed=seed)
    ranges = image_rows(grids)
    assert masks.numel() == ranges[-1].stop
    image = 0
    for row, (images, group) in enumerate(zip(rows, groups)):
        for i, grid in enumerate(images):
            mask = masks[ranges[image].start:ranges[image].stop]
            assert 0 < int(mask.sum()) < mask.numel()  # each image masked in part (64+ patches at p = 0.5)
            alone = random_patch_masks(torch.tensor(images), [len(images)], [group], 0.5, seed)
            assert torch.equal(mask, alone[image_rows(images)[i].start:image_rows(images)[i].stop])
            if row % 2:  # the second completion: the first one's mask for this image
                assert torch.equal(mask, masks[ranges[image - len(images)].start:ranges[image - len(images)].stop])
            if i > 0 and grid == images[0]:  # another image of the row: another mask (64+ patches: never equal by chance)
                first = masks[ranges[image - i].start:ranges[image - i].stop]
                assert not torch.equal(mask, first)
            image += 1
