"""Sharded training on CPU: FSDP2 (``fully_shard``) and DeepSpeed ZeRO-2 in 2 gloo processes
train exactly like one process with the same global batch, and an FSDP2 run killed after a sharded
checkpoint resumes to the uninterrupted result.

Launched with ``accelerate launch`` and the shipped configs (``recipes/accelerate/fsdp2_cpu_2proc.yaml``,
``deepspeed_zero2_cpu_2proc.yaml``). accelerate 1.15 turns a CPU multi-process run into DDP whatever
the config says; ``pepo.trainer.cpu_sharding.allow_sharding_on_cpu`` (what ``pepo train`` calls,
and what ``replay.py`` calls) restores the requested engine, so from there on the model is prepared
by accelerate's own ``fsdp2_prepare_model`` / ``deepspeed.initialize``. The tests check that it
really is sharded (DTensor parameters, a ``DeepSpeedEngine``), not DDP.

Same set-up as test_multiprocess.py: fixed completions (``replay``), ``loss_type="grpo"``, SGD,
and here a constant learning rate, so that the first 2 steps of a 3-step run are a 2-step run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from . import replay
from .test_multiprocess import METRIC_ATOL, METRIC_RTOL, PARAM_ATOL, free_port

ROOT = Path(__file__).resolve().parents[2]
FSDP2_CONFIG = ROOT / "recipes" / "accelerate" / "fsdp2_cpu_2proc.yaml"
ZERO2_CONFIG = ROOT / "recipes" / "accelerate" / "deepspeed_zero2_cpu_2proc.yaml"
# perception prior and weights of a row: the same forward on 4 rows instead of 8 (observed ~1e-7)
SIGNAL_ATOL = 1e-5


def launch(config: Path, tiny_vlm_path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(free_port()), str(Path(replay.__file__)),
           "--model", str(tiny_vlm_path), "--out", str(out), "--per_device_train_batch_size", "4",
           "--constant_lr", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def results(out: Path) -> tuple[list[dict], dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], load_file(str(out / "params.safetensors"))


@pytest.fixture(scope="module")
def one_process(tiny_vlm_path, tmp_path_factory):
    """3 steps in one process with the whole global batch; parameters after step 2 and 3."""
    return replay.run(tiny_vlm_path, tmp_path_factory.mktemp("one_process"), per_device_train_batch_size=8,
                      max_steps=3, lr_scheduler_type="constant", snapshot_steps=(2,))


@pytest.fixture(scope="module")
def fsdp_killed(tiny_vlm_path, tmp_path_factory):
    """FSDP2, 2 processes, 3 steps planned, a sharded checkpoint at step 2, then SIGKILL."""
    out = tmp_path_factory.mktemp("fsdp_killed")
    proc = launch(FSDP2_CONFIG, tiny_vlm_path, out, "--max_steps", "3", "--save_steps", "2", "--kill_after_step", "2")
    assert proc.returncode != 0, "the run was meant to be killed after its step-2 checkpoint"
    assert (out / "rank0.json").is_file() and (out / "rank1.json").is_file(), proc.stderr[-4000:]
    return out, *results(out)


@pytest.fixture(scope="module")
def fsdp_resumed(tiny_vlm_path, tmp_path_factory, fsdp_killed):
    killed_out = fsdp_killed[0]
    out = tmp_path_factory.mktemp("fsdp_resumed")
    proc = launch(FSDP2_CONFIG, tiny_vlm_path, out, "--max_steps", "3", "--save_steps", "2",
                  "--resume_from_checkpoint", str(killed_out / "trainer" / "checkpoint-2"), "--save_final")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return (*results(out), out / "final")


def assert_signals_match(ranks: list[dict], single: dict, steps: set[int]) -> None:
    """Every row's perception prior and weights on 2 processes equal the single process's, row for row."""
    two = {key: (prior, weights) for r in ranks for key, prior, weights in r["signals"]}
    one = {key: (prior, weights) for key, prior, weights in single["signals"] if int(key.split("/")[0]) in steps}
    assert len(one) == 8 * len(steps) and two.keys() == one.keys()
    for r in ranks:  # each rank holds half of every step's rows
        assert len(r["signals"]) == 4 * len({int(k.split("/")[0]) for k, _, _ in r["signals"]})
    for key, (prior, weights) in one.items():
        torch.testing.assert_close(torch.tensor(two[key][0]), torch.tensor(prior), rtol=0, atol=SIGNAL_ATOL)
        torch.testing.assert_close(torch.tensor(two[key][1]), torch.tensor(weights), rtol=0, atol=SIGNAL_ATOL)


def assert_params_match(two: dict, one: dict, initial: dict) -> None:
    assert two.keys() == one.keys()
    moved = max((one[n] - initial[n]).abs().max().item() for n in one)
    differ = max((one[n] - two[n]).abs().max().item() for n in one)
    assert moved > 1e-3, "the parameters hardly moved: the comparison would say nothing"
    assert differ < PARAM_ATOL, f"2 processes vs 1: max parameter difference {differ:.2e} (moved {moved:.2e})"


def assert_logs_match(two_logs: list[dict], one_logs: list[dict]) -> None:
    assert len(two_logs) == len(one_logs) > 0
    for two, one in zip(two_logs, one_logs):
        assert two.keys() == one.keys()
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=METRIC_RTOL, abs=METRIC_ATOL), key


@pytest.fixture(scope="module")
def initial_params(tiny_vlm_path):
    from pepo.modeling import load_model_and_processor

    return {n: p.detach().clone() for n, p in load_model_and_processor(tiny_vlm_path)[0].named_parameters()}


@pytest.mark.slow
def test_fsdp2_shards_the_model_and_the_hooks_fire_on_it(fsdp_killed, tiny_vlm_path):
    _, ranks, _ = fsdp_killed
    layers = json.loads((Path(tiny_vlm_path) / "config.json").read_text())["text_config"]["num_hidden_layers"]
    for r in ranks:
        assert (r["world_size"], r["backend"], r["distributed_type"]) == (2, "gloo", "DistributedType.FSDP")
        assert r["device"].startswith("cpu") and r["wrapper"].startswith("FSDP")  # fully_shard's class, not DDP
        assert r["language_model_sharded"], "the language model's parameters are not DTensor shards"
        # one policy forward per step and micro-batch; the hooks saw the L + 1 hidden states each time
        assert r["hidden_states_per_forward"] == [layers + 1] * 2


@pytest.mark.slow
def test_fsdp2_perception_weights_and_parameters_equal_one_process(fsdp_killed, one_process, initial_params):
    _, ranks, params_at_kill = fsdp_killed
    assert_signals_match(ranks, one_process, steps={1, 2})
    assert_params_match(params_at_kill, one_process["snapshots"][2], initial_params)
    assert ranks[0]["logs"] == ranks[1]["logs"]
    assert_logs_match(ranks[0]["logs"], one_process["logs"][:2])


@pytest.mark.slow
def test_fsdp2_sharded_checkpoint_kill_and_resume_match_an_uninterrupted_run(
        fsdp_killed, fsdp_resumed, one_process, initial_params):
    out, _, _ = fsdp_killed
    checkpoint = out / "trainer" / "checkpoint-2"
    # sharded: torch.distributed.checkpoint, one file of model and of optimizer state per process
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (checkpoint / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"], part
    assert not (out / "trainer" / "checkpoint-3").exists()
    ranks, params, _ = fsdp_resumed
    assert_params_match(params, one_process["params"], initial_params)  # 3 uninterrupted steps
    assert_signals_match(ranks, one_process, steps={3})
    resumed_logs = [e for e in ranks[0]["logs"] if e.get("step", 3) == 3 and "loss" in e]
    assert_logs_match(resumed_logs, [e for e in one_process["logs"] if "loss" in e][2:3])


@pytest.mark.slow
def test_fsdp2_save_model_writes_the_whole_model(fsdp_resumed):
    """transformers' save_model writes nothing under a sharded FSDP state dict; PEPOTrainer gathers it."""
    from pepo.modeling import load_model_and_processor

    _, params, final = fsdp_resumed
    model, processor = load_model_and_processor(final)
    saved = dict(model.named_parameters())
    assert saved.keys() == params.keys() and type(processor).__name__ == "QwenVLImageTextProcessor"
    for name, value in params.items():
        assert torch.equal(saved[name], value), name


@pytest.mark.slow
def test_deepspeed_zero2_trains_like_one_process(tiny_vlm_path, tmp_path, one_process, initial_params):
    pytest.importorskip("deepspeed", reason="DeepSpeed not installed: pip install 'pepo[deepspeed]'")
    proc = launch(ZERO2_CONFIG, tiny_vlm_path, tmp_path, "--max_steps", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks, params = results(tmp_path)
    for r in ranks:
        assert (r["world_size"], r["backend"], r["distributed_type"]) == (2, "gloo", "DistributedType.DEEPSPEED")
        assert r["wrapper"] == "DeepSpeedEngine"
    assert_signals_match(ranks, one_process, steps={1, 2})
    assert_params_match(params, one_process["snapshots"][2], initial_params)
    assert_logs_match([e for e in ranks[0]["logs"] if "loss" in e], [e for e in one_process["logs"] if "loss" in e][:2])
