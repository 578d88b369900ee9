"""Progressive schedule and the token-level advantage multiplier (``docs/method.md``, Schedule and token-level advantage).

    lambda  = min(1, global_step / max_steps)
    A[b, t] = A_b * ((1 - lambda) + lambda * w[b, t])

Training starts as the plain base algorithm (lambda = 0) and ends fully token-weighted.
"""

from __future__ import annotations

import torch

from pepo.core.checks import check_finite


def progressive_lambda(step: int, max_steps: int) -> float:
    """Mixing coefficient ``lambda = min(1, step / max_steps)`` in ``[0, 1]``.

    Args:
        step: the optimiser's global step (0 at the start of training).
        max_steps: total optimiser steps of the run; must be positive.
    """
    check_finite("progressive_lambda", "step", step)
    check_finite("progressive_lambda", "max_steps", max_steps)
    if max_steps <= 0:
        raise ValueError(f"progressive_lambda: max_steps must be > 0, got {max_steps}")
    if step < 0:
        raise ValueError(f"progressive_lambda: step must be >= 0, got {step}")
    return min(1.0, step / max_steps)


def loss_multiplier(weights: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-token multiplier ``(1 - lam) + lam * w`` for the clipped policy loss.

    Args:
        weights: ``(B, T)`` token weights from :func:`pepo.token_weights` (mean 1 per row).
        lam: mixing coefficient in ``[0, 1]``, e.g. from :func:`progressive_lambda`.

    Returns:
        ``(B, T)`` tensor, same dtype as ``weights``. Since ``weights`` has mean 1 over a row's
        valid tokens, so does the multiplier, for every ``lam``.
    """
    check_finite("loss_multiplier", "lam", lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"loss_multiplier: lam must be in [0, 1], got {lam}")
    return (1.0 - lam) + lam * weights
