"""Fusion of perception and exploration into unit-mean token weights (``docs/method.md``, Token weights).

Per response, over its valid tokens only (``eps = 1e-6``):

    v~ = (v - min v) / max(max v - min v, eps)
    h~ = (h - min h) / max(max h - min h, eps)
    c  = (v~ + h~) - mean_valid(v~ + h~)
    g  = 1 + alpha * tanh(c)                  smooth gate, alpha = gate strength
    z  = v * g / tau                          raw v, not v~; tau = gate temperature
    w  = N_b * softmax_valid(z)               0 on masked positions

so ``w`` has mean 1 over every response's valid tokens and the entropy only modulates the
perception prior. Modes (paper Table 7): ``pepo`` (both signals), ``perception`` (alpha = 0),
``exploration`` (the entropy in place of the perception score).

The weights are a constant for the optimiser (returned detached). The public release does not
detach them; at on-policy (one optimisation step per generation) the gradient through ``w`` is
exactly zero anyway because ``sum_t w[b, t] = N_b`` for every parameter value, so detaching only
saves that backward work.

A new mode is one function plus its registration::

    @register_weighting_mode("my_mode")
    def my_mode(perception, entropy, valid, gate_alpha):  # all (B, T); returns z * tau, (B, T)
        ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-6

# name -> fn(perception, entropy, valid, gate_alpha) -> (B, T) float32 score, i.e. z * tau
WeightingMode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
WEIGHTING_MODES: dict[str, WeightingMode] = {}


def register_weighting_mode(name: str) -> Callable[[WeightingMode], WeightingMode]:
    """Decorator adding a weighting mode to :data:`WEIGHTING_MODES` under ``name``."""

    def decorator(fn: WeightingMode) -> WeightingMode:
        if name in WEIGHTING_MODES:
            raise ValueError(f"weighting mode {name!r} is already registered")
        WEIGHTING_MODES[name] = fn
        return fn

    return decorator


def _masked_min_max(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` min-max normalisation over each row's valid tokens; 0 on masked positions."""
    lo = torch.where(valid, x, torch.inf).amin(1, keepdim=True)
    hi = torch.where(valid, x, -torch.inf).amax(1, keepdim=True)
    scaled = (x - lo) / (hi - lo).clamp_min(EPS)
    return torch.where(valid, scaled, 0.0)


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, 1)`` mean over each row's valid tokens (0 for a row without any)."""
    return (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)


def _gate(signal: torch.Tensor, valid: torch.Tensor, gate_alpha: float) -> torch.Tensor:
    """``1 + alpha * tanh(signal - mean_valid(signal))``."""
    return 1.0 + gate_alpha * torch.tanh(signal - _masked_mean(signal, valid))


@register_weighting_mode("pepo")
def pepo_scores(perception: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, gate_alpha: float) -> torch.Tensor:
    """``v * (1 + alpha * tanh(c))`` with ``c`` the centred sum of min-max normalised v and h."""
    combined = _masked_min_max(perception, valid) + _masked_min_max(entropy, valid)
    return perception * _gate(combined, valid, gate_alpha)


@register_weighting_mode("perception")
def perception_only_scores(
    perception: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, gate_alpha: float
) -> torch.Tensor:
    """``v``: the perception prior alone (alpha = 0)."""
    return perception


@register_weighting_mode("exploration")
def exploration_only_scores(
    perception: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, gate_alpha: float
) -> torch.Tensor:
    """``h * (1 + alpha * tanh(h~ - mean_valid h~))``: the entropy in place of the perception score."""
    return entropy * _gate(_masked_min_max(entropy, valid), valid, gate_alpha)


@torch.no_grad()
def token_weights(
    perception: torch.Tensor,
    entropy: torch.Tensor,
    completion_mask: torch.Tensor,
    gate_alpha: float = 0.05,
    gate_temperature: float = 1.0,
    mode: str = "pepo",
    has_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit-mean token weights of every response.

    Args:
        perception: ``(B, T)`` perception prior from :func:`pepo.perception_scores`.
        entropy: ``(B, T)`` token entropies from :func:`pepo.token_entropy`.
        completion_mask: ``(B, T)`` 1 (or True) on valid completion tokens, 0 on padding.
        gate_alpha: gate strength ``alpha >= 0`` (paper: 0.05).
        gate_temperature: softmax temperature ``tau > 0`` (public recipes: 1.8; default 1.0).
        mode: a key of :data:`WEIGHTING_MODES` (``pepo``, ``perception``, ``exploration``).
        has_image: optional ``(B,)`` bool. Rows marked False have no perception prior: they get
            all-1 weights in every mode, so PEPO reduces to the base algorithm there. Without
            it, in ``pepo`` and ``perception`` modes, a row whose perception is constant (what
            :func:`pepo.perception_scores` returns for an image-less row) gets all-1 weights too.

    Returns:
        ``(B, T)`` float32, detached: ``>= 0``, finite, mean exactly 1 (to float32 rounding) over
        each row's valid tokens and 0 on masked positions. A row without valid tokens is all 0.
    """
    if mode not in WEIGHTING_MODES:
        raise ValueError(f"token_weights: unknown mode {mode!r}; choose one of {sorted(WEIGHTING_MODES)}")
    if gate_alpha < 0:
        raise ValueError(f"token_weights: gate_alpha must be >= 0, got {gate_alpha}")
    if gate_temperature <= 0:
        raise ValueError(f"token_weights: gate_temperature must be > 0, got {gate_temperature}")
    if perception.shape != completion_mask.shape or entropy.shape != completion_mask.shape:
        raise ValueError(
            "token_weights: perception, entropy and completion_mask must share one (B, T) shape, got "
            f"{tuple(perception.shape)}, {tuple(entropy.shape)}, {tuple(completion_mask.shape)}"
        )
    valid = completion_mask.bool()
    perception = torch.where(valid, perception.detach().float(), 0.0)
    entropy = torch.where(valid, entropy.detach().float(), 0.0)

    z = WEIGHTING_MODES[mode](perception, entropy, valid, float(gate_alpha)) / gate_temperature
    z = torch.where(valid, z, -torch.inf)
    z = z - z.amax(1, keepdim=True).nan_to_num(neginf=0.0)  # stable softmax; rows with no valid token stay -inf
    unnormalised = torch.exp(z)  # exp(-inf) = 0 on masked positions
    total = unnormalised.sum(1, keepdim=True)
    n_valid = valid.sum(1, keepdim=True).float()
    weights = torch.where(total > 0, unnormalised * (n_valid / total.clamp_min(torch.finfo(torch.float32).tiny)), 0.0)

    if has_image is not None:
        no_image = ~has_image.to(device=weights.device, dtype=torch.bool)
        weights = torch.where(no_image.unsqueeze(1) & valid, 1.0, weights)
    return weights
