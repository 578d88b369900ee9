"""PEPOConfig: PEPO's fields, their help text and the cross-field checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


NONFINITE = (float("nan"), float("inf"), -float("inf"))
# PEPO's and PAPO / VPPO's numeric fields, each with the method that reads it
NUMERIC_FIELDS = [
    ("gate_alpha", {}), ("gate_temperature", {}), ("dynamic_sampling_max_rounds", {}),
    *[(name, {"weighting": "none", "perception_aware": method}) for name, method in (
        ("mask_prob", "papo"), ("papo_gamma", "papo"), ("papo_eta_ori", "papo"), ("papo_eta_aug", "papo"),
        ("vppo_k", "vppo"), ("vppo_beta_min", "vppo"), ("vppo_entropy_coef", "vppo"),
    )],
]


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize(("field", "method"), NUMERIC_FIELDS)
def test_nan_and_inf_are_refused_in_every_numeric_field(tmp_path, field, method, bad):
    # `nan < 0` is False: a range check alone let NaN through (issue 25: --gate_alpha nan trained with weight 0)
    with pytest.raises(ValueError, match=f"^{field}={bad!r}: must be a (finite|whole) number"):
        config(tmp_path, **method, **{field: bad})


@pytest.mark.parametrize("field", ["papo_gamma", "vppo_k"])
def test_nan_is_refused_even_in_a_field_the_run_does_not_use(tmp_path, field):
    with pytest.raises(ValueError, match=f"^{field}=nan: must be a finite number"):
        config(tmp_path, **{field: float("nan")})


@settings(max_examples=25, deadline=None)
@given(alpha=st.floats(allow_nan=True, allow_infinity=True), tau=st.floats(allow_nan=True, allow_infinity=True))
def test_gate_fields_accept_exactly_the_finite_valid_values(tmp_path_factory, alpha, tau):
    valid = math.isfinite(alpha) and alpha >= 0 and math.isfinite(tau) and tau > 0
    tmp_path = tmp_path_factory.mktemp("config")
    if valid:
        args = config(tmp_path, gate_alpha=alpha, gate_temperature=tau)
        assert (args.gate_alpha, args.gate_temperature) == (alpha, tau)
    else:
        with pytest.raises(ValueError, match="gate_(alpha|temperature)="):
            config(tmp_path, gate_alpha=alpha, gate_temperature=tau)


def test_weighting_none_allows_any_trl_loss(tmp_path):
    assert config(tmp_path, weighting="none", loss_type="cispo").loss_type == "cispo"


def test_trainer_rejects_a_plain_grpo_config(make_trainer, tmp_path, tiny_model_and_processor):
    from pepo.trainer import PEPOTrainer

    model, processor = tiny_model_and_processor
    with pytest.raises(TypeError, match="PEPOConfig"):
        PEPOTrainer(model=model, reward_funcs=[lambda completions, **k: [0.0] * len(completions)],
                    args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False), processing_class=processor)
