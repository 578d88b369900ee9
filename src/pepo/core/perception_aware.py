"""PAPO and VPPO, the other two token-level perception-aware RL objectives, as pure functions.

Both compare, on the sampled tokens ``o_t``, the policy's log-probs with the log-probs the policy gives
the same tokens when the image is degraded by random patch blackening (``pi_mask``). The masking itself
needs processor knowledge and lives in :mod:`pepo.patch_masking`; everything here is tensors in,
tensors out (shape legend in :mod:`pepo.core`).

**PAPO** (Wang et al., "Perception-Aware Policy Optimization for Multimodal Reasoning", arXiv 2507.06448;
released code ``MikeWangWZHL/PAPO``, ``verl/workers/actor/dp_actor.py``)::

    k_t       = clamp(log pi_mask(o_t) - log pi_theta(o_t), -20, 20)
    KL_prcp_t = clamp(exp(k_t) - k_t - 1, -10, 10)                       (k3 estimate, clamps as released)
    L = L_base - gamma * mean(KL_prcp) + eta_ori * mean(-log pi_theta) + eta_aug * mean(-log pi_mask)

means over the completion mask. The implicit perception loss is *maximised* (the policy should depend
on the image); the two entropy terms penalise entropy against KL hacking. As released
(``RECOMPUTE_AUG_LOG_PROBS=False``), ``pi_mask`` comes from a no-grad forward at rollout time, so the
``eta_aug`` term shifts the loss value but carries no gradient.

**VPPO** (Huang et al., "Spotlight on Token Perception for Multimodal Reinforcement Learning", arXiv
2510.09285; released code ``huaixuheqing/VPPO-RL``, ``verl/workers/actor/dp_actor.py``)::

    S_t = clamp(k3(log pi_mask(o_t) - log pi_old(o_t)), 0, 10)          token visual dependency
    keep_t = t among the top ceil(k * L_b) tokens of response b by S_t  token gradient filtering
    n_b = min-max normalisation of mean_t S_t over the batch's responses
    A_b <- A_b * (beta_min + n_b * (beta_max - beta_min)),  beta_max = beta_min + (1 - beta_min) / mean(n)

and the policy-gradient term of a token not kept is zeroed (the loss is still averaged over all the
response's tokens), plus an entropy penalty ``coef * mean(-log pi_theta)``.
"""

from __future__ import annotations

import torch

from pepo.core.checks import check_finite

# Clamps of the released code (verl core_algos.compute_kl "low_var_kl"; VPPO dp_actor)
LOG_RATIO_CLAMP = 20.0
PAPO_KL_CLAMP = (-10.0, 10.0)
VPPO_DEPENDENCY_CLAMP = (0.0, 10.0)
# VPPO leaves the advantages alone when the batch's scores span less than this (released code)
SHAPING_MIN_SPREAD = 1e-6
SHAPING_EPS = 1e-8


def k3_estimate(
    perturbed_logps: torch.Tensor, logps: torch.Tensor, clamp: tuple[float, float] = PAPO_KL_CLAMP
) -> torch.Tensor:
    """Schulman's k3 estimate ``exp(k) - k - 1`` of ``KL(pi || pi_perturbed)`` per sampled token.

    Args:
        perturbed_logps: ``(B, T)`` log-probs of the sampled tokens under the perturbed input.
        logps: ``(B, T)`` log-probs of the same tokens under the original input.
        clamp: ``(low, high)`` bounds of the result; ``k`` itself is clamped to ``[-20, 20]`` first.

    Returns:
        ``(B, T)`` float32, differentiable with respect to whichever input requires grad.
    """
    if perturbed_logps.shape != logps.shape:
        raise ValueError(f"k3_estimate: shapes differ, {tuple(perturbed_logps.shape)} vs {tuple(logps.shape)}")
    k = (perturbed_logps.float() - logps.float()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (k.exp() - k - 1).clamp(*clamp)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scalar mean of ``(B, T)`` ``values`` over the tokens where ``mask`` is set (0 when none is)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _image_token_mask(completion_mask: torch.Tensor, has_image: torch.Tensor | None) -> torch.Tensor:
    valid = completion_mask.bool()
    if has_image is None:
        return valid
    return valid & has_image.to(device=valid.device, dtype=torch.bool).unsqueeze(1)


def papo_regulariser(
    logps: torch.Tensor,
    masked_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    gamma: float,
    eta_ori: float,
    eta_aug: float,
    has_image: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PAPO's terms added to the base loss: ``-gamma * KL_prcp + eta_ori * H_ori + eta_aug * H_aug``.

    Args:
        logps: ``(B, T)`` log pi_theta of the sampled tokens (with grad: the loss's policy forward).
        masked_logps: ``(B, T)`` log pi_mask of the same tokens (the no-grad forward on masked images).
        completion_mask: ``(B, T)`` 1 on the tokens the loss counts.
        gamma, eta_ori, eta_aug: the coefficients (released PAPO_G: 0.02, 0.05, 0.05).
        has_image: optional ``(B,)`` bool. A row without an image has nothing to mask: it is left out
            of the ``KL_prcp`` and ``H_aug`` means (``H_ori`` still counts it).

    Returns:
        ``(scalar term, (B, T) detached KL_prcp)``: each mean is a token mean over this micro-batch's
        counted tokens (the released code's ``masked_mean`` / ``loss_avg_mode="token"``).
    """
    for name, value in (("gamma", gamma), ("eta_ori", eta_ori), ("eta_aug", eta_aug)):
        check_finite("papo_regulariser", name, value)
    valid = completion_mask.bool()
    image_tokens = _image_token_mask(completion_mask, has_image)
    kl_prcp = k3_estimate(masked_logps.detach(), logps, PAPO_KL_CLAMP)
    term = (
        -gamma * masked_token_mean(kl_prcp, image_tokens)
        + eta_ori * masked_token_mean(-logps.float(), valid)
        + eta_aug * masked_token_mean(-masked_logps.detach().float(), image_tokens)
    )
    return term, kl_prcp.detach()


def entropy_penalty(logps: torch.Tensor, completion_mask: torch.Tensor, coef: float) -> torch.Tensor:
    """``coef * mean(-log pi_theta(o_t))`` over the counted tokens: VPPO's entropy penalty (scalar)."""
    check_finite("entropy_penalty", "coef", coef)
    return coef * masked_token_mean(-logps.float(), completion_mask.bool())


@torch.no_grad()
def visual_dependency(masked_logps: torch.Tensor, rollout_logps: torch.Tensor) -> torch.Tensor:
    """VPPO's token visual dependency ``S_t``: the k3 estimate clamped to ``[0, 10]``, ``(B, T)`` float32."""
    return k3_estimate(masked_logps, rollout_logps, VPPO_DEPENDENCY_CLAMP)


@torch.no_grad()
def top_dependency_mask(dependency: torch.Tensor, completion_mask: torch.Tensor, k: float) -> torch.Tensor:
    """``(B, T)`` bool: per response, its ``ceil(k * L_b)`` valid tokens of highest ``S_t``.

    ``L_b`` is the response's number of valid tokens; ties are broken by position (earlier first) so
    the mask is deterministic. ``k = 1`` keeps every valid token.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"top_dependency_mask: k must be in (0, 1], got {k}")
    valid = completion_mask.bool()
    lengths = valid.sum(1)
    keep_count = torch.ceil(lengths.double() * k).long()
    scores = torch.where(valid, dependency.float(), -torch.inf)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.arange(scores.size(1), device=scores.device).expand_as(scores)
    keep = torch.zeros_like(valid)
    keep.scatter_(1, order, ranks < keep_count.unsqueeze(1))
    return keep & valid


@torch.no_grad()
def trajectory_scale(
    dependency: torch.Tensor, completion_mask: torch.Tensor, beta_min: float, has_image: torch.Tensor | None = None
) -> torch.Tensor:
    """VPPO's per-response advantage scale ``beta_min + n_b * (beta_max - beta_min)``, ``(B,)`` float32.

    ``n_b`` is the response's mean ``S_t`` min-max normalised over the responses that take part (a
    valid token and, if ``has_image`` is given, an image); ``beta_max = beta_min + (1 - beta_min) /
    mean(n)``, so the scales of those responses average exactly 1. Every other response, and every
    response of a batch whose scores span less than ``1e-6`` or with fewer than two taking part,
    gets scale 1 (as released).
    """
    if not 0.0 <= beta_min <= 1.0:
        raise ValueError(f"trajectory_scale: beta_min must be in [0, 1], got {beta_min}")
    valid = completion_mask.bool()
    taking_part = valid.any(1)
    if has_image is not None:
        taking_part = taking_part & has_image.to(device=valid.device, dtype=torch.bool)
    lengths = valid.sum(1).clamp_min(1)
    scores = (dependency.float() * valid).sum(1) / lengths
    scale = torch.ones_like(scores)
    if int(taking_part.sum()) < 2:
        return scale
    part = scores[taking_part]
    low, high = part.min(), part.max()
    if float(high - low) <= SHAPING_MIN_SPREAD:
        return scale
    normalised = (part - low) / (high - low)
    beta_max = beta_min + (1.0 - beta_min) / (normalised.mean() + SHAPING_EPS)
    scale[taking_part] = beta_min + normalised * (beta_max - beta_min)
    return scale


@torch.no_grad()
def vppo_advantages(
    advantages: torch.Tensor,
    dependency: torch.Tensor,
    completion_mask: torch.Tensor,
    k: float,
    beta_min: float,
    has_image: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token advantages ``A_b * scale_b * keep_t`` for the clipped surrogate.

    Zeroing a token's advantage zeroes its clipped policy-gradient term (``-min(r A, clip(r) A) = 0``
    for ``A = 0``) while the token still counts in the loss's mean and in the KL term: the released
    ``final_pg_loss * loss_token_mask`` exactly.

    Args:
        advantages: ``(B,)`` (or ``(B, T)``) advantages of the base algorithm.
        dependency: ``(B, T)`` ``S_t`` from :func:`visual_dependency`.
        completion_mask: ``(B, T)`` 1 on valid completion tokens.
        k: fraction of each response's tokens that keep their gradient (released: 0.2; 7B script 0.4).
        beta_min: lower end of the advantage scale (released: 0.8; 7B script 0.9).
        has_image: optional ``(B,)`` bool; a row without an image keeps every token and scale 1.

    Returns:
        ``((B, T) advantages, (B, T) bool keep mask, (B,) scale)``.
    """
    keep = top_dependency_mask(dependency, completion_mask, k)
    if has_image is not None:
        no_image = ~has_image.to(device=keep.device, dtype=torch.bool)
        keep = keep | (no_image.unsqueeze(1) & completion_mask.bool())
    scale = trajectory_scale(dependency, completion_mask, beta_min, has_image)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    shaped = advantages * scale.to(advantages.dtype).unsqueeze(1) * keep.to(advantages.dtype)
    return shaped, keep, scale

