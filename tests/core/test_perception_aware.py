"""PAPO and VPPO terms: hand-worked values on small batches, and their invariants as properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pepo.core import (
    entropy_penalty,
    k3_estimate,
    papo_regulariser,
    top_dependency_mask,
    trajectory_scale,
    visual_dependency,
    vppo_advantages,
)

LN2 = math.log(2.0)
E = math.e

# Two responses: row 0 has 3 tokens, row 1 has 2 (its third position is padding with garbage values).
LOGPS = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, 0.0]])
MASKED = torch.tensor([[-1.0, -1.0, -1.5], [-1.0 + LN2, -28.0, -100.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# k = masked - logps = [[0, 1, -1], [ln 2, -25]]: k3 = [[0, e - 2, 1/e], [1 - ln 2, 24 -> clamped to 10]]
KL = [[0.0, E - 2, 1 / E], [1 - LN2, 10.0]]


def test_k3_hand_values_and_clamps():
    kl = k3_estimate(MASKED, LOGPS)
    torch.testing.assert_close(kl[:, :2], torch.tensor([KL[0][:2], KL[1]]), rtol=1e-6, atol=1e-7)
    assert kl[0, 2].item() == pytest.approx(1 / E, rel=1e-6)
    # k is clamped to [-20, 20] before exp: an extreme log ratio stays finite, then the result to [-10, 10]
    huge = k3_estimate(torch.tensor([[-1e4, 50.0]]), torch.tensor([[0.0, 0.0]]))
    assert huge.tolist() == [[10.0, 10.0]]
    assert visual_dependency(torch.tensor([[0.0, 0.0]]), torch.tensor([[-1e4, 1e-3]])).tolist()[0][0] == 10.0


def test_papo_term_hand_worked_on_two_rows():
    logps = LOGPS.clone().requires_grad_(True)
    term, kl = papo_regulariser(logps, MASKED, MASK, gamma=0.02, eta_ori=0.05, eta_aug=0.05)
    kl_mean = (KL[0][0] + KL[0][1] + KL[0][2] + KL[1][0] + KL[1][1]) / 5  # 2.2786028...
    h_ori = (1 + 2 + 0.5 + 1 + 3) / 5  # 1.5
    h_aug = (1 + 1 + 1.5 + (1 - LN2) + 28) / 5  # 6.3613706...
    expected = -0.02 * kl_mean + 0.05 * h_ori + 0.05 * h_aug
    assert term.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.3474964, rel=1e-6)
    assert kl[0, 1].item() == pytest.approx(E - 2, rel=1e-6) and not kl.requires_grad

    term.backward()
    # d/d logp of -gamma * k3 / 5 is -gamma * (1 - e^k) / 5; of eta_ori * -logp / 5 is -eta_ori / 5
    assert logps.grad[0, 1].item() == pytest.approx(-0.02 * (1 - E) / 5 - 0.05 / 5, rel=1e-5)
    assert logps.grad[0, 0].item() == pytest.approx(-0.05 / 5, rel=1e-5)  # k = 0: no KL gradient
    assert logps.grad[1, 1].item() == pytest.approx(-0.05 / 5, rel=1e-5)  # clamped KL: no KL gradient
    assert logps.grad[1, 2].item() == 0.0  # padding


def test_papo_text_only_row_is_left_out_of_the_perception_terms():
    has_image = torch.tensor([True, False])
    term, _ = papo_regulariser(LOGPS, MASKED, MASK, 0.02, 0.05, 0.05, has_image=has_image)
    expected = -0.02 * sum(KL[0]) / 3 + 0.05 * 1.5 + 0.05 * 3.5 / 3
    assert term.item() == pytest.approx(expected, rel=1e-6)
    no_images, _ = papo_regulariser(LOGPS, MASKED, MASK, 0.02, 0.05, 0.05, has_image=torch.tensor([False, False]))
    assert no_images.item() == pytest.approx(0.05 * 1.5, rel=1e-6)


def test_papo_with_zero_coefficients_is_zero_and_the_entropy_penalty():
    term, _ = papo_regulariser(LOGPS, MASKED, MASK, 0.0, 0.0, 0.0)
    assert term.item() == 0.0
    assert entropy_penalty(LOGPS, MASK, 0.06).item() == pytest.approx(0.06 * 1.5, rel=1e-6)


# VPPO: dependency given directly. Row 0: 4 valid tokens, mean 0.35; row 1: 3 valid, mean 1.0.
DEPENDENCY = torch.tensor([[0.1, 0.5, 0.3, 0.5], [2.0, 0.0, 1.0, 9.0]])
VPPO_MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])


def test_vppo_hand_worked_on_two_rows():
    advantages = torch.tensor([1.0, -2.0])
    shaped, keep, scale = vppo_advantages(advantages, DEPENDENCY, VPPO_MASK, k=0.5, beta_min=0.8)
    # ceil(0.5 * 4) = 2 tokens of row 0 (the two 0.5s), ceil(0.5 * 3) = 2 of row 1 (2.0 and 1.0, not the padding)
    assert keep.tolist() == [[False, True, False, True], [True, False, True, False]]
    # n = [0, 1], mean(n) = 0.5, beta_max = 0.8 + 0.2 / 0.5 = 1.2
    torch.testing.assert_close(scale, torch.tensor([0.8, 1.2]))
    torch.testing.assert_close(shaped, torch.tensor([[0.0, 0.8, 0.0, 0.8], [-2.4, 0.0, -2.4, 0.0]]))


def test_vppo_three_rows_beta_max_follows_mean_n():
    dependency = torch.cat([DEPENDENCY, torch.tensor([[0.48, 0.48, 0.48, 0.48]])])
    mask = torch.cat([VPPO_MASK, torch.tensor([[1, 1, 1, 1]])])
    # means [0.35, 1.0, 0.48]: n = [0, 1, 0.2], mean 0.4, beta_max = 0.8 + 0.2 / 0.4 = 1.3
    torch.testing.assert_close(trajectory_scale(dependency, mask, 0.8), torch.tensor([0.8, 1.3, 0.9]))
    # k = 0.2: ceil(0.8) = 1 token; ties go to the earlier position
    assert top_dependency_mask(dependency, mask, 0.2).sum(1).tolist() == [1, 1, 1]
    assert top_dependency_mask(dependency, mask, 0.2)[0].tolist() == [False, True, False, False]


def test_vppo_text_only_row_keeps_every_token_and_scale_one():
    advantages = torch.tensor([1.0, -2.0, 0.5])
    dependency = torch.cat([DEPENDENCY, torch.tensor([[0.0, 0.0, 0.0, 0.0]])])
    mask = torch.cat([VPPO_MASK, torch.tensor([[1, 1, 0, 0]])])
    shaped, keep, scale = vppo_advantages(advantages, dependency, mask, 0.5, 0.8, has_image=torch.tensor([True, True, False]))
    assert keep[2].tolist() == [True, True, False, False] and scale[2].item() == 1.0
    torch.testing.assert_close(scale[:2], torch.tensor([0.8, 1.2]))  # the image rows are normalised among themselves
    assert shaped[2].tolist() == [0.5, 0.5, 0.0, 0.0]


def test_vppo_degenerate_batches_leave_advantages_alone():
    assert trajectory_scale(DEPENDENCY[:1], VPPO_MASK[:1], 0.8).tolist() == [1.0]  # one response
    same = torch.full((2, 4), 0.3)
    assert trajectory_scale(same, VPPO_MASK, 0.8).tolist() == [1.0, 1.0]  # no spread


def test_vppo_with_k_1_and_beta_min_1_is_the_base_advantage():
    advantages = torch.tensor([1.0, -2.0])
    shaped, keep, scale = vppo_advantages(advantages, DEPENDENCY, VPPO_MASK, k=1.0, beta_min=1.0)
    assert torch.equal(keep, VPPO_MASK.bool()) and torch.equal(scale, torch.ones(2))
    assert torch.equal(shaped, advantages.unsqueeze(1) * VPPO_MASK)


def test_vppo_arguments_are_checked():
    with pytest.raises(ValueError, match="k must be in"):
        top_dependency_mask(DEPENDENCY, VPPO_MASK, 0.0)
    with pytest.raises(ValueError, match="beta_min"):
        trajectory_scale(DEPENDENCY, VPPO_MASK, 1.5)


@st.composite
def batches(draw):
    rows = draw(st.integers(2, 6))
    cols = draw(st.integers(1, 12))
    values = st.floats(0.0, 10.0, allow_nan=False, width=32)
    dependency = torch.tensor(draw(st.lists(st.lists(values, min_size=cols, max_size=cols), min_size=rows, max_size=rows)))
    lengths = draw(st.lists(st.integers(0, cols), min_size=rows, max_size=rows))
    mask = (torch.arange(cols).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).int()
    return dependency, mask


@settings(max_examples=150, deadline=None)
@given(batch=batches(), k=st.floats(0.01, 1.0), beta_min=st.floats(0.0, 1.0))
def test_vppo_properties(batch, k, beta_min):
    dependency, mask = batch
    keep = top_dependency_mask(dependency, mask, k)
    lengths = mask.sum(1)
    assert keep.sum(1).tolist() == [math.ceil(n * k) for n in lengths.tolist()]
    assert not (keep & ~mask.bool()).any()
    for row in range(dependency.size(0)):
        kept, dropped = dependency[row][keep[row]], dependency[row][mask[row].bool() & ~keep[row]]
        if kept.numel() and dropped.numel():
            assert kept.min() >= dropped.max()

    scale = trajectory_scale(dependency, mask, beta_min)
    assert torch.isfinite(scale).all() and (scale >= beta_min - 1e-6).all()
    part = lengths > 0
    if scale[part].ne(1.0).any():  # shaping happened: unit mean over the responses taking part
        assert scale[part].mean().item() == pytest.approx(1.0, abs=1e-4)
        means = (dependency * mask).sum(1) / lengths.clamp_min(1)
        order = means[part].argsort()
        assert (scale[part][order].diff() >= -1e-5).all()  # more visual dependency, larger scale
