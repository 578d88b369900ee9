from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pepo
from tests.core.reference import naive_perception

# "l1_sorted": l1 through the sorted-prefix identity the accelerators use (the CPU uses cdist)
MEASURES = ["cosine", "dot", "l2", "l1", "l1_sorted"]


def scores(hidden, vision, T, measure="cosine", **kwargs):
    """pepo.perception_scores; ``measure="l1_sorted"`` forces l1's accelerator path on the CPU."""
    if measure != "l1_sorted":
        return pepo.perception_scores(hidden, vision, T, measure=measure, **kwargs)
    with mock.patch("pepo.core.perception.l1_by_sorting", lambda device: True):
        return pepo.perception_scores(hidden, vision, T, measure="l1", **kwargs)


def reference(hidden, vision, T, measure):
    return naive_perception(hidden, vision, T, measure.removesuffix("_sorted"))


def random_case(seed, B=3, S=14, T=5, D=8, layers=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = [torch.randn(B, S, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(layers)]
    vision = torch.rand(B, S, generator=g) < 0.4
    vision[:, S - T :] = False  # image tokens sit in the prompt
    vision[0, :2] = True  # at least one row with images
    return hidden, vision


def test_hand_computed_cosine_and_dot():
    # One layer, one row, S=3, T=1. Image tokens at 0 and 1: (1, 0) and (0, 2); response token (3, 4).
    # cosine: mean(cos((3,4),(1,0)), cos((3,4),(0,1))) = mean(3/5, 4/5) = 0.7
    # dot:    mean(3, 8) = 5.5
    # l2:     -mean(sqrt(4+16+1e-6), sqrt(9+4+1e-6)) = -(2*sqrt(5) + sqrt(13)) / 2 ~= -4.0389
    # l1:     -mean(2+4, 3+2) = -5.5
    h = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]])
    vision = torch.tensor([[True, True, False]])
    assert pepo.perception_scores([h], vision, 1).item() == pytest.approx(0.7, abs=1e-6)
    assert pepo.perception_scores([h], vision, 1, measure="dot").item() == pytest.approx(5.5, abs=1e-5)
    expected_l2 = -((20 + 1e-6) ** 0.5 + (13 + 1e-6) ** 0.5) / 2
    assert pepo.perception_scores([h], vision, 1, measure="l2").item() == pytest.approx(expected_l2, abs=1e-5)
    assert pepo.perception_scores([h], vision, 1, measure="l1").item() == pytest.approx(-5.5, abs=1e-5)
    assert scores([h], vision, 1, measure="l1_sorted").item() == pytest.approx(-5.5, abs=1e-5)


@pytest.mark.parametrize("measure", MEASURES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 6), layers=st.integers(1, 4), chunk=st.integers(1, 4000))
def test_matches_naive_definition(measure, seed, T, layers, chunk):
    # chunk_bytes from below one position (3 rows x 8 floats = 96 bytes) to the whole layer
    hidden, vision = random_case(seed, T=T, layers=layers)
    ours = scores(hidden, vision, T, measure, chunk_bytes=chunk)
    assert ours.dtype == torch.float32 and ours.shape == (3, T)
    ref = reference(hidden, vision, T, measure)
    # float32 accumulation of float64 inputs of size ~1: errors of order 1e-6 relative
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("measure", ["l1", "l1_sorted", "l2"])
def test_distances_with_ties_and_repeated_values(measure):
    # small integers: many response values equal an image value (l1's sorted-prefix path at its ties)
    g = torch.Generator().manual_seed(5)
    hidden = [torch.randint(-2, 3, (3, 30, 6), generator=g).double() for _ in range(2)]
    vision = torch.zeros(3, 30, dtype=torch.bool)
    vision[0, 2:12] = True
    vision[1, 5:7] = True  # rows with different image counts: padding slots in the sorted values
    ours = scores(hidden, vision, 8, measure)
    torch.testing.assert_close(ours.double(), reference(hidden, vision, 8, measure), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("measure", MEASURES)
def test_rows_without_image_tokens_score_zero(measure):
    hidden, vision = random_case(0)
    vision[1] = False
    result = scores(hidden, vision, 5, measure)
    assert torch.equal(result[1], torch.zeros(5))
    assert result[0].abs().sum() > 0
    none = scores(hidden, torch.zeros_like(vision), 5, measure)
    assert torch.equal(none, torch.zeros(3, 5))


@pytest.mark.parametrize("measure", MEASURES)
def test_bf16_inputs_close_to_float32(measure):
    hidden, vision = random_case(1, S=40, T=10, D=32)
    bf16 = [h.to(torch.bfloat16) for h in hidden]
    ours = scores(bf16, vision, 10, measure)
    # the reference sees the same bf16-rounded values, computed in float64: only accumulation differs
    ref = reference([h.double() for h in bf16], vision, 10, measure)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-4)
    # and against the unrounded float32 inputs, the difference is bf16's input rounding (~2^-8 relative)
    ref32 = reference(hidden, vision, 10, measure)
    scale = ref32.abs().max().item()
    assert (ours.double() - ref32).abs().max().item() < 0.02 * scale


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("chunk_bytes", [1, None])
def test_inputs_are_not_modified(measure, chunk_bytes):
    # float32 hidden states: a one-position chunk of one row is a view of the caller's tensor
    hidden, vision = random_case(4, B=1, T=3, dtype=torch.float32)
    vision[0, :3] = True
    before = [h.clone() for h in hidden]
    scores(hidden, vision, 3, measure, chunk_bytes=chunk_bytes)
    assert all(torch.equal(h, b) for h, b in zip(hidden, before))


def test_independent_of_other_rows():
    hidden, vision = random_case(2)
    full = pepo.perception_scores(hidden, vision, 5)
    alone = pepo.perception_scores([h[:1] for h in hidden], vision[:1], 5)
    torch.testing.assert_close(full[:1], alone)


@pytest.mark.parametrize("measure", MEASURES)
def test_independent_of_padding_content(measure):
    # Positions that are neither image tokens nor completion tokens (prompt text, padding) must
    # not count: fill them with large junk and the scores stay bit for bit the same.
    T = 5
    hidden, vision = random_case(3, T=T)
    outside = ~vision
    outside[:, -T:] = False
    assert outside.any(1).all()  # every row has such positions
    g = torch.Generator().manual_seed(7)
    junk = [torch.where(outside.unsqueeze(-1), 1e4 * torch.randn(h.shape, generator=g, dtype=h.dtype), h) for h in hidden]
    clean = scores(hidden, vision, T, measure)
    torch.testing.assert_close(scores(junk, vision, T, measure), clean, rtol=0, atol=0)


def test_bad_arguments_name_the_problem():
    hidden, vision = random_case(3)
    with pytest.raises(ValueError, match="unknown measure 'cos'"):
        pepo.perception_scores(hidden, vision, 5, measure="cos")
    with pytest.raises(ValueError, match="logits_to_keep"):
        pepo.perception_scores(hidden, vision, 0)
    with pytest.raises(ValueError, match="vision_mask must be"):
        pepo.perception_scores(hidden, vision[:, :-1], 5)
    with pytest.raises(ValueError, match="output_hidden_states"):
        pepo.perception_scores([], vision, 5)


@pytest.mark.parametrize("measure", MEASURES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), prefix=st.integers(1, 13), chunk=st.integers(1, 4000), distinct=st.integers(1, 3))
def test_a_shared_prefix_in_two_parts_scores_as_the_joined_tensor_bit_for_bit(measure, seed, prefix, chunk, distinct):
    # a shared-prompt forward's hidden states: row b is cat(prefix[rows[b]], rest[b]), prompt length anywhere
    # (image tokens in the prefix only, or in both parts; chunks straddling the boundary)
    from pepo.core.perception import SharedPrefixHidden

    g = torch.Generator().manual_seed(seed)
    B, S, T, D = 3, 14, 5, 8
    rows = torch.randint(0, distinct, (B,), generator=g)
    parts = [SharedPrefixHidden(torch.randn(distinct, prefix, D, generator=g), rows,
                                torch.randn(B, S - prefix, D, generator=g)) for _ in range(3)]
    # rows of one prompt share its image tokens; the rest may hold some too (then the joined span is read)
    vision = torch.cat([(torch.rand(distinct, prefix, generator=g) < 0.4)[rows],
                        torch.rand(B, S - prefix, generator=g) < 0.4 * (seed % 2)], dim=1)
    vision[:, S - T :] = False
    vision[rows == rows[0], 0] = True
    with mock.patch("pepo.core.perception.l1_by_sorting", lambda device: measure == "l1_sorted"):
        split = pepo.core.PerceptionAccumulator(vision, T, measure.removesuffix("_sorted"), chunk_bytes=chunk)
        joined = pepo.core.PerceptionAccumulator(vision, T, measure.removesuffix("_sorted"), chunk_bytes=chunk)
        for hidden in parts:
            split.add(hidden)
            joined.add(hidden.joined())
        assert torch.equal(split.result(), joined.result())
