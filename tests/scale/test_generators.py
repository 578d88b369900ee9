"""The PEPO path does not depend on which engine generated the completions (vLLM colocate / server,
transformers ``generate``): given the same completion ids it trains to the same weights.

vLLM is not installed on pepo's CI machines (and needs a GPU), so the vLLM side is stood in for by
what it hands TRL: token-id lists from ``_generate_single_turn`` (``replay.install_replay``). A run
that samples with transformers records its completion ids; a second run from the same weights
replays them without generating; the two must agree to float32 round-off. What pepo itself sends
vLLM (``pepo eval --backend vllm``'s requests) is checked against a stand-in ``vllm`` module.

Measured (2 CPU cores, torch 2.13): step 1 usually bit-identical; step 2 differs by at most 4.8e-7 in the
logged metrics and 7.5e-9 in the parameters (which moved by ~3e-2); something in ``generate`` changes
float summation order afterwards. A generator-dependent PEPO path would differ by orders more.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

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


def test_pepo_config_keeps_trls_vllm_fields(tmp_path):
    # PEPOConfig's own __post_init__ must not reset what TRL's GRPOConfig reads to start vLLM
    from pepo.trainer import PEPOConfig

    args = PEPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], use_vllm=True,
                      vllm_mode="server", vllm_server_base_url="http://10.0.0.2:8000", weighting="pepo")
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://10.0.0.2:8000")
    colocate = PEPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], use_vllm=True,
                          vllm_mode="colocate", vllm_gpu_memory_utilization=0.6, vllm_max_model_length=2048)
    assert (colocate.vllm_gpu_memory_utilization, colocate.vllm_max_model_length) == (0.6, 2048)


class FakeLLM:
    """What ``pepo eval --backend vllm`` hands vLLM, recorded; answers with canned completions."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate(self, requests, sampling_params, use_tqdm):
        self.calls.append((requests, sampling_params))
        out = lambda text: SimpleNamespace(text=text, token_ids=list(range(len(text.split()))))
        return [SimpleNamespace(outputs=[out(text) for text in self.answers[:sampling_params.kwargs["n"]]])
                for _ in requests]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kwargs: SimpleNamespace(kwargs=kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)


def test_the_vllm_request_pepo_eval_builds(fake_vllm, tiny_vlm_path):
    # without vLLM: the prompt text, images and sampling settings pepo sends, and how it reads the answer
    from pepo.data import Record, build_prompt, render_prompt
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_processor

    processor = load_processor(tiny_vlm_path)
    red = Image.new("RGB", (56, 56), (200, 10, 10))
    records = [Record(id=f"q{i}", prompt=build_prompt("<image> What colour is the circle ?", 1), images=[red],
                      solution="red", task="choice") for i in range(3)]
    llm = FakeLLM(["<think> x </think> <answer> red </answer>", "<answer> blue </answer>"])
    result = evaluate_model(llm, processor, records, n=2, temperature=0.7, top_p=0.9, max_new_tokens=12,
                            batch_size=2, backend="vllm", seed=5, progress=False)
    assert [len(requests) for requests, _ in llm.calls] == [2, 1]  # batch_size questions per call
    requests, params = llm.calls[0]
    assert params.kwargs == dict(n=2, temperature=0.7, top_p=0.9, max_tokens=12, seed=5)
    assert requests[0]["prompt"] == render_prompt(processor, records[0].prompt)  # the model's chat template
    assert requests[0]["prompt"].count("<|image_pad|>") == 1  # vLLM expands the image tokens itself
    [image] = requests[0]["multi_modal_data"]["image"]
    assert image.size == (56, 56) and image.getpixel((0, 0)) == (200, 10, 10)
    assert [q["scores"] for q in result.questions] == [[1.0, 0.0]] * 3
    assert result.questions[0]["completion_tokens"] == [6, 3]  # len(token_ids) of each output

    greedy = FakeLLM(["<answer> red </answer>"])
    evaluate_model(greedy, processor, records[:1], n=1, temperature=0.7, top_p=0.9, max_new_tokens=12,
                   backend="vllm", blank_images=True, progress=False)
    requests, params = greedy.calls[0]
    assert (params.kwargs["n"], params.kwargs["temperature"], params.kwargs["top_p"]) == (1, 0.0, 1.0)  # greedy
    assert requests[0]["multi_modal_data"]["image"][0].getpixel((0, 0)) == (245, 245, 245)  # blanked


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_is_a_clear_error(tiny_vlm_path, tmp_path):
    with pytest.raises(ImportError, match="(?i)vllm"):
        trainer_for(tiny_vlm_path, tmp_path, use_vllm=True, vllm_mode="colocate")
