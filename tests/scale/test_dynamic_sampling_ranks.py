"""DAPO dynamic sampling across 2 processes (PEPO_D and DAPO): refilled batches have the same size
on every process, groups are whole, the refill is logged, and training equals one process with the
same global batch and prompts.

The red and the green prompt get a constant reward (``replay.constant_for_red_and_green``), so their
groups are dropped and refilled. Completions are fixed per prompt (``replay``), ``loss_type="dapo"``
(normalised by the global token count) and SGD with a constant learning rate, as in
test_multiprocess.py: per step 2 prompts x 4 completions, as 2 processes x 4 rows or 1 x 8.
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
from .test_multiprocess import GLOO_CONFIG, METRIC_ATOL, METRIC_RTOL, PARAM_ATOL, free_port
from .test_sharded import assert_signals_match

ROOT = Path(__file__).resolve().parents[2]
WEIGHTINGS = ("pepo", "none")  # PEPO_D, DAPO
# logged only by a run with several processes: where groups had to go
PER_RUN_KEYS = ("dynamic_sampling/groups_moved",)


@pytest.fixture(scope="module")
def two_processes(tiny_vlm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamic_two")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(GLOO_CONFIG),
           "--main_process_port", str(free_port()), str(Path(replay.__file__)), "--model", str(tiny_vlm_path),
           "--out", str(out), "--per_device_train_batch_size", "4", "--constant_lr", "--dynamic_sampling", *WEIGHTINGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {w: ([json.loads((out / w / f"rank{r}.json").read_text()) for r in range(2)],
                load_file(str(out / w / "params.safetensors"))) for w in WEIGHTINGS}


@pytest.fixture(scope="module")
def one_process(tiny_vlm_path, tmp_path_factory):
    return {w: replay.run(tiny_vlm_path, tmp_path_factory.mktemp(f"dynamic_one_{w}"), per_device_train_batch_size=8,
                          lr_scheduler_type="constant", **replay.dynamic_sampling_overrides(w)) for w in WEIGHTINGS}


@pytest.mark.slow
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_refilled_batches_are_whole_groups_of_the_same_size_on_every_rank(two_processes, weighting):
    ranks, _ = two_processes[weighting]
    for r in ranks:
        assert len(r["dynamic_batches"]) == 2
        for batch in r["dynamic_batches"]:
            assert len(batch) == 4  # per_device_train_batch_size, after refilling
            images = {image for image, _ in batch}
            assert len(images) == 1, "the rows of one group come from one prompt"
            assert max(abs(a) for _, a in batch) > 0, "a kept group carries signal"
    logs = ranks[0]["logs"]
    assert logs == ranks[1]["logs"]
    refills = [e["dynamic_sampling/refill_prompts"] for e in logs if "dynamic_sampling/refill_prompts" in e]
    rounds = [e["dynamic_sampling/rounds"] for e in logs if "dynamic_sampling/rounds" in e]
    assert sum(refills) > 0 and refills == [2 * r for r in rounds]
    # a refill left one process with two informative groups and the other with none: one group moved
    assert sum(e.get("dynamic_sampling/groups_moved", 0) for e in logs) > 0


@pytest.mark.slow
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_dynamic_sampling_on_two_ranks_equals_one_process(two_processes, one_process, weighting, tiny_vlm_path):
    from pepo.modeling import load_model_and_processor

    ranks, params = two_processes[weighting]
    single = one_process[weighting]
    # the same groups were trained on: the union of both ranks' rows is the single process's batch
    for step, batch in enumerate(single["dynamic_batches"]):
        two, one = sorted(row for r in ranks for row in r["dynamic_batches"][step]), sorted(batch)
        assert [image for image, _ in two] == [image for image, _ in one]
        torch.testing.assert_close(torch.tensor([a for _, a in two]), torch.tensor([a for _, a in one]))
    if weighting == "pepo":
        assert_signals_match(ranks, single, steps={1, 2})
    for two, one in zip(ranks[0]["logs"], single["logs"], strict=True):
        assert two.keys() == one.keys()
        for key, value in one.items():
            if key not in PER_RUN_KEYS:
                assert two[key] == pytest.approx(value, rel=METRIC_RTOL, abs=METRIC_ATOL), key
    initial = dict(load_model_and_processor(tiny_vlm_path)[0].named_parameters())
    moved = max((single["params"][n] - initial[n]).abs().max().item() for n in params)
    differ = max((single["params"][n] - params[n]).abs().max().item() for n in params)
    assert moved > 1e-3 and differ < PARAM_ATOL, (moved, differ)
