"""A shipped tiny recipe as a user runs it: it does not lower the held-out score of the model it
starts from; from the embedded warm start it earns reward and moves the weights, leaves
trainer_state.json, chains into `pepo eval` and `pepo analyze`, and a resume after the last step
trains nothing more.

The warm start is built by the code path `model_name_or_path: embedded_warm_start` uses
(pepo.demo.prepare through pepo.train.embedded_warm_start), with smaller settings than the
recipe's so the suite stays short: 30 supervised steps, enough for the answer format.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pepo.train
from pepo.cli import main as pepo_main

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pepo_g_tiny.yaml"


def small_settings():
    from pepo.demo import QUICK

    return replace(QUICK, n_train=320, n_val=16, n_test=16, sft_max_steps=30, sft_eval_every=30, eval_samples=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`pepo train --config recipes/pepo_g_tiny.yaml` for 10 steps from the (small) embedded warm start."""
    cache = tmp_path_factory.mktemp("pepo_cache")
    out = tmp_path_factory.mktemp("run") / "pepo_g_tiny"
    patch = pytest.MonkeyPatch()
    patch.setattr(pepo.train, "warm_start_settings", lambda: {"quick": small_settings()})
    argv = ["train", "--config", str(RECIPE), "--warm_start", "quick", "--embedded_cache", str(cache),
            "--output_dir", str(out), "--max_steps", "10", "--save_strategy", "steps", "--save_steps", "5",
            "--disable_tqdm", "true", "--eval_after_train", "none",
            "--per_device_train_batch_size", "64", "--max_train_samples", "128"]  # 8 prompts a step: what the code does
    try:
        assert pepo_main(argv) == 0
        start = next(cache.glob("warm_start-quick-seed0-*")) / "warm_start" / "checkpoint"
        yield {"out": out, "argv": argv, "start": start, "data": start.parents[1] / "data", "patch": patch}
    finally:
        patch.undo()


@pytest.mark.slow
@pytest.mark.recipe_gain
def test_tiny_recipe_as_shipped_lifts_the_held_out_score_beyond_two_standard_errors(tmp_path, capsys):
    """`pepo train --config pepo_g_tiny` exactly as shipped (its 200 steps of 32 prompts x 8 samples, from
    the demo warm start it names, built here into a fresh cache: minutes), then its own
    eval_after_train: avg@8 on the 256 held-out test questions, before and after, must rise by more than
    2 paired standard errors (the figures on this repository's machine: benchmarks/results/tiny_recipes/
    search.md, phase confirm). The 16-step recipes before a56474d lifted nothing measurable."""
    out = tmp_path / "pepo_g_tiny"
    assert pepo_main(["train", "--config", str(RECIPE), "--embedded_cache", str(tmp_path / "cache"),
                      "--output_dir", str(out), "--disable_tqdm", "true"]) == 0
    held_out = json.loads((out / "held_out_test.json").read_text())
    assert held_out["questions"] == 256 and held_out["samples"] == 8
    assert held_out["lift"] > 2 * held_out["paired_se"], {k: v for k, v in held_out.items() if k != "per_question"}
    assert "lift +" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_recipe_settings_do_not_lower_the_held_out_score(tmp_path, capsys):
    """pepo_g_tiny as shipped (learning rate, 32 prompts x 8 samples a step, loss, frozen vision tower;
    eval_after_train: test) for 16 of its 200 steps, from `--warm_start quick`, the start CI can build in a minute: avg@8 on 256
    held-out test questions, before and after, by pepo eval's code (held_out_test.json), must not fall
    beyond 2 paired SE. The shipped run (200 steps of 32 prompts from the 'demo' warm start, minutes
    to build) lifts the score beyond 2 SE: benchmarks/tiny_recipe_search.py's confirm phase,
    benchmarks/results/tiny_recipes/search.md; from the quick start, a lift is not measurable in
    the minutes CI affords. The recipe of eee52b0 (learning rate 5e-4, one prompt of 4
    samples a step, vision tower trained) fails this test."""
    out = tmp_path / "pepo_g_tiny"
    assert pepo_main(["train", "--config", str(RECIPE), "--warm_start", "quick", "--embedded_cache",
                      str(tmp_path / "cache"), "--output_dir", str(out), "--disable_tqdm", "true",
                      "--max_steps", "16", "--max_train_samples", "512"]) == 0
    held_out = json.loads((out / "held_out_test.json").read_text())
    assert held_out["questions"] == 256 and held_out["samples"] == 8
    assert held_out["lift"] > -2 * held_out["paired_se"], {k: v for k, v in held_out.items() if k != "per_question"}
    printed = capsys.readouterr().out
    assert "train reward" in printed and f"held-out avg@8: {held_out['avg_after']:.1f} after training" in printed


@pytest.mark.slow
def test_tiny_recipe_from_the_warm_start_earns_reward_and_moves_the_weights(trained, capsys):
    state = json.loads((trained["out"] / "trainer_state.json").read_text())
    rewards = [row["reward"] for row in state["log_history"] if "reward" in row]
    assert state["global_step"] == 10 and len(rewards) == 10
    assert sum(rewards) / len(rewards) > 0.0  # the random tiny model earns 0 at every step
    before, after = load_file(trained["start"] / "model.safetensors"), load_file(trained["out"] / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_resume_after_the_last_step_trains_nothing_more(trained, capsys):
    out = trained["out"]
    model_bytes = (out / "model.safetensors").read_bytes()
    assert pepo_main([*trained["argv"], "--resume_from_checkpoint", "true"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint-10 is at step 10 = max_steps 10: nothing to train" in printed and str(out.resolve()) in printed
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 10
    assert (out / "model.safetensors").read_bytes() == model_bytes
    assert not (out / "checkpoint-11").exists()


@pytest.mark.slow
def test_train_then_eval_then_analyze(trained, tmp_path):
    out, test = trained["out"], trained["data"] / "test.jsonl"
    results = tmp_path / "results.json"
    assert pepo_main(["eval", "--model", str(out), "--benchmark", "geometry3k", "--data", str(test), "--n", "2",
                      "--max-new-tokens", "16", "--limit", "4", "--out", str(results), "--no-progress"]) == 0
    assert json.loads(results.read_text())
    analysis = tmp_path / "analysis"
    assert pepo_main(["analyze", "--model", str(out), "--data", str(test), "--n", "2", "--limit", "4",
                      "--max-new-tokens", "16", "--top-k", "3", "--runs", str(out), "--out", str(analysis),
                      "--no-progress"]) == 0
    # Figure 6 from the run's trainer_state.json: its 10 logged rewards, under the run's folder name
    rows = (analysis / "fig6_dynamics.csv").read_text().splitlines()
    assert sum(",reward," in row and row.startswith("pepo_g_tiny,") for row in rows) == 10
    assert (analysis / "fig6_dynamics.png").is_file() and (analysis / "responses.html").is_file()
