"""pepo.mrope: the vectorised M-RoPE index equals transformers' loop, tensor for tensor."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pepo.modeling import load_model_and_processor
from pepo.mrope import rope_index, vectorise_rope_index

MERGE = 2  # the tiny VLM's spatial_merge_size, as Qwen2.5-VL's


@pytest.fixture(scope="module")
def inner(sharing_vlm_path):  # Qwen2.5-VL's backbone, then Qwen3-VL's
    model, _ = load_model_and_processor(sharing_vlm_path)
    assert model.config.vision_config.spatial_merge_size == MERGE
    return model.model


# a row: text runs, each maybe followed by an image (merged grid h x w), then text; left and right
# padding; maybe a masked token inside the row (its first counted one, a text token)
image = st.tuples(st.integers(1, 3), st.integers(1, 3))
segments = st.lists(st.tuples(st.integers(1, 6), st.none() | image), min_size=1, max_size=4)
row = st.tuples(segments, st.integers(0, 4), st.integers(0, 4), st.booleans())


def batch_of(rows):
    """input_ids, mm_token_type_ids, image_grid_thw, attention_mask for ``rows`` (padded to one length)."""
    types, masks, grids = [], [], []
    for parts, left, right, hole in rows:
        row_types = []
        for text, picture in [*parts, (1, None)]:
            row_types += [0] * text
            if picture is not None:
                h, w = picture
                row_types += [1] * (h * w)
                grids.append([1, h * MERGE, w * MERGE])
        mask = [0] * left + [1] * len(row_types) + [0] * right
        row_types = [0] * left + row_types + [0] * right
        if hole:
            mask[left] = 0  # a masked token inside the row: skipped when counting, as transformers does
        types.append(row_types)
        masks.append(mask)
    length = max(len(t) for t in types)
    types = [t + [0] * (length - len(t)) for t in types]
    masks = [m + [0] * (length - len(m)) for m in masks]
    type_ids = torch.tensor(types, dtype=torch.int32)
    input_ids = torch.where(type_ids == 1, 7, torch.randint(10, 80, type_ids.shape))
    return input_ids, type_ids, (torch.tensor(grids) if grids else None), torch.tensor(masks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, min_size=1, max_size=5))
def test_same_positions_and_deltas_as_transformers(inner, rows):
    input_ids, type_ids, grids, mask = batch_of(rows)
    for attention_mask in (mask, None):
        if attention_mask is None and grids is not None and bool((type_ids[mask == 0] == 1).any()):
            continue  # without a mask every token counts: only where no image token is padding
        expected = type(inner).get_rope_index(inner, input_ids, type_ids, image_grid_thw=grids,
                                              attention_mask=attention_mask)
        got = rope_index(inner, input_ids, type_ids, image_grid_thw=grids, attention_mask=attention_mask)
        assert got[0].dtype == expected[0].dtype and got[1].dtype == expected[1].dtype
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_the_demo_batch_shape(inner):
    """256 rows of one image (4 tokens) in a 47-token prompt, completions right-padded."""
    rows = [([(12, (2, 2)), (30 + i % 11, None)], 0, 10 - i % 11, False) for i in range(256)]
    input_ids, type_ids, grids, mask = batch_of(rows)
    expected = type(inner).get_rope_index(inner, input_ids, type_ids, image_grid_thw=grids, attention_mask=mask)
    got = rope_index(inner, input_ids, type_ids, image_grid_thw=grids, attention_mask=mask)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_runs_that_do_not_match_the_grids_go_to_transformers(inner, monkeypatch):
    calls = []
    original = type(inner).get_rope_index
    monkeypatch.setattr(type(inner), "get_rope_index", lambda *a, **k: calls.append(1) or original(*a, **k))
    input_ids, type_ids, grids, mask = batch_of([([(3, (2, 2))], 0, 0, False)])
    rope_index(inner, input_ids, type_ids, image_grid_thw=grids, attention_mask=mask)
    assert calls == []
    # two adjacent images are one run of 8 tokens for grids of 4 and 4: transformers decides
    input_ids, type_ids, grids, mask = batch_of([([(3, (2, 2)), (4, None)], 0, 0, False)])
    grids = torch.cat([grids, grids])
    type_ids[0, 7:11], input_ids[0, 7:11] = 1, 7
    with pytest.raises(RuntimeError):  # transformers' own error for this batch
        rope_index(inner, input_ids, type_ids, image_grid_thw=grids, attention_mask=mask)
    assert calls == [1]
    video = type_ids.clone()
    video[0, 0] = 2
    with pytest.raises(Exception):  # noqa: B017 (the fallback is taken: transformers refuses a video without grids)
        rope_index(inner, input_ids, video, image_grid_thw=grids, attention_mask=mask)
    assert calls == [1, 1]


def test_installed_on_the_instance_and_the_forward_unchanged(sharing_vlm_path):
    fast, processor = load_model_and_processor(sharing_vlm_path)  # pepo's loader installs it
    assert fast.model.get_rope_index.func is rope_index
    plain = type(fast).from_pretrained(sharing_vlm_path)  # transformers' loader: the class's own method
    assert "get_rope_index" not in vars(plain.model)
    assert not vectorise_rope_index(torch.nn.Linear(2, 2))
    from PIL import Image

    images = [Image.new("RGB", (56, 56), colour) for colour in ("red", "blue")]
    texts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                           add_generation_prompt=True) for q in ("How many red shapes are there ?", "Which")]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(fast(**inputs).logits, plain(**inputs).logits)


def test_two_images_a_row_from_the_processor(sharing_vlm_path, monkeypatch):
    """A chat-template batch of two rows with two images of different sizes each and one row with one
    image (left-padded, as TRL pads prompts): the vectorised index is transformers', without falling back."""
    from PIL import Image

    from pepo.data import build_prompt, render_prompt

    model, processor = load_model_and_processor(sharing_vlm_path)
    inner = model.model
    sizes = [[(56, 56), (112, 56)], [(56, 112), (56, 56)], [(84, 84)]]
    images = [[Image.new("RGB", size, "red") for size in row] for row in sizes]
    texts = [render_prompt(processor, build_prompt("<image> and <image>: which is larger ?" if len(row) == 2 else
                                                   "<image> How many ?", len(row))) for row in sizes]
    processor.tokenizer.padding_side = "left"
    batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
    args = (batch["input_ids"], batch["mm_token_type_ids"])
    kwargs = dict(image_grid_thw=batch["image_grid_thw"], attention_mask=batch["attention_mask"])
    image_runs = (batch["mm_token_type_ids"].diff(dim=1) == 1).sum(1)
    assert image_runs.tolist() == [2, 2, 1] and batch["image_grid_thw"].size(0) == 5
    expected = type(inner).get_rope_index(inner, *args, **kwargs)
    monkeypatch.setattr(type(inner), "get_rope_index", lambda *a, **k: pytest.fail("fell back to transformers"))
    got = rope_index(inner, *args, **kwargs)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
