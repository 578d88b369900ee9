"""How the token weights reach TRL's loss (pepo.trainer.handshake), and what a weighting mode declares.

Each way a TRL release could stop PEPO's weights from reaching the loss is simulated here on TRL 1.16:
the run must stop with one line naming the TRL version, never train the base algorithm under PEPO's name.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import pytest
import torch
from trl import GRPOTrainer

import pepo
import pepo.trainer.trainer as trainer_module
from pepo.core import WEIGHTING_MODES, token_weights
from pepo.trainer import PEPOTrainer
from pepo.trainer.handshake import TRLContractError

from .conftest import rollout

README = Path(__file__).resolve().parents[2] / "README.md"
ONE_LINE_ERROR = r"^pepo was written for TRL 1\.16, installed is TRL [^\n]*: .*install trl==1\.16\.\*[^\n]*$"


def readme_mode_example() -> str:
    """The README's ```python block that registers a weighting mode."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [block for block in blocks if "register_weighting_mode" in block]
    return example


@pytest.fixture
def readme_mode():
    """The README's example mode, registered as the README registers it; removed afterwards."""
    example = readme_mode_example()
    (name,) = re.findall(r"register_weighting_mode\(\"(\w+)\"", example)
    WEIGHTING_MODES.pop(name, None)  # tests/test_readme_examples.py runs the same block in this process
    exec(example, {"pepo": pepo, "torch": torch})
    try:
        yield name
    finally:
        WEIGHTING_MODES.pop(name)


@pytest.fixture
def weight_calls(monkeypatch):
    """Every token_weights call of the trainer: its perception, mask, keyword arguments and weights."""
    calls = []

    def spy(perception, entropy, completion_mask, *args, **kwargs):
        weights = token_weights(perception, entropy, completion_mask, *args, **kwargs)
        calls.append({"perception": perception, "mask": completion_mask.bool(), "kwargs": kwargs, "weights": weights})
        return weights

    monkeypatch.setattr(trainer_module, "token_weights", spy)
    return calls


def test_the_readme_example_mode_trains_with_its_own_weights(make_trainer, readme_mode, weight_calls):
    # before issue 25 a registered mode got all-zero perception and no image rows: weights all 1, plain GRPO
    trainer = make_trainer(weighting=readme_mode, schedule="constant", max_steps=1)
    trainer.train()
    assert weight_calls, "the loss never made token weights"
    for call in weight_calls:  # every row of the tiny dataset has an image
        mask, perception, weights = call["mask"], call["perception"], call["weights"]
        assert not torch.equal(weights[mask], torch.ones_like(weights[mask])), "all weights 1: the base algorithm"
        assert torch.count_nonzero(perception[mask]) == mask.sum(), "no perception prior on image rows"
        assert call["kwargs"]["has_image"] is not None and call["kwargs"]["has_image"].all()  # image_rows_only


def test_a_mode_gets_exactly_the_signals_it_declares(make_trainer, monkeypatch, weight_calls):
    seen = {}

    @pepo.register_weighting_mode("test_declared", needs_perception=False, needs_entropy=True, image_rows_only=False)
    def entropy_only(perception, entropy, valid, gate_alpha):
        seen.update(perception=perception, entropy=entropy)
        return entropy

    try:
        trainer = make_trainer(weighting="test_declared", schedule="constant")
        inputs = rollout(trainer)
        monkeypatch.setattr(trainer_module, "HiddenStateCapture", None)  # no perception needed: no hooks
        loss(trainer, inputs)
    finally:
        WEIGHTING_MODES.pop("test_declared")
    assert seen["perception"] is None  # undeclared: None, never zeros taken for a signal
    assert seen["entropy"].shape == inputs["completion_mask"].shape and torch.count_nonzero(seen["entropy"]) > 0
    assert weight_calls[0]["kwargs"]["has_image"] is None  # image_rows_only=False: text rows weighted too


def loss(trainer, inputs):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer.compute_loss(trainer.model, copy.copy(inputs))


@pytest.fixture
def pepo_and_batch(make_trainer):
    trainer = make_trainer(weighting="pepo", schedule="constant")
    return trainer, rollout(trainer)


def _renamed(original):
    """TRL's loss calls its forward under another name: the override is never reached."""
    def compute_loss(self, model, inputs):
        self._get_per_token_logps_and_entropies = functools.partial(GRPOTrainer._get_per_token_logps_and_entropies, self)
        try:
            return original(self, model, inputs)
        finally:
            del self._get_per_token_logps_and_entropies
    return compute_loss


def _no_entropy(original):
    """TRL's loss forward no longer asks for entropies (it would compute them elsewhere)."""
    def compute_loss(self, model, inputs):
        forward = self._get_per_token_logps_and_entropies

        def without_entropy(*args, compute_entropy=False, **kwargs):
            logps, _, aux = forward(*args, compute_entropy=False, **kwargs)
            return logps, torch.zeros_like(logps), aux

        self._get_per_token_logps_and_entropies = without_entropy
        try:
            return original(self, model, inputs)
        finally:
            del self._get_per_token_logps_and_entropies
    return compute_loss


def _copies_inputs(original):
    """TRL's loss works on its own copy of the batch, so what the forward writes is not what it reads."""
    return lambda self, model, inputs: original(self, model, dict(inputs))


def _reads_advantages_first(original):
    """TRL's loss reads the advantages before its forward (and keeps that tensor)."""
    def compute_loss(self, model, inputs):
        inputs["advantages"]  # noqa: B018 - the read is the point
        return original(self, model, inputs)
    return compute_loss


@pytest.mark.parametrize("change", [_renamed, _no_entropy, _copies_inputs, _reads_advantages_first],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_trl_that_no_longer_takes_the_weights_stops_the_run(pepo_and_batch, monkeypatch, change):
    trainer, inputs = pepo_and_batch
    loss(trainer, inputs)  # control: TRL 1.16 as installed takes them
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", change(GRPOTrainer._compute_loss))
    with pytest.raises(TRLContractError, match=ONE_LINE_ERROR):
        loss(trainer, inputs)


def test_pepos_own_reads_in_the_forward_do_not_hide_a_trl_that_copies_the_inputs(pepo_and_batch, monkeypatch):
    trainer, inputs = pepo_and_batch
    original_apply = PEPOTrainer._apply_token_weights

    def apply_and_read(self, loss_inputs, *args, **kwargs):  # e.g. a metric reading the advantages it wrote
        original_apply(self, loss_inputs, *args, **kwargs)
        loss_inputs["advantages"]  # noqa: B018 - the read is the point

    monkeypatch.setattr(PEPOTrainer, "_apply_token_weights", apply_and_read)
    loss(trainer, inputs)  # control
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", _copies_inputs(GRPOTrainer._compute_loss))
    with pytest.raises(TRLContractError, match="0 times before its policy forward and 0 times after it"):
        loss(trainer, inputs)


@pytest.mark.parametrize("returned", ["two", "dict"])
def test_a_changed_return_of_trls_forward_stops_the_run(pepo_and_batch, monkeypatch, returned):
    trainer, inputs = pepo_and_batch
    original = GRPOTrainer._get_per_token_logps_and_entropies

    def changed(self, *args, **kwargs):
        logps, entropies, _ = original(self, *args, **kwargs)
        return (logps, entropies) if returned == "two" else {"logps": logps, "entropies": entropies}

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", changed)
    with pytest.raises(TRLContractError, match="returned .*not \\(logps, entropies"):
        loss(trainer, inputs)


def test_log_signals_needs_the_forward_too(make_trainer, monkeypatch):
    trainer = make_trainer(weighting="none", log_signals=True)
    inputs = rollout(trainer)
    loss(trainer, inputs)
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", _renamed(GRPOTrainer._compute_loss))
    with pytest.raises(TRLContractError, match="compute_entropy=True 0 times"):
        loss(trainer, inputs)


def test_papo_stops_when_the_loss_forward_is_not_reached(make_trainer, monkeypatch):
    trainer = make_trainer(weighting="none", perception_aware="papo")
    inputs = rollout(trainer)
    loss(trainer, inputs)
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", _renamed(GRPOTrainer._compute_loss))
    with pytest.raises(TRLContractError, match="PAPO / VPPO"):
        loss(trainer, inputs)
