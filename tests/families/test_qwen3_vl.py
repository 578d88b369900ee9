"""Qwen3-VL end to end: a tiny one from ``build_tiny_vlm(family="qwen3_vl")`` trained by ``pepo train``'s
own code with PEPO_G (2 steps), PAPO and VPPO (1 step each, their masked forward on blackened
Qwen3-VL patches; Qwen3.5 too), its saved checkpoint evaluated and analysed through the CLI and loaded in plain
transformers. Image sharing, prompt sharing and the vectorised M-RoPE index run in these trainings
(the defaults); their equivalence to the plain computation is tested per family in
tests/test_image_sharing.py, tests/test_prompt_sharing.py and tests/test_mrope.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli_runs import analyse_and_check, evaluate_and_check, train_and_check_pepo_g

ROOT = Path(__file__).resolve().parents[2]


def train(model_path, data_dir, out, reward, *extra):
    """What ``pepo train --config recipes/pepo_g_tiny.yaml --model_name_or_path DIR ...`` does, keeping the trainer."""
    from pepo.trainer.cli import build_trainer, parse

    script_args, args, model_args = parse([
        "--config", str(ROOT / "recipes" / "pepo_g_tiny.yaml"), "--model_name_or_path", str(model_path),
        "--train_file", str(data_dir / "train.jsonl"), "--output_dir", str(out), "--max_completion_length", "8",
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--freeze_vision_tower", "false",
        "--eval_after_train", "none", "--reward_funcs", "accuracy", "format", reward, *extra])
    return build_trainer(script_args, args, model_args)


@pytest.mark.slow
def test_qwen3_vl_trains_with_pepo_g_and_is_evaluated_and_analysed(tiny_qwen3_vl_path, synthetic_data_dir, tmp_path,
                                                                   length_reward_registered):
    from pepo.families import family_of
    from pepo.prompt_sharing import sharing_backbone

    out = tmp_path / "run"
    trainer = train(tiny_qwen3_vl_path, synthetic_data_dir, out, length_reward_registered, "--max_steps", "2",
                    "--log_signals", "true")
    model = trainer.model
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration" and trainer.args.weighting == "pepo"
    assert trainer.image_token_id == trainer.processing_class.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # the family's speed-ups are on (pepo.families), each equal to the plain computation (tested per family)
    assert family_of(model).name == "Qwen3-VL" and model.model.visual._pepo_shares_images
    assert model.model.get_rope_index.func.__name__ == "rope_index" and sharing_backbone(model) is model.model
    train_and_check_pepo_g(trainer, out, steps=2)
    evaluate_and_check(out, synthetic_data_dir, tmp_path)
    analyse_and_check(out, synthetic_data_dir, tmp_path)

    plain_transformers_loads(out, trainer.model.eval(), trainer.processing_class)


def plain_transformers_loads(checkpoint, trained, processor):
    """transformers alone (Auto classes, local files) loads the checkpoint pepo saved: the model class,
    its weights (the same logits as the trained model), the tokenizer and the image processor."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(checkpoint, local_files_only=True).eval()
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(AutoImageProcessor.from_pretrained(checkpoint, local_files_only=True)).__name__.startswith(
        "Qwen2VLImageProcessor")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    assert json.loads((checkpoint / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it ?"}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.new("RGB", (56, 56), (0, 0, 200))], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, trained(**batch).logits, rtol=1e-5, atol=1e-5)


class MaskedForwards:
    """Records, during training, each PAPO / VPPO masking (the rollout's images, the masked ones) and
    the images every no-grad extra forward received."""

    def __init__(self, trainer):
        self.masked, self.forwards = [], []
        mask, forward = trainer._masked_pixel_values, trainer._no_grad_logps

        def masked_pixel_values(batch, num_images):
            out = mask(batch, num_images)
            self.masked.append((batch["pixel_values"].clone(), out.clone()))
            return out

        def no_grad_logps(batch, pixel_values):
            self.forwards.append(pixel_values.clone())
            return forward(batch, pixel_values)

        trainer._masked_pixel_values, trainer._no_grad_logps = masked_pixel_values, no_grad_logps


@pytest.mark.slow
@pytest.mark.parametrize("method", ["papo", "vppo"])
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])  # Qwen3.5: the same processor layout
def test_qwen3_vl_trains_with_papo_and_vppo_on_blackened_patches(family, synthetic_data_dir, tmp_path,
                                                                 length_reward_registered, method, request):
    from pepo.patch_masking import black_row

    path = request.getfixturevalue(f"tiny_{family}_path")
    trainer = train(path, synthetic_data_dir, tmp_path / "run", length_reward_registered,
                    "--max_steps", "1", "--weighting", "none", "--perception_aware", method)
    recorded = MaskedForwards(trainer)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 1 and logs[0]["grad_norm"] > 0
    assert ("papo/kl_prcp" if method == "papo" else "vppo/adv_scale/mean") in logs[0]
    assert type(trainer.model).__name__ == {"qwen3_vl": "Qwen3VLForConditionalGeneration",
                                            "qwen3_5": "Qwen3_5ForConditionalGeneration"}[family]
    [(original, masked)] = recorded.masked
    # the extra forward ran on the masked images (VPPO: also once on the originals, for the rollout log-probs)
    assert any(torch.equal(images, masked) for images in recorded.forwards)
    assert len(recorded.forwards) == (1 if method == "papo" else 2)
    # Qwen3-VL's patches: rows of 3 x 2 x 16 x 16 values; a blackened row is the black patch (mean = std = 0.5: -1)
    black = black_row(trainer.processing_class.image_processor)
    assert original.size(1) == black.numel() == 3 * 2 * 16 * 16 and torch.equal(black, torch.full_like(black, -1.0))
    changed = (masked != original).any(1)
    assert 0 < int(changed.sum()) < changed.numel()  # some patches masked, others not
    assert torch.equal(masked[changed], black.expand(int(changed.sum()), -1))
    assert torch.equal(masked[~changed], original[~changed])
