"""pepo.modeling: local loading of VLM checkpoints, on the embedded tiny Qwen2.5-VL."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, ProcessorMixin

from pepo.modeling import QwenVLImageTextProcessor, load_model_and_processor, load_processor


def _prompt(processor, question="What colour is the circle ?"):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_load_returns_qwen_vl_and_image_text_processor(tiny_vlm_path):
    model, processor = load_model_and_processor(tiny_vlm_path)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert isinstance(processor, QwenVLImageTextProcessor)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # The PIL image processor, never the torchvision one.
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert "video_processor" not in QwenVLImageTextProcessor.get_attributes()


def test_saved_as_the_stock_class_and_read_back_as_pepos(tiny_vlm_path, tmp_path):
    saved = json.loads((tiny_vlm_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5_VLProcessor"  # plain transformers knows it
    processor = load_processor(tiny_vlm_path)
    assert type(processor) is QwenVLImageTextProcessor and isinstance(processor, ProcessorMixin)
    # a checkpoint saved before (naming pepo's class) still loads, through AutoProcessor too (TRL's way)
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_vlm_path, legacy)
    for name in ("processor_config.json", "tokenizer_config.json"):
        config = json.loads((legacy / name).read_text())
        config["processor_class"] = "QwenVLImageTextProcessor"
        config.pop("video_processor", None)
        (legacy / name).write_text(json.dumps(config))
    assert type(load_processor(legacy)) is QwenVLImageTextProcessor
    assert type(AutoProcessor.from_pretrained(legacy, local_files_only=True)) is QwenVLImageTextProcessor
    # saved again, it names the stock class: the same files as the original
    processor.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "processor_config.json").read_text()) == saved


def test_image_pad_expands_to_four_tokens(tiny_vlm_path):
    _, processor = load_model_and_processor(tiny_vlm_path)
    pad_id = processor.image_token_id
    text = _prompt(processor)
    assert text.count("<|image_pad|>") == 1
    # min = max pixels = 56 * 56: every image becomes 16 patches of 14 px (4 x 4 for a square one,
    # the aspect ratio kept otherwise), merged 2 x 2 -> 4 image tokens.
    for size, grid in [((56, 56), [1, 4, 4]), ((20, 20), [1, 4, 4]), ((130, 30), [1, 2, 8])]:
        batch = processor(text=[text], images=[Image.new("RGB", size, (200, 10, 10))], return_tensors="pt")
        assert (batch["input_ids"][0] == pad_id).sum().item() == 4
        assert batch["image_grid_thw"].tolist() == [grid]
        assert batch["pixel_values"].shape == (16, 3 * 2 * 14 * 14)
        # mm_token_type_ids (transformers 5 Qwen-VL) marks exactly the image positions.
        assert torch.equal(batch["mm_token_type_ids"][0].bool(), batch["input_ids"][0] == pad_id)
    # Two images in one row: two runs of 4.
    two = text.replace("<|image_pad|>", "<|image_pad|><|vision_end|><|vision_start|><|image_pad|>")
    batch = processor(text=[two], images=[[Image.new("RGB", (56, 56))] * 2], return_tensors="pt")
    assert (batch["input_ids"][0] == pad_id).sum().item() == 8


def test_tokenizer_round_trips_task_text(tiny_vlm_path):
    _, processor = load_model_and_processor(tiny_vlm_path)
    chain = "<think> The circle is at the top left . It is red . So the answer is red . </think> <answer> red </answer>"
    ids = processor.tokenizer(chain)["input_ids"]
    assert processor.tokenizer.unk_token_id not in ids
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == chain
    assert processor.tokenizer.eos_token == "<|im_end|>"


def test_videos_are_refused_clearly(tiny_vlm_path):
    _, processor = load_model_and_processor(tiny_vlm_path)
    with pytest.raises(ValueError, match="images and text only"):
        processor(text=["<|video_pad|>"], videos=[[Image.new("RGB", (56, 56))] * 2])


@pytest.mark.slow
def test_generate_batched_with_images(tiny_vlm_path):
    model, processor = load_model_and_processor(tiny_vlm_path)
    texts = [_prompt(processor, "What colour is the circle ?"), _prompt(processor, "How many squares are there ?")]
    images = [Image.new("RGB", (56, 56), (0, 0, 255)), Image.new("RGB", (56, 56), (255, 0, 0))]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=6, do_sample=True)
    assert out.shape[0] == 2 and 1 <= out.shape[1] - batch["input_ids"].shape[1] <= 6
    decoded = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(isinstance(d, str) for d in decoded)
    # The image changes the logits: the vision tower is wired in.
    with torch.no_grad():
        a = model(**batch).logits[:, -1]
        other = processor(text=texts, images=images[::-1], return_tensors="pt", padding=True)
        b = model(**other).logits[:, -1]
    assert not torch.allclose(a, b)


def test_save_reload_round_trip(tiny_vlm_path, tmp_path):
    model, processor = load_model_and_processor(tiny_vlm_path)
    with torch.no_grad():
        model.model.language_model.layers[0].mlp.up_proj.weight.add_(0.5)  # a change the reload must keep
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, processor_again = load_model_and_processor(tmp_path)
    for (name, p), (_, q) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(p, q), name
    batch = processor(text=[_prompt(processor)], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    batch_again = processor_again(text=[_prompt(processor_again)], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    assert torch.equal(batch["input_ids"], batch_again["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch_again).logits)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_model_and_processor(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_processor(tmp_path)


def test_dtype_argument(tiny_vlm_path):
    model, _ = load_model_and_processor(tiny_vlm_path, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_processor(tiny_vlm_path, dtype="float8")


# ---- the per-image cache of preprocessed images ----------------------------------------------


def _scenes(n: int, seed: int = 0) -> list[Image.Image]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)) for _ in range(n)]


def _batch(processor, images):
    text = [_prompt(processor)] * len(images)
    return processor(images=[[image] for image in images], text=text, return_tensors="pt", padding=True)


def test_image_cache_gives_the_uncached_tensors(tiny_vlm_path, monkeypatch):
    _, processor = load_model_and_processor(tiny_vlm_path)
    scenes = _scenes(3)
    # repeats (GRPO's num_generations), a fresh object with the same pixels, and a new image in one batch
    wide = Image.new("RGB", (130, 30), (200, 10, 10))  # another grid (2 x 8 patches)
    images = [scenes[0], scenes[1], scenes[0], scenes[0].copy(), wide, scenes[2], scenes[1], wide]
    first, second = _batch(processor, images), _batch(processor, images[::-1])
    monkeypatch.setattr(processor, "image_cache_bytes", 0)
    for cached, batch in ((first, images), (second, images[::-1])):
        reference = _batch(processor, batch)
        assert set(cached) == set(reference)
        for key in reference:
            assert torch.equal(cached[key], reference[key]), key


def test_image_cache_preprocesses_each_distinct_image_once(tiny_vlm_path, monkeypatch):
    from transformers.image_processing_utils import BaseImageProcessor

    _, processor = load_model_and_processor(tiny_vlm_path)
    seen = []
    original = BaseImageProcessor.__call__

    def counting(self, images, *args, **kwargs):
        seen.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(BaseImageProcessor, "__call__", counting)
    scenes = _scenes(4)
    _batch(processor, [image for image in scenes[:2] for _ in range(8)])  # 2 prompts x 8 generations
    _batch(processor, [image.copy() for image in scenes[:2] for _ in range(8)])  # the loss's second pass
    _batch(processor, scenes)
    assert seen == [2, 2]  # two new images, then the two not seen yet; each batch in one call


def test_image_cache_stays_within_its_byte_budget(tiny_vlm_path, monkeypatch):
    from pepo.modeling import _IMAGE_CACHES

    _, processor = load_model_and_processor(tiny_vlm_path)
    one_image = _batch(processor, _scenes(1))["pixel_values"].nbytes
    budget = int(3.5 * one_image)  # room for three images (pixels + a 24-byte grid row each), not four
    monkeypatch.setattr(processor, "image_cache_bytes", budget)
    scenes = _scenes(5, seed=1)
    _batch(processor, scenes)
    cache = _IMAGE_CACHES[processor]
    assert len(cache.entries) == 3 and cache.bytes <= budget
    # the three most recent stay
    keys = [cache.key(image, next(iter(cache.entries))[0]) for image in scenes]
    assert list(cache.entries) == keys[2:]


def test_mm_token_type_ids_match_processor_mixin(tiny_vlm_path):
    _, processor = load_model_and_processor(tiny_vlm_path)
    ids = _batch(processor, _scenes(2))["input_ids"]
    ours = processor.create_mm_token_type_ids(ids)
    assert ours == ProcessorMixin.create_mm_token_type_ids(processor, ids)
    assert sum(map(sum, ours)) == 2 * 4  # four image tokens per image
    rows = [ids[0].tolist(), ids[1].tolist()[:-3]]  # lists of unequal length, as TRL passes them
    rows[1][-1] = processor.video_token_id
    ours = processor.create_mm_token_type_ids(rows)
    assert ours == ProcessorMixin.create_mm_token_type_ids(processor, rows) and ours[1][-1] == 2


def test_a_download_laid_out_checkpoint_loads_with_pepos_processor(tiny_vlm_path, tmp_path):
    # as a Qwen2.5-VL download: the class named in preprocessor_config.json, no processor_config.json
    download = tmp_path / "download"
    shutil.copytree(tiny_vlm_path, download)
    saved = json.loads((download / "processor_config.json").read_text())
    (download / "processor_config.json").unlink()
    for name, settings in (("preprocessor_config.json", saved["image_processor"]),
                           ("video_preprocessor_config.json", saved["video_processor"])):
        (download / name).write_text(json.dumps({**settings, "processor_class": "Qwen2_5_VLProcessor"}))
    processor = load_processor(download)
    assert type(processor) is QwenVLImageTextProcessor and processor.image_processor.merge_size == 2
    batch = processor(text=[_prompt(processor)], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    assert (batch["input_ids"][0] == processor.image_token_id).sum().item() == 4
