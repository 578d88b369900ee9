"""pepo.image_sharing: each distinct image encoded once, the tower's output unchanged row for row."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pepo import image_sharing
from pepo.image_sharing import share_image_encoding
from pepo.modeling import load_model_and_processor

CHANNELS = 3 * 2 * 14 * 14  # Qwen's pre-merge row: channels x temporal patch x 14 x 14 pixels


def images_with_copies(grids: list[tuple[int, int, int]], order: list[int], seed: int = 0, channels: int = CHANNELS):
    """``pixel_values`` / ``grid_thw`` of the images ``order`` picks from one random image per grid."""
    generator = torch.Generator().manual_seed(seed)
    distinct = [torch.randn(t * h * w, channels, generator=generator) for t, h, w in grids]
    return torch.cat([distinct[i] for i in order]), torch.tensor([grids[i] for i in order])


def tower_of(model):
    return model.model.visual


def test_the_tower_output_is_unchanged_and_only_distinct_images_are_encoded(sharing_vlm_path):
    plain, _ = load_model_and_processor(sharing_vlm_path)
    shared, _ = load_model_and_processor(sharing_vlm_path)
    assert share_image_encoding(shared)
    vision = plain.config.vision_config
    channels = 3 * vision.temporal_patch_size * vision.patch_size**2  # 14 px patches (Qwen2.5-VL), 16 (Qwen3-VL)
    # two grids, eight images: every image three or more times, in an interleaved order
    pixel_values, grid_thw = images_with_copies([(1, 4, 4), (1, 4, 8), (1, 8, 4)], [0, 1, 0, 2, 2, 1, 0, 2, 1],
                                                channels=channels)
    seen = []
    tower_of(shared).patch_embed.register_forward_hook(lambda module, args, out: seen.append(args[0].size(0)))
    expected = tower_of(plain)(pixel_values, grid_thw=grid_thw)
    got = tower_of(shared)(pixel_values, grid_thw=grid_thw)
    assert seen == [16 + 32 + 32]  # the three distinct images' rows, not the nine images' 224
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=1e-6, atol=1e-6)
    # Qwen3-VL's deepstack features (one list entry per deepstack layer, a row per image token) too
    deepstack = getattr(expected, "deepstack_features", None) or []
    assert len(getattr(got, "deepstack_features", None) or []) == len(deepstack)
    for got_layer, expected_layer in zip(got.deepstack_features if deepstack else [], deepstack):
        torch.testing.assert_close(got_layer, expected_layer, rtol=1e-6, atol=1e-6)


# a GRPO-like batch: copies of two prompts of one image; of three prompts of two images (one with an image twice)
ONE_IMAGE_ROWS = [[0], [1], [0], [1], [0]]
TWO_IMAGE_ROWS = [[0, 1], [2, 0], [0, 1], [2, 0], [1, 1], [1, 1]]


@pytest.mark.parametrize("rows", [ONE_IMAGE_ROWS, TWO_IMAGE_ROWS], ids=["one_image_a_row", "two_images_a_row"])
def test_logits_and_gradients_equal_encoding_every_copy(sharing_vlm_path, rows):
    plain, processor = load_model_and_processor(sharing_vlm_path)
    shared, _ = load_model_and_processor(sharing_vlm_path)
    share_image_encoding(shared)
    from PIL import Image

    generator = torch.Generator().manual_seed(1)
    images = [Image.fromarray((torch.rand(56, 56, 3, generator=generator) * 255).byte().numpy()) for _ in range(3)]
    text = ["<|vision_start|><|image_pad|><|vision_end|>" * len(row) + "How many red shapes are there ?" for row in rows]
    inputs = processor(images=[[images[i] for i in row] for row in rows], text=text, return_tensors="pt", padding=True)
    encoded = []  # the images the shared tower encodes: each distinct one once
    tower_of(shared).register_forward_pre_hook(lambda tower, args, kwargs: encoded.append(args[1].size(0)),
                                               with_kwargs=True)
    losses = []
    for model in (plain, shared):
        model.train()
        out = model(**inputs)
        loss = out.logits.float().pow(2).mean()
        loss.backward()
        losses.append((out.logits.detach(), loss.detach()))
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=1e-5, atol=1e-6)
    for (name, p_plain), p_shared in zip(plain.named_parameters(), shared.parameters()):
        assert p_plain.grad is not None or p_shared.grad is None, name
        if p_plain.grad is not None:
            torch.testing.assert_close(p_shared.grad, p_plain.grad, rtol=1e-4, atol=1e-7, msg=name)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower_of(shared).parameters())
    assert encoded == [len({i for row in rows for i in row})]


def test_all_distinct_images_and_a_fingerprint_collision_encode_the_whole_batch(monkeypatch):
    pixel_values, grid_thw = images_with_copies([(1, 4, 4), (1, 4, 4)], [0, 1])
    assert image_sharing._plan(pixel_values, grid_thw, merge=2) is None
    # every image given the same fingerprint: the exact check refuses the false groups
    monkeypatch.setattr(image_sharing, "image_fingerprints", lambda pixel_values, sizes: [0] * len(sizes))
    assert image_sharing._plan(pixel_values, grid_thw, merge=2) is None
    pixel_values, grid_thw = images_with_copies([(1, 4, 4), (1, 4, 4)], [0, 1, 0])
    assert image_sharing._plan(pixel_values, grid_thw, merge=2) is None  # image 1 is not image 0, same fingerprint


@settings(max_examples=40, deadline=None)
@given(
    grids=st.lists(st.sampled_from([(1, 2, 2), (1, 2, 4), (1, 4, 2), (2, 2, 2)]), min_size=1, max_size=4),
    data=st.data(),
)
def test_the_plan_gathers_every_row_back_from_the_distinct_images(grids, data):
    order = data.draw(st.lists(st.integers(0, len(grids) - 1), min_size=1, max_size=12))
    pixel_values, grid_thw = images_with_copies(grids, order)
    plan = image_sharing._plan(pixel_values, grid_thw, merge=2)
    if len(set(order)) == len(order):
        assert plan is None
        return
    assert plan is not None and plan.keep_images.tolist() == sorted({order.index(i) for i in order})
    encoded = pixel_values[plan.keep_rows]  # what the tower sees
    assert torch.equal(encoded[plan.rows], pixel_values)
    # merged rows: a stand-in "merger" averaging each 4 consecutive rows, applied to the encoded rows
    merged_all = pixel_values.view(-1, 4, CHANNELS).mean(1)
    assert torch.equal(encoded.view(-1, 4, CHANNELS).mean(1)[plan.merged_rows], merged_all)


def test_bf16_copies_are_shared_and_a_single_image_is_left_alone():
    pixel_values, grid_thw = images_with_copies([(1, 2, 2)], [0, 0, 0])
    plan = image_sharing._plan(pixel_values.bfloat16(), grid_thw, merge=2)
    assert plan is not None and plan.keep_images.tolist() == [0]
    assert image_sharing._plan(pixel_values[:4], grid_thw[:1], merge=2) is None  # one image: nothing to share


def test_models_without_a_qwen_tower_are_left_alone():
    assert share_image_encoding(torch.nn.Linear(2, 2)) is False
