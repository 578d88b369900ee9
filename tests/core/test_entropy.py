import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pepo
from tests.core.reference import naive_entropy


def test_uniform_and_peaked():
    # uniform over 10 tokens: log(10) = 2.302585; a near one-hot: ~0
    logits = torch.zeros(1, 2, 10)
    logits[0, 1, 3] = 100.0
    h = pepo.token_entropy(logits)
    assert h[0, 0].item() == pytest.approx(math.log(10), abs=1e-6)
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_temperature_scales_logits():
    # two tokens with logits (0, 2) at temperature 2 are logits (0, 1): p = (0.268941, 0.731059),
    # h = -(0.268941 ln 0.268941 + 0.731059 ln 0.731059) = 0.582203
    h = pepo.token_entropy(torch.tensor([[[0.0, 2.0]]]), temperature=2.0)
    assert h.item() == pytest.approx(0.582203, abs=1e-6)


def test_suppressed_tokens_are_not_nan():
    logits = torch.tensor([[[0.0, 0.0, -torch.inf]]])
    assert pepo.token_entropy(logits).item() == pytest.approx(math.log(2), abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 2000), temperature=st.floats(0.3, 3.0))
def test_matches_definition(seed, chunk, temperature):
    # chunk_bytes from below one position (3 x 37 floats = 444 bytes) to all 12 positions at once
    logits = 5 * torch.randn(3, 4, 37, generator=torch.Generator().manual_seed(seed))
    h = pepo.token_entropy(logits, temperature=temperature, chunk_bytes=chunk)
    assert h.dtype == torch.float32 and (h >= 0).all()
    torch.testing.assert_close(h.double(), naive_entropy(logits, temperature), rtol=1e-5, atol=1e-5)


def test_bf16_logits():
    logits = torch.randn(2, 3, 50)
    h = pepo.token_entropy(logits.to(torch.bfloat16))
    torch.testing.assert_close(h.double(), naive_entropy(logits.to(torch.bfloat16).double()), rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        pepo.token_entropy(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        pepo.token_entropy(torch.zeros(1, 1, 2), temperature=0.0)
