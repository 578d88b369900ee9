"""PAPO / VPPO patch blackening on the pixel-space families (pepo.families.patch_layout, pepo.patch_masking):
a masked tile is the processor's output for its image with those squares painted black; padding tiles and
pixels stay as the processor wrote them; one mask per prompt; refusals are one line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pepo.families import FAMILIES
from pepo.patch_masking import black_value, blacken_squares, encoder_patch_size, mask_patches, square_masks

PIXEL_FAMILIES = ["gemma3", "internvl", "idefics3", "smolvlm", "llava_onevision"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(family) -> (processor, config)`` of ``build_tiny_vlm(family=...)``, built once per module."""
    from transformers import AutoConfig

    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_processor

    built = {}

    def get(family):
        if family not in built:
            path = build_tiny_vlm(tmp_path_factory.mktemp(family), seed=0, family=family)
            built[family] = (load_processor(path), AutoConfig.from_pretrained(path, local_files_only=True))
        return built[family]

    return get


def processed(processor, rows):
    """What TRL's rollout keeps of ``processor``'s output for ``rows`` of images (one prompt per row), and
    ``num_images``: TRL's forward keyword arguments, with InternVL's ``num_tiles`` per row as TRL counts them."""
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": "hi"}]}],
        add_generation_prompt=True, tokenize=False) for images in rows]
    out = processor(images=rows, text=texts, padding=True, return_tensors="pt")
    batch = {key: value for key, value in out.items() if key not in ("input_ids", "attention_mask")}
    num_images = [len(images) for images in rows]
    pixel_values = batch["pixel_values"]
    if pixel_values.dim() == 4 and pixel_values.size(0) != sum(num_images):  # TRL's count of InternVL's tiles
        patches = processor.image_processor(images=rows, crop_to_patches=True, return_tensors="pt")["num_patches"]
        batch["num_tiles"] = [int(group.sum()) for group in torch.split(patches, num_images)]
    return batch, num_images


def random_image(rng, side: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def painted(image: Image.Image, squares: torch.Tensor, patch: int) -> Image.Image:
    array = np.array(image).copy()
    for y, x in squares.nonzero().tolist():
        array[y * patch : (y + 1) * patch, x * patch : (x + 1) * patch] = 0
    return Image.fromarray(array)


def native_side(config) -> int:
    """The side the tiny processor resizes to (so that painting before processing is painting the tile)."""
    size = config.vision_config.image_size
    return size[0] if isinstance(size, (list, tuple)) else size


@pytest.mark.parametrize("family", PIXEL_FAMILIES)
def test_masked_tiles_equal_processing_the_images_with_those_squares_painted_black(family, tiny):
    processor, config = tiny(family)
    layout, patch, side = FAMILIES[config.model_type].patch_layout, encoder_patch_size(config), native_side(config)
    assert layout.kind == "pixel squares" and patch == 14
    rng = np.random.default_rng(0)
    rows = [[random_image(rng, side), random_image(rng, side)], [random_image(rng, side)]]
    batch, num_images = processed(processor, rows)
    groups = [0, 1]
    masked = mask_patches(layout, batch, num_images, groups, 0.5, 3, processor, config)
    assert masked.shape == batch["pixel_values"].shape and not torch.equal(masked, batch["pixel_values"])
    tiles = layout.tiles(batch, num_images, groups, config)
    masked_tiles = layout.tiles(dict(batch, pixel_values=masked), num_images, groups, config).pixels
    masks = square_masks(tiles.keys, (side // patch, side // patch), 0.5, 3)
    # padding: Idefics3 / SmolVLM the second row's second slot; LLaVA-OneVision the crop tiles of the first
    # row's two images (a prompt with several images gets their base tiles only)
    assert sum(key is None for key in tiles.keys) == {"idefics3": 1, "smolvlm": 1, "llava_onevision": 2}.get(family, 0)
    real = torch.tensor([key is not None for key in tiles.keys])
    assert abs(masks[real].float().mean().item() - 0.5) < 0.25  # a fixed draw of 16 (LLaVA-OneVision) to 48 squares
    for tile, key in enumerate(tiles.keys):
        if key is None:
            assert torch.equal(masked_tiles[tile], tiles.pixels[tile]) and not tiles.pixels[tile].any()
            continue
        assert 0 < masks[tile].sum() < masks[tile].numel()
        # the tile depends on its own image only: paint every image with this tile's squares
        expected, _ = processed(processor, [[painted(image, masks[tile], patch) for image in row] for row in rows])
        assert torch.equal(masked_tiles[tile], layout.tiles(expected, num_images, groups, config).pixels[tile])


@pytest.mark.parametrize("family", PIXEL_FAMILIES)
def test_the_completions_of_a_prompt_share_one_mask(family, tiny):
    processor, config = tiny(family)
    layout = FAMILIES[config.model_type].patch_layout
    image = random_image(np.random.default_rng(1), native_side(config))
    batch, num_images = processed(processor, [[image], [image], [image]])
    masked = mask_patches(layout, batch, num_images, [4, 4, 5], 0.5, 0, processor, config)
    per_row = masked.view(3, -1) if masked.size(0) == 3 else masked.view(3, masked.size(0) // 3, -1)
    assert torch.equal(per_row[0], per_row[1]) and not torch.equal(per_row[0], per_row[2])


def test_llava_onevision_padding_tiles_are_not_patches():
    """Pinpoints (28, 28) and (28, 56): a 28 x 28 image has 2 tiles (base + crop), a 28 x 56 one 3; the first
    image's third tile is padding and stays zero."""
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    pinpoints = [[28, 28], [28, 56]]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    config = SimpleNamespace(image_grid_pinpoints=pinpoints,
                             vision_config=SimpleNamespace(image_size=28, patch_size=14))
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(28, 28), (28, 56)]]
    out = image_processor(images=images, return_tensors="pt")
    batch = {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}
    assert batch["pixel_values"].shape[:2] == (2, 3)
    layout = FAMILIES["llava_onevision"].patch_layout
    tiles = layout.tiles(batch, [1, 1], [0, 1], config)
    assert [key is None for key in tiles.keys] == [False, False, True, False, False, False]
    processor = SimpleNamespace(image_processor=image_processor)
    masked = mask_patches(layout, batch, [1, 1], [0, 1], 1.0, 0, processor, config)
    black = black_value(image_processor).view(3, 1, 1)
    assert torch.equal(masked[0, 2], batch["pixel_values"][0, 2]) and not masked[0, 2].any()
    for image, tile in [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]:  # p = 1: every real tile all black
        assert torch.equal(masked[image, tile], black.expand(3, 28, 28))


def test_idefics3_padding_pixels_stay_as_the_processor_wrote_them(tiny):
    processor, config = tiny("idefics3")
    layout = FAMILIES["idefics3"].patch_layout
    batch, num_images = processed(processor, [[random_image(np.random.default_rng(3), 56)]])
    real = batch["pixel_attention_mask"].clone()
    real[..., 35:, :] = 0  # the bottom 21 rows padding, as for an image padded to a taller one
    pixel_values = batch["pixel_values"].masked_fill(~real.bool().unsqueeze(2), 0.0)
    batch = dict(batch, pixel_values=pixel_values, pixel_attention_mask=real)
    masked = mask_patches(layout, batch, num_images, [0], 1.0, 0, processor, config)
    black = black_value(processor.image_processor).view(3, 1, 1)
    assert torch.equal(masked[0, 0, :, :35], black.expand(3, 35, 56))  # the real pixels, the straddling square too
    assert not masked[0, 0, :, 35:].any()


@settings(max_examples=40, deadline=None)
@given(tiles=st.integers(1, 3), channels=st.integers(1, 3), height=st.integers(1, 20), width=st.integers(1, 20),
       patch=st.integers(1, 6), prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**31), padded=st.booleans())
def test_blacken_squares_sets_exactly_the_real_pixels_of_the_drawn_squares(tiles, channels, height, width, patch,
                                                                         prob, seed, padded):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(tiles, channels, height, width, generator=generator)
    keys = [(0, t) if t != 1 else None for t in range(tiles)]  # the second tile is padding
    grid = (height // patch, width // patch)
    masks = square_masks(keys, grid, prob, seed)
    real = torch.rand(tiles, height, width, generator=generator) < 0.7 if padded else None
    black = -torch.arange(1.0, channels + 1)
    out = blacken_squares(pixels, masks, patch, black, real)
    expected = torch.zeros(tiles, height, width, dtype=torch.bool)
    for t, y, x in masks.nonzero().tolist():
        expected[t, y * patch : (y + 1) * patch, x * patch : (x + 1) * patch] = True
    if real is not None:
        expected &= real
    assert torch.equal(out, torch.where(expected.unsqueeze(1), black.view(1, -1, 1, 1), pixels))
    assert tiles == 1 or not masks[1].any()  # a padding tile has no squares
    assert torch.equal(square_masks(keys, grid, prob, seed), masks)  # the same key, the same mask


@settings(max_examples=30, deadline=None)
@given(prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_square_mask_extremes_and_rate(prob, seed):
    masks = square_masks([(0, 0)], (20, 20), prob, seed)
    if prob == 0.0:
        assert not masks.any()
    elif prob == 1.0:
        assert masks.all()
    else:
        assert abs(masks.float().mean().item() - prob) < 0.15  # 400 squares: 6 standard deviations at p = 0.5


def one_line_refusal(call) -> str:
    with pytest.raises(ValueError) as refused:
        call()
    message = str(refused.value)
    assert message and "\n" not in message
    return message


def test_what_cannot_be_masked_is_refused_in_one_line(tiny):
    from pepo.trainer.perception_aware import patch_layout_of

    class Unregistered(torch.nn.Module):
        config = SimpleNamespace(model_type="blip-2")

    assert "'blip-2' has no patch layout" in one_line_refusal(lambda: patch_layout_of(Unregistered(), None))
    processor, config = tiny("gemma3")
    model = SimpleNamespace(config=config, modules=lambda: [SimpleNamespace(config=config)])
    assert patch_layout_of(model, processor) is FAMILIES["gemma3"].patch_layout
    assert "image_processor ['image_mean', 'image_std']" in one_line_refusal(
        lambda: patch_layout_of(model, processor.tokenizer))
    pan_and_scan = SimpleNamespace(image_processor=SimpleNamespace(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                                                   do_pan_and_scan=True))
    assert "do_pan_and_scan" in one_line_refusal(lambda: patch_layout_of(model, pan_and_scan))
    no_patch = SimpleNamespace(model_type="gemma3", vision_config=SimpleNamespace(patch_size=None))
    assert "vision_config.patch_size" in one_line_refusal(lambda: encoder_patch_size(no_patch))
