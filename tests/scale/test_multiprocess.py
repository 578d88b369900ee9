"""Two processes (torch.distributed over gloo, launched by `accelerate launch`) train exactly like
one process with the same global batch, and PEPO's logged metrics are gathered over both ranks.

Both runs see the same prompts (TRL's seeded ``RepeatSampler``; accelerate hands each rank every other
batch) and the same completions (fixed by ``replay.install_replay``: sampling on two processes
would use two RNG streams). Per optimiser step: 2 prompts x 4 completions = 8 rows, as 2 ranks x 4
or 1 process x 8. ``loss_type="grpo"`` (mean over each sequence, then over sequences) makes DDP's
gradient average equal the single-process mean; SGD makes the parameter change lr x gradient.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from . import replay

ROOT = Path(__file__).resolve().parents[2]
GLOO_CONFIG = ROOT / "recipes" / "accelerate" / "cpu_2proc_gloo.yaml"
# float32 sums in another order: observed differences are ~1e-8 on parameters that move by ~3e-2
PARAM_ATOL = 1e-6
METRIC_RTOL, METRIC_ATOL = 1e-5, 1e-6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tiny_vlm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(GLOO_CONFIG),
           "--main_process_port", str(free_port()), str(Path(replay.__file__)),
           "--model", str(tiny_vlm_path), "--out", str(out), "--per_device_train_batch_size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, load_file(str(out / "params.safetensors"))


@pytest.fixture(scope="module")
def one_process_run(tiny_vlm_path, tmp_path_factory):
    return replay.run(tiny_vlm_path, tmp_path_factory.mktemp("one_process"), per_device_train_batch_size=8)


@pytest.mark.slow
def test_two_gloo_processes_split_the_batch(two_process_run, one_process_run):
    ranks, _ = two_process_run
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["backend"] == "gloo" and r["device"].startswith("cpu") for r in ranks)
    # each rank got half of every step's rows; together they are the single run's rows, in order
    for step, single in enumerate(one_process_run["completion_ids"]):
        halves = [r["completion_ids"][step] for r in ranks]
        assert halves[0] != halves[1] and halves[0] + halves[1] == single


@pytest.mark.slow
def test_pepo_metrics_are_gathered_over_ranks(two_process_run, one_process_run):
    ranks, _ = two_process_run
    # every gathered metric: this rank's valid tokens < all ranks' == the single process's
    for r in ranks:
        for (local, gathered), (single_local, single_gathered) in zip(r["gather_counts"], one_process_run["gather_counts"]):
            assert 0 < local < gathered == single_local == single_gathered
    assert ranks[0]["gather_counts"] != [] and len(ranks[0]["gather_counts"]) == len(one_process_run["gather_counts"])
    # so the logged percentiles and mean similarity are the same on both ranks and equal the single run's
    logs = [r["logs"] for r in ranks]
    assert logs[0] == logs[1]
    keys = [k for k in one_process_run["logs"][0] if k.startswith("pepo/")]
    assert {"pepo/visual_similarity", "pepo/weight/p0", "pepo/weight/p100", "pepo/entropy/p40"} <= set(keys)
    for two, one in zip(logs[0], one_process_run["logs"], strict=True):
        assert two.keys() == one.keys()
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=METRIC_RTOL, abs=METRIC_ATOL), key


@pytest.mark.slow
def test_two_processes_train_like_one(two_process_run, one_process_run, tiny_vlm_path):
    from pepo.modeling import load_model_and_processor

    _, two = two_process_run
    one = one_process_run["params"]
    initial = dict(load_model_and_processor(tiny_vlm_path)[0].named_parameters())
    assert two.keys() == one.keys()
    moved = max((one[n] - initial[n]).abs().max().item() for n in one)
    differ = max((one[n] - two[n]).abs().max().item() for n in one)
    assert moved > 1e-3, "the parameters hardly moved: the comparison would say nothing"
    assert differ < PARAM_ATOL, f"2 processes vs 1: max parameter difference {differ:.2e} (moved {moved:.2e})"
    grad_norms = [e["grad_norm"] for e in one_process_run["logs"] if "grad_norm" in e]
    assert len(grad_norms) == 2 and all(g > 0 for g in grad_norms)


@pytest.mark.slow
def test_two_process_pepo_train_builds_the_embedded_model_and_data_once(tmp_path):
    # `model_name_or_path: embedded` / `train_file: embedded` from an empty output_dir: the main
    # process writes the tiny model and the synthetic data while the other waits for it (before
    # main_process_first both wrote at once and one read a half-written train.jsonl).
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(GLOO_CONFIG),
           "--main_process_port", str(free_port()), "-m", "pepo", "train",
           "--config", str(ROOT / "recipes" / "pepo_g_tiny.yaml"), "--model_name_or_path", "embedded",
           "--output_dir", str(out),
           "--max_steps", "1", "--disable_tqdm", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (out / "embedded_data" / "train.jsonl").read_text().splitlines()
    recipe = yaml.safe_load((ROOT / "recipes" / "pepo_g_tiny.yaml").read_text())
    assert len(lines) == recipe["max_train_samples"] and all(json.loads(line)["solution"] for line in lines)
    assert (out / "model.safetensors").is_file()
