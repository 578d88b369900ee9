"""Spread of the demo's RL result over seeds: the RL phase repeated from one warm start.

    python benchmarks/bench_demo_seeds.py --from runs/demo            # reuse a `pepo demo` run
    python benchmarks/bench_demo_seeds.py --seeds 0 1 2 --quick       # build its own quick start

Prints, per method, avg@N on the test split for every seed, the mean and the standard deviation,
and the mean lift over the warm start.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", default=None,
                        help="a `pepo demo` output folder (its data/ and warm_start/checkpoint are reused)")
    parser.add_argument("--out", default="runs/bench_demo_seeds")
    parser.add_argument("--methods", default="grpo,pepo_g")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="quick settings (pipeline check only)")
    parser.add_argument("--rl-steps", type=int, default=None)
    args = parser.parse_args(argv)
    if len(args.seeds) < 3 and not args.quick:
        parser.error("use at least 3 seeds")
    torch.set_num_threads(1)

    from dataclasses import replace

    from pepo.demo import QUICK, DemoSettings, run_demo
    from pepo.data import load_geometry3k
    from pepo.embedded.recipe import load_rows, rl_train
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    settings = QUICK if args.quick else DemoSettings()
    if args.rl_steps is not None:
        settings = replace(settings, rl_steps=args.rl_steps)
    methods = [m for m in args.methods.split(",") if m]
    out = Path(args.out)
    source = Path(args.source) if args.source else out / "start"
    if not (source / "warm_start" / "checkpoint").is_dir():
        print(f"no warm start under {source}: running the demo pipeline once (methods: none) to make one")
        run_demo(source, [], settings, seed=0)
    train = load_rows(source / "data" / "train.jsonl")
    test = load_geometry3k(source / "data" / "test.jsonl", image_root=source / "data").records
    start = source / "warm_start" / "checkpoint"

    def evaluate(path):
        model, processor = load_model_and_processor(path)
        result = evaluate_model(model, processor, test, n=settings.eval_samples,
                                max_new_tokens=settings.max_completion_length, batch_size=32, progress=False)
        return result.totals["avg_at_n"] / 100

    base = evaluate(start)
    scores: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for seed in args.seeds:
        for method in methods:
            t = time.perf_counter()
            result = rl_train(
                start, train, out / f"{method}_seed{seed}", method, max_steps=settings.rl_steps,
                prompts_per_step=settings.rl_prompts_per_step, num_generations=settings.num_generations,
                learning_rate=settings.rl_learning_rate, max_completion_length=settings.max_completion_length, seed=seed,
                freeze_vision_tower=settings.rl_freeze_vision_tower, loss_type=settings.rl_loss_type,
            )
            seconds[method].append(time.perf_counter() - t)
            scores[method].append(evaluate(result.checkpoint))
            print(f"seed {seed} {method}: avg@{settings.eval_samples} {100 * scores[method][-1]:.1f}", file=sys.stderr)

    print(f"\nwarm start avg@{settings.eval_samples}: {100 * base:.1f} ({len(test)} test questions)")
    print(f"| method | per seed | mean | std | mean lift | RL s/run |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        s = scores[method]
        std = statistics.stdev(s) if len(s) > 1 else float("nan")
        print(f"| {method} | {' '.join(f'{100 * v:.1f}' for v in s)} | {100 * statistics.mean(s):.1f} | {100 * std:.1f} "
              f"| {100 * (statistics.mean(s) - base):+.1f} | {statistics.mean(seconds[method]):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
