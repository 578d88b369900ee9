"""A training micro-step looks up no package metadata: ``accelerate.utils.is_peft_model`` reads it on
every call (``importlib.metadata``, about 4 ms), so pepo checks for PEFT with ``pepo.modeling.is_peft_model``
(``sys.modules``) in the policy forward; any code that goes back to accelerate's check fails here."""

from __future__ import annotations

import copy
import importlib.metadata

import pytest

from .conftest import rollout


@pytest.mark.parametrize("weighting", ["pepo", "none"])
def test_a_loss_forward_and_backward_read_no_package_metadata(make_trainer, monkeypatch, weighting):
    trainer = make_trainer(weighting=weighting)
    inputs = rollout(trainer)
    lookups = []
    for name in ("metadata", "distribution", "version"):
        real = getattr(importlib.metadata, name)
        monkeypatch.setattr(importlib.metadata, name,
                            lambda package, *a, _real=real, _name=name, **k: lookups.append((_name, package)) or _real(package, *a, **k))
    trainer.current_gradient_accumulation_steps = 1  # as in a training micro-step
    trainer.compute_loss(trainer.model, copy.copy(inputs)).backward()
    assert lookups == []


def test_pepo_is_peft_model_agrees_with_accelerate(tiny_model_and_processor, fresh_model):
    from accelerate.utils import is_peft_model as accelerate_is_peft_model

    from pepo.modeling import is_peft_model

    peft = pytest.importorskip("peft")
    model = fresh_model()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert (is_peft_model(model), is_peft_model(wrapped)) == (False, True)
    assert (accelerate_is_peft_model(model), accelerate_is_peft_model(wrapped)) == (False, True)
