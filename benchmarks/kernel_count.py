"""How many kernels the perception prior dispatches per layer under the accelerator's chunk budget.

    python benchmarks/kernel_count.py

On a GPU the prior's cost is its kernel launches. Every aten operation that reaches a backend
kernel passes a ``TorchDispatchMode``; this counts them (views launch none) for one layer of
``pepo.core.PerceptionAccumulator`` with the GPU budget (``default_chunk_bytes("cuda")``), on the
CPU, for each measure and for growing B, T and image tokens ("l1" is the accelerator's
sorted-prefix path; the CPU's ``cdist`` path is "l1_cdist"). Writes
``benchmarks/results/kernel_count.json`` with the command and commit; tests/core/test_kernel_count.py
uses the same counting and checks the counts do not grow with the shape.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

RESULTS = Path(__file__).resolve().parent / "results"
# measure -> (PerceptionAccumulator's measure, whether l1 takes the sorted-prefix path of accelerators)
MEASURES = {"dot": ("dot", False), "cosine": ("cosine", False), "l2": ("l2", False), "l1": ("l1", True),
            "l1_cdist": ("l1", False)}
SHAPES = [dict(B=2, T=16, image_tokens=8), dict(B=2, T=700, image_tokens=8), dict(B=2, T=16, image_tokens=600),
          dict(B=9, T=16, image_tokens=8), dict(B=9, T=700, image_tokens=600)]


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:  # views (transpose, unsqueeze, ...) launch no kernel
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def ops_per_layer(measure: str, B: int, T: int, image_tokens: int, S: int | None = None, D: int = 16,
                  chunk_bytes: int | None = None) -> Counter:
    """The aten ops one layer (not the first, which starts the running total) dispatches."""
    from pepo.core import PerceptionAccumulator, default_chunk_bytes

    name, sorted_l1 = MEASURES[measure]
    S = S or image_tokens + T + 10
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, S, D, generator=g).to(torch.bfloat16)
    vision = torch.zeros(B, S, dtype=torch.bool)
    vision[:, 4 : 4 + image_tokens] = True
    vision[-1, 4 + image_tokens // 2 : 4 + image_tokens] = False  # rows with different image counts
    budget = default_chunk_bytes("cuda") if chunk_bytes is None else chunk_bytes
    with mock.patch("pepo.core.perception.l1_by_sorting", lambda device: sorted_l1):
        acc = PerceptionAccumulator(vision, T, name, chunk_bytes=budget)
    acc.add(hidden)
    with OpCounter() as counter:
        acc.add(hidden)
    return counter.ops


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provenance import command, commit

    rows = []
    for measure in MEASURES:
        counts = [sum(ops_per_layer(measure, **shape).values()) for shape in SHAPES]
        rows.append({"measure": measure, "ops_per_layer": counts[0], "same_for_every_shape": len(set(counts)) == 1,
                     "ops": dict(sorted(ops_per_layer(measure, **SHAPES[0]).items()))})
    result = {"command": command(), "commit": commit(), "torch": torch.__version__,
              "budget": "default_chunk_bytes('cuda')", "shapes": SHAPES, "measures": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kernel_count.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| measure | kernels per layer | same for every shape |\n|---|---:|---|")
    for row in rows:
        print(f"| {row['measure']} | {row['ops_per_layer']} | {row['same_for_every_shape']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
