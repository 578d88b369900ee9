"""On a GPU the perception prior's cost is its kernel launches: under the accelerator chunking
policy, the operations dispatched per layer must not grow with T, the image tokens or B, and none
may read a tensor back to the host. Counted on the CPU with a TorchDispatchMode (every aten op that
reaches a backend kernel passes through it)."""

from collections import Counter
from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pepo
from pepo.core import PerceptionAccumulator, default_chunk_bytes

# "l1_sorted": l1's accelerator path (sorted prefix sums); "l1" on the CPU is one cdist per chunk
MEASURES = ["cosine", "dot", "l2", "l1", "l1_sorted"]
GPU_BUDGET = default_chunk_bytes("cuda")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:  # views (transpose, unsqueeze, ...) launch no kernel
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def ops_per_layer(measure, B, T, image_tokens, S=None, D=16, chunk_bytes=GPU_BUDGET):
    S = S or image_tokens + T + 10
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, S, D, generator=g).to(torch.bfloat16)
    vision = torch.zeros(B, S, dtype=torch.bool)
    vision[:, 4 : 4 + image_tokens] = True
    vision[-1, 4 + image_tokens // 2 : 4 + image_tokens] = False  # rows with different image counts
    with mock.patch("pepo.core.perception.l1_by_sorting", lambda device: measure == "l1_sorted"):
        acc = PerceptionAccumulator(vision, T, measure.removesuffix("_sorted"), chunk_bytes=chunk_bytes)
    acc.add(hidden)  # the first layer starts the running total; count a later one
    with OpCounter() as counter:
        acc.add(hidden)
    return counter.ops


@pytest.mark.parametrize("measure", MEASURES)
def test_ops_per_layer_do_not_grow_with_T_image_tokens_or_B(measure):
    base = ops_per_layer(measure, B=2, T=16, image_tokens=8)
    for grown in (dict(B=2, T=700, image_tokens=8), dict(B=2, T=16, image_tokens=600),
                  dict(B=9, T=16, image_tokens=8), dict(B=9, T=700, image_tokens=600)):
        assert ops_per_layer(measure, **grown) == base, grown
    assert sum(base.values()) <= 20, base  # "a few kernels per layer"


@pytest.mark.parametrize("measure", MEASURES)
def test_no_host_read_per_layer(measure):
    # .item(), int(), bool() and .tolist() of a tensor all dispatch aten._local_scalar_dense: a GPU sync
    ops = ops_per_layer(measure, B=3, T=40, image_tokens=20)
    assert "aten._local_scalar_dense" not in ops and "aten.item" not in ops, ops


def test_cpu_policy_chunks_a_large_layer():
    # the guard the test above relies on: the CPU budget does split a layer the accelerator's does not
    small = ops_per_layer("cosine", B=2, T=16, image_tokens=8, D=512, chunk_bytes=default_chunk_bytes("cpu"))
    large = ops_per_layer("cosine", B=2, T=4096, image_tokens=8, D=512, chunk_bytes=default_chunk_bytes("cpu"))
    assert sum(large.values()) > sum(small.values())


def scores_and_ops(**chunk):
    # a layer the CPU budget splits into 3 chunks and the accelerator's does whole (T x B x D x 4 bytes = 4.3 MiB)
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(2, 1110, 512, generator=g) for _ in range(2)]
    vision = torch.zeros(2, 1110, dtype=torch.bool)
    vision[:, 2:10] = True
    with OpCounter() as counter:
        scores = pepo.perception_scores(hidden, vision, 1100, **chunk)
    return scores, sum(counter.ops.values())


def test_default_budget_per_device():
    assert default_chunk_bytes("cpu") < default_chunk_bytes("cuda") == default_chunk_bytes(torch.device("cuda", 1))
    # the default is the hidden states' device's: CPU tensors get the CPU budget, seen in the ops dispatched
    default, default_ops = scores_and_ops()
    cpu, cpu_ops = scores_and_ops(chunk_bytes=default_chunk_bytes("cpu"))
    _, accelerator_ops = scores_and_ops(chunk_bytes=GPU_BUDGET)
    assert default_ops == cpu_ops != accelerator_ops, (default_ops, cpu_ops, accelerator_ops)
    assert torch.equal(default, cpu)
