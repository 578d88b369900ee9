"""A few CPU steps of every tiny recipe through `pepo train`'s own code path; parameters change.

The recipes start from the embedded warm start (tests/trainer/test_tiny_recipe_learns.py builds
one); here the random tiny model ('embedded') keeps every recipe's run to seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pepo.rewards import register_reward
from pepo.train import main  # `pepo train`: registers the embedded model and data the tiny recipes name
from pepo.trainer.cli import build_trainer, parse

from .conftest import length_reward

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*_tiny.yaml"))
register_reward("test_length", length_reward)  # varies within a group, unlike accuracy on a random model


def recipe_args(path, tmp_path, *extra):
    return parse([
        "--config", str(path), "--model_name_or_path", "embedded", "--output_dir", str(tmp_path), "--max_steps", "2", "--max_train_samples", "8",
        "--reward_funcs", "test_length", "--max_completion_length", "8", "--disable_tqdm", "true",
        "--per_device_train_batch_size", "4", "--num_generations", "4",  # what the code does, not the recipe's scale
        *extra,
    ])


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_tiny_recipe_trains(path, tmp_path):
    # The random tiny model almost never stops within 8 tokens, so overlong filtering would mask every
    # completion of the DAPO recipes: keep it off here (test_recipes checks the recipes set it).
    trainer = build_trainer(*recipe_args(path, tmp_path, "--mask_truncated_completions", "false"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no parameter moved"
    logs = {k for entry in trainer.state.log_history for k in entry}
    if trainer.args.weighting != "none":
        assert {"pepo/lambda", "pepo/weight/p0", "pepo/weight/p100", "pepo/entropy/p40", "pepo/time_share", "pepo/time_s"} <= logs
    if trainer.args.weighting in ("pepo", "perception"):
        assert "pepo/visual_similarity" in logs
    if trainer.args.dynamic_sampling:
        assert "dynamic_sampling/frac_groups_dropped" in logs
    if trainer.args.perception_aware != "none":
        assert "perception_aware/forward_s" in logs
        assert ("papo/kl_prcp" if trainer.args.perception_aware == "papo" else "vppo/adv_scale/mean") in logs


@pytest.mark.slow
def test_pepo_train_command_saves_a_model(tmp_path, capsys):
    path = next(p for p in RECIPES if p.stem == "pepo_g_tiny")
    argv = ["--config", str(path), "--model_name_or_path", "embedded", "--output_dir", str(tmp_path), "--max_steps", "1", "--max_train_samples", "4",
            "--reward_funcs", "test_length", "--max_completion_length", "4", "--disable_tqdm", "true",
            "--report_to", "tensorboard",
            "--per_device_train_batch_size", "4", "--num_generations", "4"]  # one prompt a step: 4 records suffice
    assert main(argv) == 0
    assert (tmp_path / "model.safetensors").is_file() or any(tmp_path.glob("*.safetensors"))
    # with the recipe's save_strategy 'no' too: the log history `pepo analyze --runs` reads, and where the model went
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 1
    out = capsys.readouterr().out.splitlines()
    start = out.index(f"pepo train: model and trainer_state.json in {tmp_path.resolve()}")
    # where TensorBoard's event files went, and the held-out split matching the embedded training data
    events = next(tmp_path.glob("runs/*/events.out.tfevents.*")).parent.resolve()
    assert out[start + 1] == f"  TensorBoard event files in {events} (tensorboard --logdir {events})"
    test_split = tmp_path / "embedded_data" / "test.jsonl"
    assert out[start + 2].startswith(f"  next: pepo eval --model {tmp_path.resolve()} --data {test_split}; ")
    assert test_split.is_file()


def test_freeze_vision_tower_and_projector(make_trainer):
    tower_only = make_trainer(freeze_vision_tower=True)
    visual = tower_only.model.model.visual
    assert not any(p.requires_grad for n, p in visual.named_parameters() if not n.startswith("merger."))
    assert all(p.requires_grad for p in visual.merger.parameters())
    assert all(p.requires_grad for p in tower_only.model.model.language_model.parameters())
    both = make_trainer(freeze_vision_tower=True, freeze_projector=True)
    assert not any(p.requires_grad for p in both.model.model.visual.parameters())


@pytest.mark.slow
def test_lora_through_peft_config(make_trainer):
    peft = pytest.importorskip("peft")
    from pepo.trainer.capture import language_model_of

    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = make_trainer(weighting="pepo", schedule="constant", max_steps=2)
    trainer = type(trainer)(model=trainer.model, reward_funcs=trainer.reward_funcs, args=trainer.args,
                            train_dataset=trainer.train_dataset, processing_class=trainer.processing_class,
                            peft_config=lora)
    assert peft.PeftModel in type(trainer.model).__mro__
    assert language_model_of(trainer.model) is trainer.model.get_base_model().model.language_model
    adapters = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    logs = {k for entry in trainer.state.log_history for k in entry}
    assert "pepo/visual_similarity" in logs  # hidden states were captured through the PEFT wrapper
    assert any(not torch.equal(p, adapters[n]) for n, p in trainer.model.named_parameters() if n in adapters)
