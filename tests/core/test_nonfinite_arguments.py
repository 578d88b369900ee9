"""Every numeric argument of pepo.core's public functions refuses NaN and inf with one ValueError naming
the function and the argument (a range check alone lets NaN through: ``nan <= 0`` is False)."""

import pytest
import torch

import pepo
from pepo.core import entropy_penalty, papo_regulariser, top_dependency_mask, trajectory_scale

NONFINITE = [float("nan"), float("inf"), -float("inf")]
HIDDEN = [torch.randn(1, 6, 4) for _ in range(2)]
VISION = torch.tensor([[False, True, True, False, False, False]])
LOGPS, MASK = -torch.rand(2, 3), torch.ones(2, 3)

CALLS = {
    ("progressive_lambda", "step"): lambda x: pepo.progressive_lambda(x, 10),
    ("progressive_lambda", "max_steps"): lambda x: pepo.progressive_lambda(3, x),
    ("loss_multiplier", "lam"): lambda x: pepo.loss_multiplier(torch.ones(1, 2), x),
    ("token_entropy", "temperature"): lambda x: pepo.token_entropy(torch.randn(1, 2, 5), temperature=x),
    ("token_entropy", "chunk_bytes"): lambda x: pepo.token_entropy(torch.randn(1, 2, 5), chunk_bytes=x),
    ("perception_scores", "logits_to_keep"): lambda x: pepo.perception_scores(HIDDEN, VISION, x),
    ("perception_scores", "chunk_bytes"): lambda x: pepo.perception_scores(HIDDEN, VISION, 2, chunk_bytes=x),
    ("papo_regulariser", "gamma"): lambda x: papo_regulariser(LOGPS, LOGPS, MASK, x, 0.05, 0.05),
    ("papo_regulariser", "eta_ori"): lambda x: papo_regulariser(LOGPS, LOGPS, MASK, 0.02, x, 0.05),
    ("papo_regulariser", "eta_aug"): lambda x: papo_regulariser(LOGPS, LOGPS, MASK, 0.02, 0.05, x),
    ("entropy_penalty", "coef"): lambda x: entropy_penalty(LOGPS, MASK, x),
    ("top_dependency_mask", "k"): lambda x: top_dependency_mask(LOGPS, MASK, x),
    ("trajectory_scale", "beta_min"): lambda x: trajectory_scale(LOGPS, MASK, x),
}


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize(("function", "argument"), list(CALLS))
def test_nan_and_inf_are_refused(function, argument, bad):
    with pytest.raises(ValueError, match=f"^{function}: {argument} must be"):
        CALLS[function, argument](bad)


@pytest.mark.parametrize(("function", "argument"), list(CALLS))
def test_a_finite_value_passes(function, argument):
    good = {"step": 3, "max_steps": 10, "lam": 0.5, "temperature": 0.7, "chunk_bytes": 4096, "logits_to_keep": 2,
            "k": 0.5, "beta_min": 0.8}.get(argument, 0.05)
    CALLS[function, argument](good)  # control: the check above is about the value, not the call
