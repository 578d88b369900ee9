"""pepo.embedded.tiny_families: build_tiny_vlm's families, each a checkpoint pepo reloads with its
images-and-text processor (no torchvision), saved under the stock processor name transformers knows."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pepo.embedded import TINY_FAMILIES, build_tiny_vlm
from pepo.modeling import load_processor

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "internvl", "gemma3", "idefics3", "smolvlm", "llava_onevision"]


def test_the_families_and_an_unknown_one_refused_in_one_line(tmp_path):
    assert sorted(TINY_FAMILIES) == sorted(FAMILIES)
    with pytest.raises(ValueError, match=r"family='qwen9_vl' is not one of \['gemma3', "):
        build_tiny_vlm(tmp_path, family="qwen9_vl")
    assert not any(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("family, stock, pepo_class, image_tokens", [
    ("qwen3_vl", "Qwen3VLProcessor", "Qwen3VLImageTextProcessor", 4),
    # anyres: the 2 x 2 base tile, the 2 x 2 resized tile and a newline after each of its rows
    ("llava_onevision", "LlavaOnevisionProcessor", "LlavaOnevisionImageTextProcessor", 10),
])
def test_saved_as_the_stock_processor_and_read_back_as_pepos(tmp_path, family, stock, pepo_class, image_tokens):
    path = build_tiny_vlm(tmp_path, seed=0, family=family)
    assert json.loads((path / "processor_config.json").read_text())["processor_class"] == stock
    processor = load_processor(path)
    assert type(processor).__name__ == pepo_class and type(processor).__mro__[2].__name__ == stock
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it ?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.new("RGB", (56, 56), (200, 0, 0))], return_tensors="pt")
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == image_tokens
    with pytest.raises(ValueError, match="images and text only"):
        processor(text=[text], videos=[[Image.new("RGB", (56, 56))] * 2])
