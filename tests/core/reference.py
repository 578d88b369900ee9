"""Naive reference forms of PEPO's math, written straight from docs/method.md for the tests.

Per-row similarity matrices in Python loops, in float64: slow and obviously right.
"""

from __future__ import annotations

import torch


def naive_perception(hidden_states, vision_mask, T, measure="cosine"):
    """(B, T) float64: docs/method.md's double mean over layers and image tokens, entry by entry."""
    B, S, _ = hidden_states[0].shape
    out = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        image_pos = vision_mask[b].nonzero().flatten()
        if len(image_pos) == 0:
            continue
        for h in hidden_states:
            h = h[b].double()
            resp, img = h[S - T :], h[image_pos]  # (T, D), (|V|, D)
            if measure == "cosine":
                normalize = lambda x: x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                sim = normalize(resp) @ normalize(img).T
            elif measure == "dot":
                sim = resp @ img.T
            elif measure == "l2":
                sq = ((resp[:, None, :] - img[None, :, :]) ** 2).sum(-1)
                sim = -torch.sqrt(sq.clamp_min(0) + 1e-6)
            elif measure == "l1":
                sim = -(resp[:, None, :] - img[None, :, :]).abs().sum(-1)
            out[b] += sim.mean(1)
    return out / len(hidden_states)


def naive_entropy(logits, temperature=1.0):
    p = torch.softmax(logits.double() / temperature, -1)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1)


def naive_weights(v, h, mask, alpha, tau, mode="pepo"):
    """(B, T) float64 weights, one row at a time, exactly as docs/method.md writes them."""
    out = torch.zeros(v.shape, dtype=torch.float64)
    for b in range(v.shape[0]):
        idx = mask[b].bool().nonzero().flatten()
        if len(idx) == 0:
            continue
        vb, hb = v[b, idx].double(), h[b, idx].double()
        mm = lambda x: (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
        if mode == "pepo":
            s = mm(vb) + mm(hb)
            z = vb * (1 + alpha * torch.tanh(s - s.mean())) / tau
        elif mode == "perception":
            z = vb / tau
        elif mode == "exploration":
            s = mm(hb)
            z = hb * (1 + alpha * torch.tanh(s - s.mean())) / tau
        out[b, idx] = len(idx) * torch.softmax(z, 0)
    return out
