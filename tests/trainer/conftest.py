"""Fixtures for the trainer tests: the tiny Qwen2.5-VL, a 4-prompt image dataset, trainer builders."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from PIL import Image

COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200), (90, 90, 90), (250, 250, 250)]


def length_reward(completions, **kwargs) -> list[float]:
    """A trivial reward with within-group variance: completion length in characters, mod 3."""
    return [float(len(str(c)) % 3) for c in completions]


def image_dataset(n: int = 4) -> Dataset:
    rows = [
        {
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle ?"}]}],
            "image": Image.new("RGB", (56, 56), COLOURS[i % len(COLOURS)]),
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows)


def config(tmp_path, **overrides):
    from pepo.trainer import PEPOConfig

    fields = dict(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, activation_checkpointing=False, report_to=[],
        per_device_train_batch_size=4, num_generations=4, max_completion_length=8, max_steps=2, logging_steps=1,
        loss_type="grpo", beta=0.0, learning_rate=1e-3, save_strategy="no", seed=0, disable_tqdm=True,
    )
    fields.update(overrides)
    return PEPOConfig(**fields)


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_vlm_path):
    from pepo.modeling import load_model_and_processor

    return load_model_and_processor(tiny_vlm_path)


@pytest.fixture
def fresh_model(tiny_model_and_processor):
    """A function returning an independent copy of the tiny model (same weights each time)."""
    model, _ = tiny_model_and_processor
    return lambda: copy.deepcopy(model)


@pytest.fixture
def make_trainer(tiny_model_and_processor, fresh_model, tmp_path):
    """``make_trainer(cls=PEPOTrainer, dataset=None, **config_fields)`` on a fresh model copy."""
    from pepo.trainer import PEPOTrainer

    _, processor = tiny_model_and_processor

    def build(cls=PEPOTrainer, dataset=None, reward_funcs=None, model=None, **fields):
        return cls(
            model=model if model is not None else fresh_model(),
            reward_funcs=reward_funcs or [length_reward],
            args=config(tmp_path, **fields),
            train_dataset=dataset if dataset is not None else image_dataset(),
            processing_class=processor,
        )

    return build


def rollout(trainer, seed: int = 0) -> dict:
    """One generated and scored batch of the trainer's dataset (4 prompts would be 16 rows: we use
    the first ``per_device_train_batch_size`` rows, i.e. one prompt group)."""
    examples = [trainer.train_dataset[i // trainer.num_generations] for i in range(trainer.args.per_device_train_batch_size)]
    torch.manual_seed(seed)
    trainer.model.train()
    return trainer._generate_and_score_completions(examples)
