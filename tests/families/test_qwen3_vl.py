"""Qwen3-VL end to end: a tiny one from ``build_tiny_vlm(family="qwen3_vl")`` trained by ``pepo train``'s
own code with PEPO_G (2 steps), PAPO and VPPO (1 step each), its saved checkpoint evaluated and
analysed through the CLI and loaded in plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pepo.cli import main as pepo_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def qwen3_vl_path(tmp_path_factory):
    from pepo.embedded import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen3_vl"), seed=0, family="qwen3_vl")


@pytest.fixture
def length_reward_registered():
    """A reward with spread on a random model (accuracy and format are 0 for every completion)."""
    from pepo.rewards import REWARD_FUNCTIONS, register_reward

    register_reward("test_length_mod_5", lambda completions, **kwargs: [float(len(str(c)) % 5) for c in completions])
    yield "test_length_mod_5"
    REWARD_FUNCTIONS.pop("test_length_mod_5")


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
def test_qwen3_vl_trains_with_pepo_g_and_is_evaluated_and_analysed(qwen3_vl_path, synthetic_data_dir, tmp_path,
                                                                   length_reward_registered):
    out = tmp_path / "run"
    trainer = train(qwen3_vl_path, synthetic_data_dir, out, length_reward_registered, "--max_steps", "2",
                    "--log_signals", "true")
    model = trainer.model
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration" and trainer.args.weighting == "pepo"
    assert trainer.image_token_id == trainer.processing_class.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    trainer.save_model(str(out))
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 2
    # the perception prior was computed on Qwen3-VL's image tokens and the weights differ from 1
    assert all(0 < e["pepo/visual_similarity"] <= 1 and e["pepo/weight/p0"] < 1 < e["pepo/weight/p100"] for e in logs)
    assert all(e["grad_norm"] > 0 for e in logs)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())

    results = tmp_path / "results.json"
    assert pepo_main(["eval", "--model", str(out), "--benchmark", "geometry3k", "--data",
                      str(synthetic_data_dir / "test.jsonl"), "--n", "2", "--max-new-tokens", "8", "--batch-size", "4",
                      "--out", str(results), "--no-progress"]) == 0
    result = json.loads(results.read_text())
    assert result["totals"]["questions"] == 8 and all(len(q["scores"]) == 2 for q in result["questions"])
