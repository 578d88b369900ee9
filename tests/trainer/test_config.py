"""PEPOConfig: PEPO's fields, their help text and the cross-field checks."""

from __future__ import annotations

import dataclasses

import pytest
from trl import GRPOConfig

from pepo.trainer import PEPOConfig
from pepo.trainer.config import weighting_choices

from .conftest import config


def test_every_pepo_field_has_help():
    own = [f for f in dataclasses.fields(PEPOConfig) if f.name not in {g.name for g in dataclasses.fields(GRPOConfig)}]
    assert {f.name for f in own} >= {"weighting", "gate_alpha", "gate_temperature", "perception_measure",
                                     "image_token", "schedule", "dynamic_sampling", "freeze_vision_tower"}
    assert all(f.metadata.get("help") for f in own)


def test_defaults_are_the_papers(tmp_path):
    args = config(tmp_path)
    assert (args.weighting, args.gate_alpha, args.gate_temperature, args.perception_measure, args.schedule) == (
        "pepo", 0.05, 1.0, "cosine", "progressive")
    assert weighting_choices()[0] == "none" and {"pepo", "perception", "exploration"} <= set(weighting_choices())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("weighting", "pepoo", "weighting='pepoo'"),
    ("gate_alpha", -0.1, "gate_alpha"),
    ("gate_temperature", 0.0, "gate_temperature"),
    ("perception_measure", "cos", "perception_measure"),
    ("schedule", "linear", "schedule"),
    ("dynamic_sampling_max_rounds", -1, "dynamic_sampling_max_rounds"),
    ("loss_type", "cispo", "clipped surrogate"),
])
def test_bad_values_say_what_to_fix(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **{field: value})


def test_weighting_none_allows_any_trl_loss(tmp_path):
    assert config(tmp_path, weighting="none", loss_type="cispo").loss_type == "cispo"


def test_trainer_rejects_a_plain_grpo_config(make_trainer, tmp_path, tiny_model_and_processor):
    from pepo.trainer import PEPOTrainer

    model, processor = tiny_model_and_processor
    with pytest.raises(TypeError, match="PEPOConfig"):
        PEPOTrainer(model=model, reward_funcs=[lambda completions, **k: [0.0] * len(completions)],
                    args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False), processing_class=processor)
