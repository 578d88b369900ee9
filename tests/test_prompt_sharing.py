"""pepo.prompt_sharing: each distinct prompt of a GRPO batch run once, the same log-probs and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from trl.trainer.utils import add_fused_lm_head

from pepo.modeling import load_model_and_processor
from pepo.prompt_sharing import SharedPromptForward, prompt_groups, sharing_backbone

IMAGE_TOKEN = 7  # a made-up id for the grouping tests; 4 tokens per (1, 4, 4) image with merge 2
CHANNELS = 8


def grouping_batch(prompts: list[tuple[list[int], int | None]], order: list[int], pad_to: int):
    """Rows ``order`` picks from ``prompts`` (text ids, image seed or None): left-padded ids and masks,
    and the rows' images (one (1, 4, 4) grid per image placeholder run) in batch order."""
    ids, masks, pixels, grids = [], [], [], []
    for i in order:
        text, image_seed = prompts[i]
        row = ([IMAGE_TOKEN] * 4 if image_seed is not None else []) + text
        ids.append([0] * (pad_to - len(row)) + row)
        masks.append([0] * (pad_to - len(row)) + [1] * len(row))
        if image_seed is not None:
            pixels.append(torch.randn(16, CHANNELS, generator=torch.Generator().manual_seed(image_seed)))
            grids.append([1, 4, 4])
    pixel_values = torch.cat(pixels) if pixels else None
    grid_thw = torch.tensor(grids) if grids else None
    return torch.tensor(ids), torch.tensor(masks), pixel_values, grid_thw


def test_rows_share_only_equal_prompts_with_equal_images():
    # prompt 1 and 2 have the same text but different images; prompt 3 has no image
    prompts = [([1, 2, 3], 0), ([4, 5], 1), ([4, 5], 2), ([4, 5], None)]
    order = [0, 1, 0, 2, 3, 1, 3, 2]
    ids, mask, pixels, grids = grouping_batch(prompts, order, pad_to=8)
    groups = prompt_groups(ids, mask, pixels, grids, IMAGE_TOKEN, merge=2)
    assert groups.first_rows.tolist() == [0, 1, 3, 4]
    assert groups.inverse.tolist() == [0, 1, 0, 2, 3, 1, 3, 2]
    # the first rows' images are images 0, 1, 3 of the batch (row 4 has none); their 16 pixel rows each
    assert groups.first_images.tolist() == [0, 1, 3]
    assert groups.first_pixel_rows.tolist() == [*range(0, 32), *range(48, 64)]
    assert prompt_groups(ids[:2], mask[:2], pixels[:32], grids[:2], IMAGE_TOKEN, merge=2) is None  # no repeats


@given(
    st.lists(st.tuples(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.one_of(st.none(), st.integers(0, 2))),
             min_size=1, max_size=4),
    st.data(),
)
@settings(max_examples=60, deadline=None)
def test_each_row_takes_the_first_row_with_the_same_prompt_and_image(prompts, data):
    order = data.draw(st.lists(st.integers(0, len(prompts) - 1), min_size=2, max_size=10))
    ids, mask, pixels, grids = grouping_batch(prompts, order, pad_to=8)
    groups = prompt_groups(ids, mask, pixels, grids, IMAGE_TOKEN, merge=2)
    key = [prompts[i] for i in order]
    if len(set(map(repr, key))) == len(order):
        assert groups is None
        return
    first = groups.first_rows[groups.inverse].tolist()
    for row, source in enumerate(first):
        assert key[source] == key[row]  # same text and same image
        assert key.index(key[row]) == source  # the first such row
    assert sorted(set(first)) == groups.first_rows.tolist()
    kept = [row for i in groups.first_images.tolist() for row in range(16 * i, 16 * i + 16)]  # 16 pixel rows an image
    assert groups.first_pixel_rows.tolist() == kept


def test_a_fingerprint_collision_shares_nothing(monkeypatch):
    from pepo import prompt_sharing

    ids, mask, pixels, grids = grouping_batch([([1], 0), ([1], 1)], [0, 1, 0], pad_to=6)
    monkeypatch.setattr(prompt_sharing, "image_fingerprints", lambda pixel_values, sizes: [0] * len(sizes))
    assert prompt_groups(ids, mask, pixels, grids, IMAGE_TOKEN, merge=2) is None


def prompt_part(inputs: dict, C: int, rows=slice(None)) -> dict:
    """The prompt columns of ``grpo_batch``'s per-token tensors (of ``rows``); image tensors as they are."""
    S = inputs["input_ids"].size(1)
    return {k: (v[rows, :-C] if v.dim() == 2 and v.size(1) == S else v) for k, v in inputs.items()}


# the images of the three prompts of grpo_batch: one a row, or two a row (prompts 0 and 2: the same first image)
ONE_IMAGE_A_ROW = ([0], [1], [1])
TWO_IMAGES_A_ROW = ([0, 1], [1, 0], [0, 0])


def grpo_batch(processor, seed: int = 0, row_images=ONE_IMAGE_A_ROW):
    """A GRPO-like batch: three prompts (two texts of different lengths; prompts 0 and 2 have the same
    text and different images, ``row_images`` of two random ones) in 7 rows, each followed by its own completion."""
    generator = torch.Generator().manual_seed(seed)
    images = [Image.fromarray((torch.rand(56, 56, 3, generator=generator) * 255).byte().numpy()) for _ in range(2)]
    texts = ["How many red shapes are there ?", "Which shape is in the top left cell of the grid ?"]
    prompts = [(texts[0], [images[i] for i in row_images[0]]), (texts[1], [images[i] for i in row_images[1]]),
               (texts[0], [images[i] for i in row_images[2]])]
    order = [0, 1, 0, 2, 1, 0, 2]
    text = ["<|vision_start|><|image_pad|><|vision_end|>" * len(prompts[i][1]) + prompts[i][0] for i in order]
    prompt = processor(images=[prompts[i][1] for i in order], text=text, return_tensors="pt", padding=True)
    lengths = torch.randint(2, 7, (len(order),), generator=generator)
    C = int(lengths.max())
    completion = torch.randint(20, 60, (len(order), C), generator=generator)
    completion_mask = (torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)).long()
    input_ids = torch.cat([prompt["input_ids"], completion * completion_mask], 1)
    attention_mask = torch.cat([prompt["attention_mask"], completion_mask], 1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-C] = -100
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=prompt["pixel_values"],
                  image_grid_thw=prompt["image_grid_thw"],
                  mm_token_type_ids=torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(completion)], 1))
    return inputs, labels, C, completion_mask.bool()


def score(model, call, inputs, labels, C):
    model.zero_grad()
    out = call(**inputs, labels=labels, fused_lm_head=True)
    log_probs, entropy = out.log_probs[:, -C:], out.entropy[:, -C:]
    (log_probs.sum() + entropy.sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return log_probs.detach(), entropy.detach(), grads


@pytest.mark.parametrize("row_images", [ONE_IMAGE_A_ROW, TWO_IMAGES_A_ROW], ids=["one_image_a_row", "two_images_a_row"])
def test_log_probs_entropies_and_gradients_equal_the_plain_forward(prompt_sharing_vlm_path, row_images):
    model, processor = load_model_and_processor(prompt_sharing_vlm_path)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    model.train()
    inputs, labels, C, valid = grpo_batch(processor, row_images=row_images)
    language_rows = []
    model.model.language_model.register_forward_hook(
        lambda m, args, kwargs, out: language_rows.append(kwargs["inputs_embeds"].shape[:2]), with_kwargs=True)
    backbone = sharing_backbone(model)
    assert backbone is model.model
    shared = SharedPromptForward(model, backbone, C, model.config.image_token_id)
    expected = score(model, model, inputs, labels, C)
    got = score(model, shared, inputs, labels, C)
    P = inputs["input_ids"].size(1) - C
    # the plain forward: 7 whole rows; shared: the 3 distinct prompts minus their last token, then 7 continuations
    assert [tuple(s) for s in language_rows] == [(7, P + C), (3, P - 1), (7, 1 + C)]
    torch.testing.assert_close(got[0][valid], expected[0][valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1][valid], expected[1][valid], rtol=1e-5, atol=1e-5)
    assert got[2].keys() == expected[2].keys() and len(got[2]) > 0
    for name, grad in expected[2].items():  # float32 sums in another order: rounding scales with the gradient's size
        atol = 1e-6 * max(1.0, float(grad.abs().max()))
        torch.testing.assert_close(got[2][name], grad, rtol=1e-4, atol=atol, msg=name)


def test_batches_it_cannot_share_run_the_plain_forward(tiny_vlm_path):
    model, processor = load_model_and_processor(tiny_vlm_path)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    inputs, labels, C, _ = grpo_batch(processor)
    calls = []
    model.model.language_model.register_forward_pre_hook(lambda m, args: calls.append(1))
    shared = SharedPromptForward(model, model.model, C, model.config.image_token_id)
    without_types = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}  # positions cannot be sliced
    for call_inputs in (without_types, {k: v[:2] if v.dim() == 2 else v for k, v in inputs.items()} | {
            "pixel_values": inputs["pixel_values"][:32], "image_grid_thw": inputs["image_grid_thw"][:2]}):
        calls.clear()
        shared(**call_inputs, labels=labels[: call_inputs["input_ids"].size(0)], fused_lm_head=True)
        assert calls == [1]  # one plain forward


@pytest.mark.parametrize(("sampling", "row_images"), [
    (dict(do_sample=False), ONE_IMAGE_A_ROW), (dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0), ONE_IMAGE_A_ROW),
    (dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0), TWO_IMAGES_A_ROW),
], ids=["greedy", "sampled", "sampled_two_images_a_row"])
def test_generation_from_shared_prompts_gives_the_same_tokens(prompt_sharing_vlm_path, sampling, row_images):
    from transformers import GenerationConfig

    from pepo.prompt_sharing import share_prompt_prefill

    plain, processor = load_model_and_processor(prompt_sharing_vlm_path)
    shared, _ = load_model_and_processor(prompt_sharing_vlm_path)
    assert share_prompt_prefill(shared)
    inputs, _, C, _ = grpo_batch(processor, row_images=row_images)
    prompt = prompt_part(inputs, C)
    config = GenerationConfig(max_new_tokens=6, pad_token_id=processor.tokenizer.pad_token_id, output_logits=True,
                              return_dict_in_generate=True, **sampling)
    prefill_rows = []
    shared.model.language_model.register_forward_hook(
        lambda m, args, kwargs, out: prefill_rows.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    outputs = []
    for model in (plain, shared):
        torch.manual_seed(0)
        outputs.append(model.generate(**prompt, generation_config=config))
    P = prompt["input_ids"].size(1)
    assert prefill_rows[:2] == [(3, P - 1), (7, 1)]  # the 3 distinct prompts once, then each row's last prompt token
    assert torch.equal(outputs[1].sequences, outputs[0].sequences)
    for got, expected in zip(outputs[1].logits, outputs[0].logits, strict=True):  # positions and cache: same logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_several_samples_per_prompt_as_pepo_eval_asks_them(prompt_sharing_vlm_path):
    """``num_return_sequences`` (pepo eval's avg@n): each prompt prefilled once, the same samples."""
    from pepo.prompt_sharing import generate_with_shared_prompts

    model, processor = load_model_and_processor(prompt_sharing_vlm_path)
    inputs, _, C, _ = grpo_batch(processor)
    distinct = [0, 1, 3]  # the batch's three distinct prompts, as an evaluation batch holds them
    prompt = prompt_part(inputs, C, distinct)
    prompt["pixel_values"] = inputs["pixel_values"][[*range(16), *range(16, 32), *range(48, 64)]]  # 16 rows an image
    prompt["image_grid_thw"] = inputs["image_grid_thw"][distinct]
    sampling = dict(max_new_tokens=5, num_return_sequences=4, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                    pad_token_id=processor.tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True)
    prefill_rows = []
    model.model.language_model.register_forward_hook(
        lambda m, args, kwargs, out: prefill_rows.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    outputs = []
    for call in (model.generate, lambda **kw: generate_with_shared_prompts(model, **kw)):
        torch.manual_seed(0)
        prefill_rows.clear()
        outputs.append(call(**prompt, **sampling))
    P = prompt["input_ids"].size(1)
    assert prefill_rows[:2] == [(3, P - 1), (12, 1)]
    assert torch.equal(outputs[1].sequences, outputs[0].sequences)
    for got, expected in zip(outputs[1].logits, outputs[0].logits, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_family_that_does_not_share_prompts_gets_the_plain_forward_and_generate(tiny_qwen3_5_path):
    """Qwen3.5 (pepo.families: shares_prompts False, its linear attention cache cannot be gathered to rows):
    no backbone, share_prompt_prefill leaves generate alone, generate_with_shared_prompts is generate."""
    from pepo.prompt_sharing import generate_with_shared_prompts, share_prompt_prefill

    model, processor = load_model_and_processor(tiny_qwen3_5_path)
    assert sharing_backbone(model) is None and not share_prompt_prefill(model) and "generate" not in vars(model)
    inputs, _, C, _ = grpo_batch(processor)
    prompt = prompt_part(inputs, C)
    prefill_rows = []
    model.model.language_model.register_forward_hook(
        lambda m, args, kwargs, out: prefill_rows.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    generate_with_shared_prompts(model, **prompt, max_new_tokens=2, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
    assert prefill_rows[0] == tuple(prompt["input_ids"].shape)  # every row's whole prompt: the plain prefill
