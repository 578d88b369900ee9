"""One warm start of the demo (`pepo.demo.prepare`: data, tiny model, TRL SFT) with settings overridden,
its validation accuracy printed at every check and appended to a JSON-lines log as it happens.

    python benchmarks/warm_start_search.py --out /tmp/ws/seed1 --seed 1
    python benchmarks/warm_start_search.py --out /tmp/ws/s3000 --sft-max-steps 3000
    python benchmarks/warm_start_search.py --out /tmp/ws/lr5e-4 --sft-learning-rate 5e-4
    python benchmarks/warm_start_search.py --out /tmp/ws/quick --quick    # pipeline check (the test's)

Only the validation split is scored (the demo's sampled avg@2 on its 128 validation questions);
the test split is never touched. The run stops where the demo's warm start stops: at the first check
reaching ``sft_target``, else at ``sft_max_steps``. Results: benchmarks/results/warm_start_search.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import fields, replace
from pathlib import Path

import torch


def _log_each_check(log_path: Path) -> None:
    """Wraps the warm start's validation callback so that each check is printed and written at once
    (warm_start hands the log back only at its end)."""
    from pepo.embedded import recipe

    on_step_end = recipe._ValidationStop.on_step_end
    started = time.perf_counter()

    def logged(self, args, state, control, **kwargs):
        n = len(self.log)
        control = on_step_end(self, args, state, control, **kwargs)
        if len(self.log) > n:
            entry = {**self.log[-1], "wall_s": round(time.perf_counter() - started, 1),
                     "load": os.getloadavg()[0]}
            print(f"VAL step {entry['step']}: {100 * entry['val_accuracy']:.1f}  "
                  f"({entry['wall_s']:.0f} s, load {entry['load']:.2f})", flush=True)
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        return control

    recipe._ValidationStop.on_step_end = logged


def main(argv: list[str] | None = None) -> int:
    from pepo.demo import QUICK, DemoSettings, prepare

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="start from the demo's --quick settings (a pipeline check)")
    parser.add_argument("--seed", type=int, default=0, help="the demo's seed (data, model and SFT), as `pepo demo --seed`")
    sft = [f for f in fields(DemoSettings) if f.name.startswith("sft_") and f.type in ("int", "float")]
    for f in sft:
        parser.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else float, default=None,
                            help=f"DemoSettings.{f.name} [{f.default}]")
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in sft if getattr(args, f.name) is not None}
    settings = replace(QUICK if args.quick else DemoSettings(), **overrides)
    torch.set_num_threads(1)  # as pepo demo's default --threads

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "val_log.jsonl"
    log_path.unlink(missing_ok=True)
    _log_each_check(log_path)
    print(f"settings: seed {args.seed}, overrides {overrides}; load at start {os.getloadavg()}", flush=True)
    prepared = prepare(out, settings, seed=args.seed)
    best = max(prepared.sft_log, key=lambda e: e["val_accuracy"])
    summary = {"seed": args.seed, "overrides": overrides, "timings": prepared.timings, "load_at_end": os.getloadavg(),
               "stopped_at": prepared.sft_log[-1]["step"], "last_val": prepared.sft_log[-1]["val_accuracy"],
               "best_val": best["val_accuracy"], "best_step": best["step"], "torch_threads": torch.get_num_threads()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
