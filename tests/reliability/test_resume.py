"""Faults: a training run or an evaluation killed with SIGKILL resumes to the uninterrupted result;
same seed, same run.

Why bit-identical on CPU: the resumed process restores the weights, AdamW state, LR schedule,
global step (so the progressive lambda) and the python / numpy / torch RNG states that transformers
saved with the checkpoint, and TRL's sampler replays the same prompt order from the seed. The CPU
kernels are deterministic for a fixed thread count, so every later step redoes the same floating
point operations in the same order. What cannot be bit-identical, and is therefore not claimed:
runs on another thread count, machine or library version, and GPU runs with non-deterministic
kernels (atomics in scatter / attention backward); there only closeness holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pepo.trainer.cli import resume_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ENTRY = Path(__file__).with_name("train_entry.py")
MAX_STEPS = 3
TRAIN_ARGS = [
    "--config", str(ROOT / "recipes/pepo_g_tiny.yaml"), "--model_name_or_path", "embedded",  # random init: seconds
    "--max_steps", str(MAX_STEPS), "--save_strategy", "steps",
    "--save_steps", "1", "--max_train_samples", "8", "--max_completion_length", "6", "--disable_tqdm", "true",
    "--reward_funcs", "test_length", "--activation_checkpointing", "false",
    # one prompt x 4 samples a step (the tiny recipes take 32 x 8): a short run inside the first epoch; a
    # resume in a later epoch: test_a_run_resumed_in_a_later_epoch_trains_that_epochs_prompts
    "--per_device_train_batch_size", "4", "--num_generations", "4",
]
# timings and throughput differ between runs by nature; every other logged value must match
TIMING_KEYS = ("step_time", "pepo/time_s", "pepo/time_share", "train_runtime", "train_samples_per_second",
               "train_steps_per_second")


def _train(output_dir: Path, *extra: str) -> subprocess.Popen:
    # the test process's own pepo first (e.g. PYTHONPATH=src of a worktree), then the repository root for tests/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p))
    return subprocess.Popen([sys.executable, str(ENTRY), *TRAIN_ARGS, "--output_dir", str(output_dir), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"run ended before the kill point:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.02)


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def _history(run: Path) -> list[dict]:
    state = json.loads((run / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    return [{k: v for k, v in entry.items() if k not in TIMING_KEYS} for entry in state["log_history"]]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # tolerance 0: see the module docstring


@pytest.mark.slow
def test_training_killed_between_checkpoints_resumes_to_the_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = _train(full)  # the uninterrupted run, alongside (2 cores)
    victim = _train(killed)
    _wait_for(lambda: _complete(killed / "checkpoint-1"), victim)  # then killed during step 2 or its save
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / f"checkpoint-{MAX_STEPS}").exists() and not (killed / "model.safetensors").exists()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    # Same seed, two processes: the same checkpoints up to the kill (the seed row of the catalogue).
    _assert_same_weights(_weights(full / "checkpoint-1"), _weights(killed / "checkpoint-1"))

    # Resume from the newest complete checkpoint (a half-written checkpoint-3 would be skipped).
    resumed = _train(killed, "--resume_from_checkpoint", "true")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    resumed_from = int(json.loads((killed / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
                       ["log_history"][0]["step"])
    assert resumed_from == 1  # the history was carried over from the checkpoint, not restarted

    history = _history(killed)
    assert history == _history(full)  # loss, rewards, grad norm, PEPO weights/entropy percentiles ...
    # lambda continued from the restored global step: step s logs lambda = (s - 1) / max_steps
    steps = [entry for entry in history if "pepo/lambda" in entry]
    assert [(e["step"], e["pepo/lambda"]) for e in steps] == [(s, (s - 1) / MAX_STEPS) for s in range(1, MAX_STEPS + 1)]
    _assert_same_weights(_weights(full), _weights(killed))
    # and training did move the weights after the resume point (the comparison is not vacuous)
    last = _weights(full)
    assert any(not torch.equal(last[k], v) for k, v in _weights(full / "checkpoint-1").items())


def _checkpoint(folder: Path, step: int, state: str | None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    assert resume_checkpoint(None, tmp_path) is None and resume_checkpoint("false", tmp_path) is None
    with pytest.raises(ValueError, match="no complete checkpoint-N folder in"):
        resume_checkpoint("true", tmp_path)
    good = _checkpoint(tmp_path, 2, '{"global_step": 2}')
    _checkpoint(tmp_path, 10, '{"global_step": 10}')  # numeric, not lexical, order
    cut = _checkpoint(tmp_path, 11, '{"global_st')  # killed while writing the state
    _checkpoint(tmp_path, 12, None)  # killed before the state
    with pytest.warns(UserWarning, match="checkpoint-11: incomplete checkpoint"):
        assert resume_checkpoint("true", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resume_checkpoint(str(good), tmp_path) == str(good)
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        resume_checkpoint(str(cut), tmp_path)


def test_resume_restores_the_weights_and_loads_no_pickle(make_trainer, tmp_path, monkeypatch):
    """transformers' own resume feeds the saved (original-format) keys to load_state_dict(strict=False)
    and silently keeps the initial Qwen2.5-VL weights (transformers #43701); PEPOTrainer's does not.
    Every .pt / .pth the resume reads goes through torch.load(weights_only=True)."""
    trainer = make_trainer(max_steps=1, save_strategy="steps", save_steps=1, weighting="pepo")
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-1"
    assert (checkpoint / "model.safetensors").is_file()
    assert not list(checkpoint.glob("*.bin")) or [p.name for p in checkpoint.glob("*.bin")] == ["training_args.bin"]
    trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    fresh = make_trainer(max_steps=2, save_strategy="no", weighting="pepo")
    assert any(not torch.equal(trained[k], v) for k, v in fresh.model.state_dict().items())
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real_load(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh.train(resume_from_checkpoint=str(checkpoint))  # one more step, from step 1
    assert fresh.state.global_step == 2
    assert calls and all(flag is True for flag in calls)  # optimizer.pt, scheduler.pt, rng_state.pth

    again = make_trainer(max_steps=2, save_strategy="no", weighting="pepo")
    again._load_from_checkpoint(str(checkpoint))
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, trained[name]), name


@pytest.mark.parametrize("resume_at", [2, 3])  # at the epoch boundary, and inside the second epoch
def test_a_run_resumed_in_a_later_epoch_trains_that_epochs_prompts(make_trainer, tmp_path, resume_at):
    """4 records, 2 prompts a step: an epoch is 2 steps. TRL's sampler draws each epoch's prompt order
    from one generator seeded once, so a resumed run (a fresh sampler) replayed epoch 0's order in
    epoch 1 and its weights differed; pepo's sampler reseeds per epoch (``seed + epoch``)."""
    from tests.trainer.conftest import image_dataset

    fields = dict(per_device_train_batch_size=8, num_generations=4, max_steps=4, weighting="pepo")
    dataset = image_dataset(4)
    full = make_trainer(dataset=dataset, save_strategy="steps", save_steps=1, **fields)
    full.train()
    final = {k: v.clone() for k, v in full.model.state_dict().items()}
    checkpoint = tmp_path / "out" / f"checkpoint-{resume_at}"
    resumed = make_trainer(dataset=dataset, save_strategy="no", **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, final[name]), name
