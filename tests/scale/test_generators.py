"""The PEPO path does not depend on which engine generated the completions (vLLM colocate / server,
transformers ``generate``): given the same completion ids it trains to the same weights.

vLLM is not installed on pepo's CI machines (and needs a GPU), so the vLLM side is stood in for by
what it hands TRL: token-id lists from ``_generate_single_turn`` (``replay.install_replay``). A run
that samples with transformers records its completion ids; a second run from the same weights
replays them without generating; the two must agree to float32 round-off.

Measured (2 CPU cores, torch 2.13): step 1 usually bit-identical; step 2 differs by at most 4.8e-7 in the
logged metrics and 7.5e-9 in the parameters (which moved by ~3e-2); something in ``generate`` changes
float summation order afterwards. A generator-dependent PEPO path would differ by orders more.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from . import replay


def trainer_for(model_path, output_dir, **overrides):
    from pepo.modeling import load_model_and_processor
    from pepo.trainer import PEPOTrainer

    model, processor = load_model_and_processor(model_path)
    return PEPOTrainer(model=model, reward_funcs=[replay.length_reward], processing_class=processor,
                       train_dataset=replay.image_dataset(), args=replay.config(output_dir, 8, **overrides))


def logs_without_timing(trainer) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in replay.TIMING_KEYS} for e in trainer.state.log_history]


@pytest.mark.slow
def test_replayed_completions_train_exactly_like_generated_ones(tiny_vlm_path, tmp_path):
    generated = trainer_for(tiny_vlm_path, tmp_path / "generated")
    sample = generated._generate_single_turn
    recorded = []

    def recording(*args, **kwargs):
        ids, logprobs = sample(*args, **kwargs)
        recorded.append([list(map(int, row)) for row in ids])
        return ids, logprobs

    generated._generate_single_turn = recording
    generated.train()

    replayed = trainer_for(tiny_vlm_path, tmp_path / "replayed")
    served = replay.install_replay(replayed, completions_by_row=recorded)
    replayed.train()

    assert len(recorded) == 2 and served == recorded
    assert len({tuple(row) for row in recorded[0]}) > 1, "sampling gave one completion: a vacuous comparison"
    logs, replayed_logs = logs_without_timing(generated), logs_without_timing(replayed)
    assert "pepo/visual_similarity" in logs[0] and "pepo/weight/p100" in logs[0]
    for one, other in zip(logs, replayed_logs, strict=True):
        assert one.keys() == other.keys()
        for key, value in one.items():
            assert other[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    before = dict(trainer_for(tiny_vlm_path, tmp_path / "initial").model.named_parameters())
    after = dict(generated.model.named_parameters())
    moved = max((after[n] - before[n]).abs().max().item() for n in after)
    differ = max((p - after[n]).abs().max().item() for n, p in replayed.model.named_parameters())
    assert moved > 1e-3 and differ < 1e-6, (moved, differ)


def test_vllm_fields_pass_through_pepo_config(tmp_path):
    from pepo.trainer import PEPOConfig

    args = PEPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], use_vllm=True,
                      vllm_mode="server", vllm_server_base_url="http://10.0.0.2:8000", weighting="pepo")
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://10.0.0.2:8000")
    colocate = PEPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], use_vllm=True,
                          vllm_mode="colocate", vllm_gpu_memory_utilization=0.6, vllm_max_model_length=2048)
    assert (colocate.vllm_gpu_memory_utilization, colocate.vllm_max_model_length) == (0.6, 2048)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_is_a_clear_error(tiny_vlm_path, tmp_path):
    with pytest.raises(ImportError, match="(?i)vllm"):
        trainer_for(tiny_vlm_path, tmp_path, use_vllm=True, vllm_mode="colocate")
