"""Training sets that mix rows with and without images, per tiny family, through TRL's whole loop
(its sampler decides which rows meet in a micro-batch; ``steps_per_generation=2`` makes TRL score
old log-probs, the path that passes the processor's every output to its forward). Before: Idefics3
and SmolVLM crashed on a micro-batch of text-only rows (their padding images, all zeros, reached the
vision tower), and LLaVA-OneVision on TRL's old log-probs (``batch_num_images``, which TRL's method
does not take). Qwen2.5-VL's mixed batches: tests/trainer/test_mixed_batches.py."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from PIL import Image

QUESTION = {"type": "text", "text": "What colour is the circle ?"}


def mixed_rows() -> Dataset:
    """One image row and three text-only rows: a micro-batch of text-only rows is bound to occur."""
    rows = [[Image.new("RGB", (56, 56), (200, 0, 0))], [], [], []]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": [{"type": "image"}] * len(r) + [QUESTION]}],
                               "images": r} for r in rows])


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(str(c)) % 3) for c in completions]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["idefics3", "smolvlm", "llava_onevision", "gemma3", "internvl", "qwen3_vl"])
def test_a_mixed_training_set_trains_on_every_family(family, tmp_path):
    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_model_and_processor
    from pepo.trainer import PEPOConfig, PEPOTrainer

    model, processor = load_model_and_processor(build_tiny_vlm(tmp_path / family, seed=0, family=family))
    args = PEPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to=[], seed=0,
                      per_device_train_batch_size=4, num_generations=2, steps_per_generation=2, max_completion_length=8,
                      max_steps=4, logging_steps=1, loss_type="grpo", beta=0.0, save_strategy="no", disable_tqdm=True,
                      weighting="pepo", schedule="constant")
    trainer = PEPOTrainer(model=model, reward_funcs=[length_reward], args=args, train_dataset=mixed_rows(),
                          processing_class=processor)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 4 and all(torch.isfinite(torch.tensor(log["loss"])) for log in logs)


@pytest.mark.slow
def test_llava_onevision_without_batch_num_images_is_the_same_forward_for_one_image_a_row(tmp_path):
    # what drop_batch_num_images relies on: with at most one image a row the model's default is the same
    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_model_and_processor
    from pepo.trainer.mixed_batches import drop_batch_num_images

    model, processor = load_model_and_processor(build_tiny_vlm(tmp_path / "llava", seed=0, family="llava_onevision"))
    prompt = mixed_rows()[0]["prompt"]
    texts = [processor.apply_chat_template(prompt, add_generation_prompt=True)] * 2
    images = [[Image.new("RGB", (56, 56), (200, 0, 0))], [Image.new("RGB", (84, 28), (0, 0, 200))]]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    assert inputs["batch_num_images"].tolist() == [1, 1]
    with torch.no_grad():
        with_counts = model(**inputs).logits
        without = dict(inputs)
        drop_batch_num_images(without)
        assert "batch_num_images" not in without
        torch.testing.assert_close(model(**without).logits, with_counts, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^batch_num_images \[2, 0\]: a row with several images"):
        drop_batch_num_images({"batch_num_images": torch.tensor([2, 0])})
