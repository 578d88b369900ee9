"""``pepo demo``: placeholder until the embedded default lands (issue 5).

For now it runs the smallest thing that exists: the PEPO core math on a constructed batch,
and says so.
"""

from __future__ import annotations

import argparse

import torch

import pepo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pepo demo", description=__doc__)
    parser.parse_args(argv)
    print("pepo demo: the embedded tiny-VLM demo is not built yet; running the core math instead.")
    torch.manual_seed(0)
    batch, seq, resp, dim, layers = 2, 12, 6, 16, 3
    hidden = [torch.randn(batch, seq, dim) for _ in range(layers + 1)]
    vision = torch.zeros(batch, seq, dtype=torch.bool)
    vision[0, 1:4] = True  # row 1 has no image: its weights must all be 1
    mask = torch.ones(batch, resp)
    mask[1, -2:] = 0
    perception = pepo.perception_scores(hidden, vision, resp)
    entropy = pepo.token_entropy(torch.randn(batch, resp, 50))
    weights = pepo.token_weights(perception, entropy, mask)
    for b in range(batch):
        valid = mask[b].bool()
        print(f"row {b}: weights {[round(x, 3) for x in weights[b].tolist()]}"
              f"  mean over valid tokens {weights[b][valid].mean().item():.6f}")
    return 0
