"""The bf16 path of the cosine / dot prior (accelerators): bf16 hidden states read once, no float32
copy, the float32 operand split into three bf16 terms. On the CPU it runs only when a test adds "cpu" to
``BF16_SPLIT_DEVICES`` (the matrix product then multiplies float32 copies, the same sums); the CUDA
kernel itself (``bmm(..., out_dtype=float32)``) is checked against float64 by benchmarks/gpu_check.py's
agreement line on the GPU."""

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pepo
from pepo.core import perception
from tests.core.reference import naive_perception


def bf16_case(seed, B, S, T, D, layers=3, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    hidden = [(scale * torch.randn(B, S, D, generator=g)).to(torch.bfloat16) for _ in range(layers)]
    vision = torch.rand(B, S, generator=g) < 0.4
    vision[:, S - T :] = False
    vision[0, 0] = True
    return hidden, vision


def split_path_scores(hidden, vision, T, measure):
    with mock.patch.object(perception, "BF16_SPLIT_DEVICES", ("cuda", "cpu")), \
            mock.patch.object(perception, "_mean_similarity_to_image", side_effect=AssertionError("float32 path")):
        return pepo.perception_scores(hidden, vision, T, measure=measure)


@pytest.mark.parametrize("measure", ["cosine", "dot"])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), S=st.integers(4, 40), D=st.integers(1, 70),
       scale=st.sampled_from([1e-3, 1.0, 300.0]))
def test_the_split_path_equals_float64_to_float32_rounding(measure, seed, B, S, D, scale):
    T = max(1, S // 3)
    hidden, vision = bf16_case(seed, B, S, T, D, scale=scale)
    ours = split_path_scores(hidden, vision, T, measure)
    assert ours.dtype == torch.float32
    reference = naive_perception(hidden, vision, T, measure)
    float32_path = pepo.perception_scores(hidden, vision, T, measure=measure)
    # as close to float64 as the float32 path, up to float32 rounding of terms as large as |h|^2 D (dot) or 1 (cosine)
    magnitude = 1.0 if measure == "cosine" else max(h.float().abs().max().item() for h in hidden) ** 2 * D
    ours_error = (ours.double() - reference).abs().max().item()
    float32_error = (float32_path.double() - reference).abs().max().item()
    assert ours_error <= 2 * float32_error + 1e-6 * magnitude

@pytest.mark.parametrize("measure", ["cosine", "dot"])
def test_the_split_path_takes_shared_prefix_parts(measure):
    g = torch.Generator().manual_seed(3)
    B, S, T, D, P = 4, 20, 6, 16, 12
    rows = torch.tensor([0, 0, 1, 1])
    parts = [perception.SharedPrefixHidden(torch.randn(2, P, D, generator=g).bfloat16(), rows,
                                           torch.randn(B, S - P, D, generator=g).bfloat16()) for _ in range(2)]
    vision = torch.zeros(B, S, dtype=torch.bool)
    vision[:, 2:9] = True
    vision[2:, 7:9] = False  # the second prompt has fewer image tokens
    joined = [part.joined() for part in parts]
    with mock.patch.object(perception, "BF16_SPLIT_DEVICES", ("cuda", "cpu")):
        from_parts = pepo.core.PerceptionAccumulator(vision, T, measure)
        for part in parts:
            from_parts.add(part)
        ours = from_parts.result()
    reference = naive_perception(joined, vision, T, measure)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-6)


def test_three_bf16_terms_hold_a_float32_value():
    x = torch.randn(10_000, dtype=torch.float64).float() * torch.logspace(-20, 20, 10_000).float()
    terms = perception._split_bf16(x, 0)
    assert terms.dtype == torch.bfloat16 and terms.shape == (3, 10_000)
    back = terms.double().sum(0)
    assert ((back - x.double()).abs() / x.double().abs()).max() < 2**-23


def test_float32_hidden_states_and_the_cpu_keep_the_float32_path():
    hidden, vision = bf16_case(0, 2, 12, 4, 8)
    with mock.patch.object(perception, "_mean_similarity_bf16", side_effect=AssertionError("bf16 path")):
        pepo.perception_scores(hidden, vision, 4)  # bf16 on the CPU: float32 path by default
        with mock.patch.object(perception, "BF16_SPLIT_DEVICES", ("cuda", "cpu")):
            pepo.perception_scores([h.float() for h in hidden], vision, 4)  # float32 states: float32 path
