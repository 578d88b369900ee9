"""pepo.mrope against transformers: the M-RoPE index of the demo's RL batch, one torch thread.

    python benchmarks/bench_mrope.py            # 256 rows: 47-token prompts (one 4-token image) + 16 completion tokens

Builds the tiny Qwen2.5-VL in a temporary folder, checks that both give the same tensors, and prints
the mean time of each over ``--repeats`` calls (results: benchmarks/results/bench_mrope.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import provenance


def demo_batch(rows: int, prompt: int = 47, completion: int = 16):
    """input_ids, mm_token_type_ids, image_grid_thw, attention_mask shaped as one demo RL step's."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 80, (rows, prompt + completion), generator=generator)
    types = torch.zeros(rows, prompt + completion, dtype=torch.int)
    types[:, 12:16] = 1  # the image's 4 tokens after the system prompt
    lengths = torch.randint(1, completion + 1, (rows,), generator=generator)
    mask = (torch.arange(prompt + completion) < prompt + lengths[:, None]).long()  # completions right-padded
    return input_ids, types, torch.tensor([[1, 4, 4]] * rows), mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_model_and_processor
    from pepo.mrope import rope_index

    with tempfile.TemporaryDirectory() as folder:
        model, _ = load_model_and_processor(build_tiny_vlm(Path(folder) / "tiny_vlm", seed=0))
    inner, batch = model.model, demo_batch(args.rows)
    ids, types, grids, mask = batch
    ways = {"transformers get_rope_index": lambda: type(inner).get_rope_index(inner, ids, types, image_grid_thw=grids,
                                                                            attention_mask=mask),
            "pepo.mrope.rope_index": lambda: rope_index(inner, ids, types, image_grid_thw=grids, attention_mask=mask)}
    results = {name: way() for name, way in ways.items()}
    expected, got = results.values()
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1]), "the two indices differ"
    print(f"{provenance.command()}, commit {provenance.commit()}\n")
    print(f"| {args.rows} rows x {ids.shape[1]} tokens | ms per call (mean of {args.repeats}) |\n|---|---|")
    for name, way in ways.items():
        started = time.perf_counter()
        for _ in range(args.repeats):
            way()
        print(f"| {name} | {1000 * (time.perf_counter() - started) / args.repeats:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
