import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pepo
from pepo.core.weights import WEIGHTING_MODES, register_weighting_mode
from tests.core.reference import naive_weights

MODES = ["pepo", "perception", "exploration"]


def test_hand_computed_pepo():
    # v = (0, 1), h = (1, 0): v~ + h~ = (1, 1), c = 0, gate = 1, z = v = (0, 1)
    # w = 2 * softmax(0, 1) = 2 * (1, e) / (1 + e) = (0.537883, 1.462117)
    w = pepo.token_weights(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), torch.ones(1, 2), gate_alpha=0.5)
    torch.testing.assert_close(w, torch.tensor([[0.537883, 1.462117]]))
    # v = (0, 1), h = (0, 1), alpha = 0.5: v~ + h~ = (0, 2), c = (-1, 1), g = 1 -/+ 0.5 tanh(1) = (0.619203, 1.380797)
    # z = v * g = (0, 1.380797); w = 2 * softmax(z) = (0.401762, 1.598238)
    w = pepo.token_weights(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]), torch.ones(1, 2), gate_alpha=0.5)
    torch.testing.assert_close(w, torch.tensor([[0.401762, 1.598238]]))


def test_hand_computed_exploration_with_temperature():
    # h = (0, 1), alpha = 0.5, tau = 2: h~ - mean = (-0.5, 0.5), z = h * (1 + 0.5 tanh(h~ - mean)) / 2
    # = (0, 0.615529); w = 2 * softmax(z) = (0.701598, 1.298402). The perception score is ignored.
    w = pepo.token_weights(
        torch.tensor([[5.0, -3.0]]), torch.tensor([[0.0, 1.0]]), torch.ones(1, 2),
        gate_alpha=0.5, gate_temperature=2.0, mode="exploration",
    )
    torch.testing.assert_close(w, torch.tensor([[0.701598, 1.298402]]))


def test_perception_mode_is_pepo_without_gate():
    g = torch.Generator().manual_seed(0)
    v, h, m = torch.randn(4, 7, generator=g), torch.rand(4, 7, generator=g), torch.ones(4, 7)
    torch.testing.assert_close(
        pepo.token_weights(v, h, m, mode="perception"), pepo.token_weights(v, h, m, gate_alpha=0.0, mode="pepo")
    )


@st.composite
def weight_inputs(draw):
    B, T = draw(st.integers(1, 4)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    v = scale * torch.randn(B, T, generator=g)
    h = scale * torch.rand(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) < draw(st.floats(0.2, 1.0))).float()
    mask[:, 0] = 1.0  # every row has a valid token (rows without any are tested apart)
    if draw(st.booleans()):  # left padding instead of right/random
        mask = mask.flip(1)
    alpha = draw(st.floats(0.0, 1.0))
    tau = draw(st.floats(0.1, 5.0))
    return v, h, mask, alpha, tau


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(inputs=weight_inputs())
def test_invariants(mode, inputs):
    v, h, mask, alpha, tau = inputs
    w = pepo.token_weights(v, h, mask, gate_alpha=alpha, gate_temperature=tau, mode=mode)
    valid = mask.bool()
    assert w.dtype == torch.float32 and torch.isfinite(w).all() and (w >= 0).all()
    assert torch.equal(w[~valid], torch.zeros_like(w[~valid]))
    row_mean = (w * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(row_mean, torch.ones_like(row_mean), rtol=0, atol=2e-6)
    torch.testing.assert_close(w.double(), naive_weights(v, h, mask, alpha, tau, mode), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=30, deadline=None)
@given(inputs=weight_inputs(), junk=st.floats(-1e6, 1e6))
def test_padding_content_does_not_matter(mode, inputs, junk):
    v, h, mask, alpha, tau = inputs
    w = pepo.token_weights(v, h, mask, gate_alpha=alpha, gate_temperature=tau, mode=mode)
    pad = ~mask.bool()
    w2 = pepo.token_weights(v.masked_fill(pad, junk), h.masked_fill(pad, junk), mask, alpha, tau, mode)
    assert torch.equal(w, w2)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=30, deadline=None)
@given(inputs=weight_inputs(), seed=st.integers(0, 1000))
def test_permutation_equivariant_within_row(mode, inputs, seed):
    v, h, mask, alpha, tau = inputs
    perm = torch.randperm(v.shape[1], generator=torch.Generator().manual_seed(seed))
    w = pepo.token_weights(v, h, mask, alpha, tau, mode)
    wp = pepo.token_weights(v[:, perm], h[:, perm], mask[:, perm], alpha, tau, mode)
    # Permuting reorders the row's float32 sums (mean, std, normaliser): allow that rounding, which
    # grows with the row length; a weight that followed the wrong token is off by far more.
    rounding = 4 * v.shape[1] * torch.finfo(torch.float32).eps
    torch.testing.assert_close(wp, w[:, perm], rtol=rounding, atol=rounding)


@pytest.mark.parametrize("mode", MODES)
def test_degenerate_rows(mode):
    v = torch.tensor([[2.0, 2.0, 2.0], [7.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    h = torch.tensor([[0.5, 0.5, 0.5], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    w = pepo.token_weights(v, h, mask, mode=mode)
    assert torch.equal(w[0], torch.ones(3))  # constant row: uniform weights
    assert torch.equal(w[1], torch.tensor([1.0, 0.0, 0.0]))  # one-token row
    assert torch.equal(w[2], torch.zeros(3))  # no valid token at all: nothing to weight


def test_image_less_rows_get_unit_weights():
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(2, 10, 6, generator=g) for _ in range(3)]
    vision = torch.zeros(2, 10, dtype=torch.bool)
    vision[0, 1:4] = True
    entropy = torch.rand(2, 4, generator=g)
    mask = torch.ones(2, 4)
    for mode in ("pepo", "perception"):
        w = pepo.token_weights(pepo.perception_scores(hidden, vision, 4), entropy, mask, mode=mode)
        assert torch.equal(w[1], torch.ones(4)) and not torch.equal(w[0], torch.ones(4))
    for mode in MODES:  # with the explicit flag, every mode leaves image-less rows at 1
        w = pepo.token_weights(torch.randn(2, 4), entropy, mask, mode=mode, has_image=vision.any(1))
        assert torch.equal(w[1], torch.ones(4)) and not torch.equal(w[0], torch.ones(4))


def test_extreme_scores_stay_finite():
    v = torch.tensor([[1e30, -1e30, 0.0]])
    w = pepo.token_weights(v, torch.zeros(1, 3), torch.ones(1, 3), gate_temperature=1e-3)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.tensor([[3.0, 0.0, 0.0]]))


def test_weights_are_detached():
    v = torch.randn(2, 5, requires_grad=True)
    h = torch.rand(2, 5, requires_grad=True)
    w = pepo.token_weights(v, h, torch.ones(2, 5))
    assert not w.requires_grad and w.grad_fn is None


def test_bfloat16_inputs_give_float32_weights():
    v, h = torch.randn(2, 6), torch.rand(2, 6)
    w16 = pepo.token_weights(v.bfloat16(), h.bfloat16(), torch.ones(2, 6))
    w32 = pepo.token_weights(v.bfloat16().float(), h.bfloat16().float(), torch.ones(2, 6))
    assert w16.dtype == torch.float32 and torch.equal(w16, w32)


def test_registry_extension_and_errors():
    @register_weighting_mode("test_uniform")
    def uniform(perception, entropy, valid, gate_alpha):
        return torch.zeros_like(perception)

    try:
        w = pepo.token_weights(torch.randn(1, 4), torch.rand(1, 4), torch.ones(1, 4), mode="test_uniform")
        assert torch.equal(w, torch.ones(1, 4))
        with pytest.raises(ValueError, match="already registered"):
            register_weighting_mode("test_uniform")(uniform)
    finally:
        del WEIGHTING_MODES["test_uniform"]
    with pytest.raises(ValueError, match="unknown mode 'nope'"):
        pepo.token_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), mode="nope")
    with pytest.raises(ValueError, match="gate_alpha must be >= 0"):
        pepo.token_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), gate_alpha=-0.1)
    with pytest.raises(ValueError, match="gate_temperature must be > 0"):
        pepo.token_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), gate_temperature=0)
    with pytest.raises(ValueError, match="share one"):
        pepo.token_weights(torch.zeros(1, 2), torch.zeros(1, 1), torch.ones(1, 1))


NONFINITE = [float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize("name", ["gate_alpha", "gate_temperature"])
def test_nan_and_inf_gate_parameters_are_refused(name, bad):
    # before issue 25, gate_alpha=nan returned all-zero weights and gate_temperature=nan too
    with pytest.raises(ValueError, match=f"token_weights: {name} must be a finite number, got {bad!r}"):
        pepo.token_weights(torch.randn(2, 3), torch.rand(2, 3), torch.ones(2, 3), **{name: bad})


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40, deadline=None)
@given(inputs=weight_inputs(), alpha=st.floats(allow_nan=True, allow_infinity=True),
       tau=st.floats(allow_nan=True, allow_infinity=True))
def test_any_gate_parameters_give_unit_mean_weights_or_an_error(mode, inputs, alpha, tau):
    v, h, mask, _, _ = inputs
    if not (math.isfinite(alpha) and alpha >= 0 and math.isfinite(tau) and tau > 0):
        with pytest.raises(ValueError, match="gate_(alpha|temperature)"):
            pepo.token_weights(v, h, mask, alpha, tau, mode)
        return
    try:
        w = pepo.token_weights(v, h, mask, alpha, tau, mode)
    except RuntimeError as error:  # an extreme alpha / tau can overflow the scores: refused, never returned
        assert "not finite with mean 1" in str(error)
        return
    row_mean = (w * mask).sum(1) / mask.sum(1)
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    torch.testing.assert_close(row_mean, torch.ones_like(row_mean), rtol=0, atol=1e-4)


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize("signal", ["perception", "entropy"])
def test_a_nonfinite_signal_on_a_valid_token_raises_and_on_padding_does_not(signal, bad):
    v, h, mask = torch.randn(2, 4), torch.rand(2, 4), torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    signals = {"perception": v, "entropy": h}
    signals[signal][0, 3] = bad  # padding: its content never matters
    pepo.token_weights(signals["perception"], signals["entropy"], mask)
    signals[signal][1, 2] = bad
    with pytest.raises(RuntimeError, match="not finite with mean 1"):
        pepo.token_weights(signals["perception"], signals["entropy"], mask)


@pytest.mark.parametrize("score", [float("nan"), float("inf"), -float("inf")])
def test_a_mode_whose_scores_break_the_unit_mean_raises(score):
    @register_weighting_mode("test_broken", needs_entropy=False)
    def broken(perception, entropy, valid, gate_alpha):
        return torch.where(torch.arange(perception.size(0)).unsqueeze(1) == 1, score, perception)

    try:
        with pytest.raises(RuntimeError, match="mode 'test_broken' gave weights that are not finite with mean 1"):
            pepo.token_weights(torch.randn(2, 3), None, torch.ones(2, 3), mode="test_broken")
    finally:
        del WEIGHTING_MODES["test_broken"]


def test_a_mode_gets_only_the_signals_it_declares():
    seen = {}

    @register_weighting_mode("test_entropy_only", needs_perception=False, image_rows_only=False)
    def entropy_only(perception, entropy, valid, gate_alpha):
        seen.update(perception=perception, entropy=entropy)
        return entropy

    try:
        h = torch.rand(2, 3)
        w = pepo.token_weights(None, h, torch.ones(2, 3), mode="test_entropy_only")
        assert seen["perception"] is None and torch.equal(seen["entropy"], h)
        torch.testing.assert_close(w.mean(1), torch.ones(2))
        pepo.token_weights(torch.randn(2, 3), h, torch.ones(2, 3), mode="test_entropy_only")
        assert seen["perception"] is None  # given, but not declared: still None
        with pytest.raises(ValueError, match="mode 'pepo' needs perception, got None"):
            pepo.token_weights(None, h, torch.ones(2, 3))
    finally:
        del WEIGHTING_MODES["test_entropy_only"]


def test_builtin_modes_declare_what_they_read():
    needs = {name: (m.needs_perception, m.needs_entropy, m.image_rows_only) for name, m in WEIGHTING_MODES.items()}
    assert needs == {"pepo": (True, True, True), "perception": (True, False, True), "exploration": (False, True, False)}
    # each runs on exactly what it declares: an undeclared signal as None does not break it
    v, h, mask = torch.randn(2, 4), torch.rand(2, 4), torch.ones(2, 4)
    for name, mode in WEIGHTING_MODES.items():
        pepo.token_weights(v if mode.needs_perception else None, h if mode.needs_entropy else None, mask, mode=name)


def test_registration_checks():
    with pytest.raises(TypeError, match="needs_perception must be True or False"):
        register_weighting_mode("test_bad", needs_perception="yes")

    @register_weighting_mode("test_shape")
    def wrong_shape(perception, entropy, valid, gate_alpha):
        return perception[:, :1]

    try:
        with pytest.raises(ValueError, match=r"mode 'test_shape' returned \(2, 1\), expected a \(2, 3\) tensor"):
            pepo.token_weights(torch.randn(2, 3), torch.rand(2, 3), torch.ones(2, 3), mode="test_shape")
    finally:
        del WEIGHTING_MODES["test_shape"]
    assert "test_bad" not in WEIGHTING_MODES
