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

A new mode is one function plus its registration, which says what the mode reads::

    @register_weighting_mode("my_mode", needs_entropy=False)
    def my_mode(perception, entropy, valid, gate_alpha):  # all (B, T); returns z * tau, (B, T)
        ...

A mode gets exactly the signals it declares (``needs_perception``, ``needs_entropy``, both True by
default); one it does not declare reaches it as ``None``, so a mode reading an undeclared signal
fails at once instead of weighting by zeros. ``image_rows_only`` (default True) says its weights
mean nothing on a row without an image: :class:`pepo.trainer.PEPOTrainer` then gives such rows
weight 1. The trainer reads these declarations and nothing else: the built-in modes are registered
the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pepo.core.checks import check_finite

EPS = 1e-6
# |row sum - N_b| <= MEAN_TOLERANCE * N_b: far above float32 rounding of the sums (eps 1.2e-7, summed
# pairwise), far below any real breakage (a NaN, a whole row at 0)
MEAN_TOLERANCE = 1e-4

# fn(perception, entropy, valid, gate_alpha) -> (B, T) float32 score, i.e. z * tau
ScoreFunction = Callable[[torch.Tensor | None, torch.Tensor | None, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class WeightingMode:
    """A registered weighting mode: its score function and what it needs from the policy forward.

    Attributes:
        name: the key of :data:`WEIGHTING_MODES` (``PEPOConfig.weighting``).
        scores: ``fn(perception, entropy, valid, gate_alpha) -> (B, T)`` score ``z * tau``.
        needs_perception: the trainer computes the perception prior (hidden-state hooks) for it;
            without, ``perception`` is ``None``.
        needs_entropy: ``entropy`` is the token entropies; without, ``None``.
        image_rows_only: rows without an image get weight 1 (the base algorithm) in the trainer.
    """

    name: str
    scores: ScoreFunction
    needs_perception: bool = True
    needs_entropy: bool = True
    image_rows_only: bool = True


WEIGHTING_MODES: dict[str, WeightingMode] = {}


def register_weighting_mode(
    name: str, *, needs_perception: bool = True, needs_entropy: bool = True, image_rows_only: bool = True
) -> Callable[[ScoreFunction], ScoreFunction]:
    """Decorator adding a weighting mode to :data:`WEIGHTING_MODES` under ``name`` (see the module docstring)."""
    flags = {"needs_perception": needs_perception, "needs_entropy": needs_entropy, "image_rows_only": image_rows_only}
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"register_weighting_mode({name!r}): {flag} must be True or False, got {value!r}")

    def decorator(fn: ScoreFunction) -> ScoreFunction:
        if name in WEIGHTING_MODES:
            raise ValueError(f"weighting mode {name!r} is already registered")
        WEIGHTING_MODES[name] = WeightingMode(name, fn, **flags)
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


@register_weighting_mode("perception", needs_entropy=False)
def perception_only_scores(
    perception: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, gate_alpha: float
) -> torch.Tensor:
    """``v``: the perception prior alone (alpha = 0)."""
    return perception


@register_weighting_mode("exploration", needs_perception=False, image_rows_only=False)
def exploration_only_scores(
    perception: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, gate_alpha: float
) -> torch.Tensor:
    """``h * (1 + alpha * tanh(h~ - mean_valid h~))``: the entropy in place of the perception score."""
    return entropy * _gate(_masked_min_max(entropy, valid), valid, gate_alpha)


@torch.no_grad()
def token_weights(
    perception: torch.Tensor | None,
    entropy: torch.Tensor | None,
    completion_mask: torch.Tensor,
    gate_alpha: float = 0.05,
    gate_temperature: float = 1.0,
    mode: str = "pepo",
    has_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit-mean token weights of every response.

    Args:
        perception: ``(B, T)`` perception prior from :func:`pepo.perception_scores`; may be ``None``
            for a mode registered with ``needs_perception=False``.
        entropy: ``(B, T)`` token entropies from :func:`pepo.token_entropy`; may be ``None`` for a
            mode registered with ``needs_entropy=False``.
        completion_mask: ``(B, T)`` 1 (or True) on valid completion tokens, 0 on padding.
        gate_alpha: gate strength ``alpha >= 0``, finite (paper: 0.05).
        gate_temperature: softmax temperature ``tau > 0``, finite (public recipes: 1.8; default 1.0).
        mode: a key of :data:`WEIGHTING_MODES` (``pepo``, ``perception``, ``exploration``, or registered).
        has_image: optional ``(B,)`` bool. Rows marked False have no perception prior: they get
            all-1 weights in every mode, so PEPO reduces to the base algorithm there. Without
            it, in ``pepo`` and ``perception`` modes, a row whose perception is constant (what
            :func:`pepo.perception_scores` returns for an image-less row) gets all-1 weights too.

    Returns:
        ``(B, T)`` float32, detached: ``>= 0``, finite, mean 1 (to float32 rounding) over each row's
        valid tokens and 0 on masked positions. A row without valid tokens is all 0.

    Raises:
        ValueError: a bad argument (NaN / inf ``gate_alpha`` or ``gate_temperature`` included).
        RuntimeError: the weights came out non-finite or without mean 1 on a row (NaN / inf in a
            signal of a valid token, or a mode's scores NaN, +inf or -inf on all of a row). Checked
            with ``torch._assert_async``: on the CPU it raises here; on a GPU it is a device-side
            assert, reported at the next synchronisation, so a step never waits for the check.
    """
    scorer = _checked_mode(mode, gate_alpha, gate_temperature, perception, entropy, completion_mask)
    valid = completion_mask.bool()
    perception = _valid_signal(perception, valid) if scorer.needs_perception else None
    entropy = _valid_signal(entropy, valid) if scorer.needs_entropy else None

    scores = scorer.scores(perception, entropy, valid, float(gate_alpha))
    if not isinstance(scores, torch.Tensor) or scores.shape != valid.shape:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"token_weights: weighting mode {mode!r} returned {shape}, expected a {tuple(valid.shape)} tensor")
    z = torch.where(valid, scores.float() / gate_temperature, -torch.inf)
    z = z - z.amax(1, keepdim=True).nan_to_num(neginf=0.0)  # stable softmax; rows with no valid token stay -inf
    unnormalised = torch.exp(z)  # exp(-inf) = 0 on masked positions
    total = unnormalised.sum(1, keepdim=True)
    n_valid = valid.sum(1, keepdim=True).float()
    weights = torch.where(total > 0, unnormalised * (n_valid / total.clamp_min(torch.finfo(torch.float32).tiny)), 0.0)

    if has_image is not None:
        no_image = ~has_image.to(device=weights.device, dtype=torch.bool)
        weights = torch.where(no_image.unsqueeze(1) & valid, 1.0, weights)
    _assert_unit_mean(weights, n_valid, mode)
    return weights


def _checked_mode(mode, gate_alpha, gate_temperature, perception, entropy, completion_mask) -> WeightingMode:
    """The registered mode, after every argument check of :func:`token_weights` (``ValueError``)."""
    if mode not in WEIGHTING_MODES:
        raise ValueError(f"token_weights: unknown mode {mode!r}; choose one of {sorted(WEIGHTING_MODES)}")
    check_finite("token_weights", "gate_alpha", gate_alpha)
    check_finite("token_weights", "gate_temperature", gate_temperature)
    if gate_alpha < 0:
        raise ValueError(f"token_weights: gate_alpha must be >= 0, got {gate_alpha}")
    if gate_temperature <= 0:
        raise ValueError(f"token_weights: gate_temperature must be > 0, got {gate_temperature}")
    scorer = WEIGHTING_MODES[mode]
    for name, signal, needed in (("perception", perception, scorer.needs_perception),
                                 ("entropy", entropy, scorer.needs_entropy)):
        if signal is None and needed:
            raise ValueError(f"token_weights: mode {mode!r} needs {name}, got None")
        if signal is not None and signal.shape != completion_mask.shape:
            raise ValueError(
                f"token_weights: perception, entropy and completion_mask must share one (B, T) shape, got {name} "
                f"{tuple(signal.shape)} and completion_mask {tuple(completion_mask.shape)}"
            )
    return scorer


def _valid_signal(signal: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``signal`` detached, in float32, 0 on masked positions (padding content never matters)."""
    return torch.where(valid, signal.detach().float(), 0.0)


def _assert_unit_mean(weights: torch.Tensor, n_valid: torch.Tensor, mode: str) -> None:
    """Raise unless ``weights`` are finite with sum ``N_b`` on every row with a valid token.

    ``torch._assert_async``: no host read on a GPU (a failure is a device-side assert at the next
    synchronisation); on the CPU it raises at once. Three reductions over ``(B, T)``: cheap."""
    row_sum = weights.sum(1, keepdim=True)
    unit_mean = (row_sum - n_valid).abs() <= MEAN_TOLERANCE * n_valid  # False for NaN
    ok = torch.isfinite(weights).all() & (unit_mean | (n_valid == 0)).all()
    torch._assert_async(
        ok,
        f"token_weights: mode {mode!r} gave weights that are not finite with mean 1 over a row's valid tokens: NaN/inf "
        "in the perception or entropy of a valid token, or the mode's scores NaN, +inf, or -inf on a whole row",
    )
