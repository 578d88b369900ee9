import pytest
import torch

import pepo


def test_progressive_lambda():
    assert pepo.progressive_lambda(0, 100) == 0.0
    assert pepo.progressive_lambda(25, 100) == 0.25
    assert pepo.progressive_lambda(100, 100) == 1.0
    assert pepo.progressive_lambda(250, 100) == 1.0
    with pytest.raises(ValueError, match="max_steps"):
        pepo.progressive_lambda(1, 0)
    with pytest.raises(ValueError, match="step"):
        pepo.progressive_lambda(-1, 10)


def test_loss_multiplier():
    w = torch.tensor([[0.5, 1.5, 0.0]])
    # lam = 0.25: 0.75 + 0.25 * w = (0.875, 1.125, 0.75)
    torch.testing.assert_close(pepo.loss_multiplier(w, 0.25), torch.tensor([[0.875, 1.125, 0.75]]))
    assert torch.equal(pepo.loss_multiplier(w, 0.0), torch.ones(1, 3))
    assert torch.equal(pepo.loss_multiplier(w, 1.0), w)
    with pytest.raises(ValueError, match="lam"):
        pepo.loss_multiplier(w, 1.5)
