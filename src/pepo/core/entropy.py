"""Exploration signal: per-token predictive entropy (PEPO_SPEC.md section 3).

    p       = softmax(logits[b, t] / temperature)
    h[b, t] = -sum_k p_k log p_k = logsumexp(x) - sum_k p_k x_k,   x = logits / temperature

The second form is what we compute: it needs one softmax and no log-probability tensor.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0, rows_per_chunk: int = 1) -> torch.Tensor:
    """Entropy of the sampling distribution at every position.

    Args:
        logits: ``(B, T, V)`` raw logits (any float dtype).
        temperature: the sampling temperature the completions were drawn with (> 0).
        rows_per_chunk: rows converted to float32 at once; bounds the extra memory to
            ``rows_per_chunk * T * V`` floats instead of a second ``(B, T, V)`` tensor.

    Returns:
        ``(B, T)`` float32 entropies in nats, ``>= 0``.
    """
    if logits.dim() != 3:
        raise ValueError(f"token_entropy: logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"token_entropy: temperature must be > 0, got {temperature}")
    out = torch.empty(logits.shape[:2], dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], rows_per_chunk):
        x = logits[start : start + rows_per_chunk].float()
        if temperature != 1.0:
            x = x / temperature
        probs = torch.softmax(x, dim=-1)
        # where p_k == 0 the term is 0 even if x_k = -inf (a suppressed token), not nan
        expected_logit = torch.where(probs > 0, probs * x, torch.zeros((), device=x.device)).sum(-1)
        entropy = torch.logsumexp(x, dim=-1) - expected_logit
        out[start : start + rows_per_chunk] = entropy.clamp_min_(0.0)  # rounding can give -1e-7
    return out
