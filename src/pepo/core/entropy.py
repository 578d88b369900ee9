"""Exploration signal: per-token predictive entropy (``docs/method.md``, Exploration signal).

    p       = softmax(logits[b, t] / temperature)
    h[b, t] = -sum_k p_k log p_k = logsumexp(x) - sum_k p_k x_k,   x = logits / temperature

The second form is what we compute: it needs one softmax and no log-probability tensor. As TRL's
``entropy_from_logits``, the ``(B, T)`` positions are flattened and taken a chunk at a time, so the
float32 copy is one chunk, never ``(B, T, V)``; a chunk is sized in bytes per device
(:mod:`pepo.core.chunking`). PEPOTrainer does not call this: it uses the entropies TRL's own forward
returns.
"""

from __future__ import annotations

import torch

from pepo.core.checks import check_finite
from pepo.core.chunking import FLOAT_BYTES, default_chunk_bytes, positions_per_chunk


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_bytes: int | None = None) -> torch.Tensor:
    """Entropy of the sampling distribution at every position.

    Args:
        logits: ``(B, T, V)`` raw logits (any float dtype).
        temperature: the sampling temperature the completions were drawn with (> 0).
        chunk_bytes: float32 scratch of one chunk of positions (each ``V`` floats, about three copies
            alive at once); default :func:`~pepo.core.default_chunk_bytes` of the logits' device.

    Returns:
        ``(B, T)`` float32 entropies in nats, ``>= 0``.
    """
    if logits.dim() != 3:
        raise ValueError(f"token_entropy: logits must be (B, T, V), got shape {tuple(logits.shape)}")
    check_finite("token_entropy", "temperature", temperature)
    if temperature <= 0:
        raise ValueError(f"token_entropy: temperature must be > 0, got {temperature}")
    if chunk_bytes is None:
        chunk_bytes = default_chunk_bytes(logits.device)
    check_finite("token_entropy", "chunk_bytes", chunk_bytes)
    if chunk_bytes <= 0:
        raise ValueError(f"token_entropy: chunk_bytes must be > 0, got {chunk_bytes}")
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T, V), a view when logits are contiguous
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    step = positions_per_chunk(chunk_bytes, 3 * logits.shape[-1] * FLOAT_BYTES)  # x, probs, probs * x
    zero = torch.zeros((), device=logits.device)
    for start in range(0, flat.shape[0], step):
        x = flat[start : start + step].float()
        if temperature != 1.0:
            x = x / temperature  # not in place: .float() of float32 logits is the caller's tensor
        probs = torch.softmax(x, dim=-1)
        # where p_k == 0 the term is 0 even if x_k = -inf (a suppressed token), not nan
        expected_logit = torch.where(probs > 0, probs.mul_(x), zero).sum(-1)
        out[start : start + step] = torch.logsumexp(x, dim=-1).sub_(expected_logit).clamp_min_(0.0)  # rounding: -1e-7
    return out.view(logits.shape[:2])
