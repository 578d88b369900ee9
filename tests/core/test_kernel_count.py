"""On a GPU the perception prior's cost is its kernel launches: under the accelerator chunking
policy, the operations dispatched per layer must not grow with T, the image tokens or B, and none
may read a tensor back to the host. Counted on the CPU with a TorchDispatchMode (every aten op that
reaches a backend kernel passes through it)."""

import importlib.util
from pathlib import Path

import pytest
import torch

import pepo
from pepo.core import default_chunk_bytes

# the counting of benchmarks/kernel_count.py (which writes the counts the README quotes)
_spec = importlib.util.spec_from_file_location("kernel_count", Path(__file__).parents[2] / "benchmarks" / "kernel_count.py")
kernel_count = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernel_count)
OpCounter, ops_per_layer = kernel_count.OpCounter, kernel_count.ops_per_layer

# "l1": l1's accelerator path (sorted prefix sums); "l1_cdist", the CPU's, is one cdist per chunk
MEASURES = list(kernel_count.MEASURES)
GPU_BUDGET = default_chunk_bytes("cuda")


@pytest.mark.parametrize("measure", MEASURES)
def test_ops_per_layer_do_not_grow_with_T_image_tokens_or_B(measure):
    base_shape, *grown_shapes = kernel_count.SHAPES  # B, T and image tokens from (2, 16, 8) up to (9, 700, 600)
    base = ops_per_layer(measure, **base_shape)
    for grown in grown_shapes:
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
