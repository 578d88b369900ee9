"""A checkpoint written by pepo (``PEPOTrainer.save_model`` after training) loads in plain
transformers, in a fresh interpreter where ``import pepo`` fails, and computes the same logits.

Plain transformers loads the model, the tokenizer (with its chat template) and the image processor.
The processor files name the stock ``Qwen2_5_VLProcessor`` (pepo's ``QwenVLImageTextProcessor``
saves itself under the class it subclasses, with a video processor config, as a Qwen2.5-VL download
has), so plain ``AutoProcessor`` gives the stock processor; its video processor needs torchvision,
as for any Qwen2.5-VL checkpoint. Where torchvision is missing (this project's CPU machines),
transformers says so; it never falls back to the bare tokenizer.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from . import replay

LOADER = Path(__file__).with_name("plain_transformers_load.py")


@pytest.fixture(scope="module")
def plain_load(tiny_vlm_path, tmp_path_factory):
    """Train one step with pepo, save, load in an interpreter without pepo; returns
    (report, what plain transformers computed, the trained model, its processor)."""
    from pepo.modeling import load_model_and_processor
    from pepo.trainer import PEPOTrainer

    out = tmp_path_factory.mktemp("checkpoint")
    model, processor = load_model_and_processor(tiny_vlm_path)
    trainer = PEPOTrainer(model=model, reward_funcs=[replay.length_reward], processing_class=processor,
                          train_dataset=replay.image_dataset(), args=replay.config(out / "run", 8, max_steps=1))
    replay.install_replay(trainer)
    trainer.train()
    trainer.save_model(str(out / "final"))
    image = out / "circle.png"
    Image.new("RGB", (56, 56), (0, 0, 200)).save(image)
    cmd = [sys.executable, "-I", "-S", str(LOADER), site.getsitepackages()[0], str(out / "final"), str(image),
           str(out / "plain.pt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, torch.load(out / "plain.pt"), trainer.model.eval(), processor, image, out / "final"


@pytest.mark.slow
def test_plain_transformers_loads_model_tokenizer_and_image_processor(plain_load):
    report, plain, model, processor, image, _ = plain_load
    assert report["pepo_importable"] is False
    assert report["model"] == "Qwen2_5_VLForConditionalGeneration"
    assert report["image_processor"].startswith("Qwen2VLImageProcessor")
    # the same prompt through pepo's processor: same ids, and the trained weights give the same logits
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle ?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.open(image)], return_tensors="pt")
    assert torch.equal(batch["input_ids"], plain["input_ids"])
    with torch.no_grad():
        logits = model(**batch).logits
    torch.testing.assert_close(plain["logits"], logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_saved_processor_names_the_stock_class_plain_transformers_loads(plain_load):
    report, final = plain_load[0], plain_load[5]
    processor_config = json.loads((final / "processor_config.json").read_text())
    tokenizer_config = json.loads((final / "tokenizer_config.json").read_text())
    assert processor_config["processor_class"] == tokenizer_config["processor_class"] == "Qwen2_5_VLProcessor"
    video = processor_config["video_processor"]
    image = processor_config["image_processor"]
    assert video["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert [video[k] for k in ("patch_size", "merge_size", "temporal_patch_size")] == [
        image[k] for k in ("patch_size", "merge_size", "temporal_patch_size")]
    if report["torchvision"]:
        assert report["auto_processor"] == "Qwen2_5_VLProcessor" and report["auto_processor_has_image_processor"]
    else:
        assert "auto_processor" not in report and "torchvision" in report["auto_processor_error"].lower(), report
