"""pepo.embedded.tiny: the tiny Qwen2.5-VL is a real checkpoint that TRL trains as a VLM."""

from __future__ import annotations

import random

import pytest
import torch

from pepo.embedded import build_tiny_vlm, make_problem, render
from pepo.embedded.synthetic import CHAIN_STYLES, QUESTION_TYPES
from pepo.modeling import load_model_and_processor


def test_build_is_deterministic_in_seed(tmp_path):
    a = build_tiny_vlm(tmp_path / "a", seed=3)
    b = build_tiny_vlm(tmp_path / "b", seed=3)
    c = build_tiny_vlm(tmp_path / "c", seed=4)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    ma, _ = load_model_and_processor(a)
    mb, _ = load_model_and_processor(b)
    mc, _ = load_model_and_processor(c)
    sa, sb, sc = ma.state_dict(), mb.state_dict(), mc.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_model_shape(tiny_vlm_path):
    model, processor = load_model_and_processor(tiny_vlm_path)
    config = model.config
    assert config.text_config.hidden_size == 128 and config.text_config.num_hidden_layers == 2
    assert config.vision_config.depth == 1
    assert config.image_token_id == processor.image_token_id
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    n_params = sum(p.numel() for p in model.parameters())
    assert 2e5 < n_params < 1e6, n_params  # laptop scale: trains in minutes on 2 CPU cores
    # Every word every task variant produces is in the vocabulary (the two-fact questions are not
    # in the tokenizer's training sample: pepo.embedded.synthetic.corpus).
    rng = random.Random(0)
    for i in range(400):
        problem = make_problem(rng, qtypes=QUESTION_TYPES, chain=CHAIN_STYLES[i % 2])
        ids = processor.tokenizer(problem.question + " " + problem.chain)["input_ids"]
        assert processor.tokenizer.unk_token_id not in ids, problem


@pytest.mark.slow
def test_trl_grpo_trains_it_as_a_vlm(tiny_vlm_path, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, processor = load_model_and_processor(tiny_vlm_path)
    rng = random.Random(0)
    rows = []
    for _ in range(8):
        problem = make_problem(rng)
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": problem.question}]}]
        rows.append({"prompt": prompt, "image": render(problem), "solution": problem.answer})

    def contains_solution(completions, solution, **kwargs):
        # Plus a small length term: an untrained model rarely says the answer, and a group whose
        # rewards are all equal has zero advantage (no gradient), which would make this test
        # depend on sampling luck rather than on whether gradients reach both towers.
        return [float(sol in c[0]["content"]) + 0.01 * len(c[0]["content"]) for c, sol in zip(completions, solution)]

    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
        max_steps=2, learning_rate=1e-2, use_cpu=True, bf16=False, gradient_checkpointing=False,
        report_to=[], save_strategy="no", seed=0,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    vision_calls = []
    model.model.visual.register_forward_hook(lambda mod, args, out: vision_calls.append(1))
    trainer = GRPOTrainer(model=model, reward_funcs=contains_solution, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=processor)
    assert trainer._is_vlm
    trainer.train()
    # The images reached the model: generation (2 steps) and the loss forward each ran the tower.
    assert len(vision_calls) >= 4
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert any("visual" in n for n in changed) and any("language_model" in n for n in changed)


def test_short_chains_fit_the_demos_completion_length(tiny_vlm_path):
    # The demo generates at most DemoSettings.max_completion_length tokens: a reference chain (plus
    # the end token) longer than that is truncated before its answer, in the warm start's
    # validation and in RL, and scores 0 however well the model sees.
    from pepo.demo import DemoSettings

    _, processor = load_model_and_processor(tiny_vlm_path)
    rng = random.Random(0)
    for qtype in QUESTION_TYPES:
        for _ in range(100):
            problem = make_problem(rng, qtype, chain="short")
            length = len(processor.tokenizer(problem.chain)["input_ids"]) + 1
            assert length <= DemoSettings().max_completion_length, (qtype, length, problem.chain)
