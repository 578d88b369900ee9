"""How much float32 scratch PEPO's reductions use at once, per device.

Every kernel in ``pepo.core`` converts the model's (possibly bf16) tensors to float32 a chunk at a
time. A chunk is sized in bytes of scratch, not in positions: on an accelerator the cost is the
number of kernel launches, so a whole layer (or all logits) is done at once while it fits 256 MiB,
in a fixed handful of kernels whatever B, S, T and the number of image tokens; on the CPU the cost is
the bytes moved, and chunks of a few MiB that stay in its caches are faster.
"""

from __future__ import annotations

import torch

FLOAT_BYTES = 4
ACCELERATOR_CHUNK_BYTES = 256 * 2**20
CPU_CHUNK_BYTES = 2 * 2**20


def default_chunk_bytes(device: torch.device | str) -> int:
    """The float32 scratch budget of one chunk on ``device``: 2 MiB on the CPU, 256 MiB elsewhere."""
    return CPU_CHUNK_BYTES if torch.device(device).type == "cpu" else ACCELERATOR_CHUNK_BYTES


def positions_per_chunk(chunk_bytes: int, bytes_per_position: int) -> int:
    """How many positions of ``bytes_per_position`` scratch each fit ``chunk_bytes`` (at least 1)."""
    return max(1, chunk_bytes // max(1, bytes_per_position))
