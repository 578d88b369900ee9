"""Where the demo's time goes: the phase table of `pepo demo` runs and a per-step breakdown of RL,
with an older commit run side by side (interleaved, same inputs) so that a busy machine inflates
both alike.

    python benchmarks/bench_demo_time.py                          # RL breakdown, this checkout
    python benchmarks/bench_demo_time.py --compare 77436cb        # ... and commit 77436cb, interleaved
    python benchmarks/bench_demo_time.py --compare 77436cb --from runs/demo   # from a demo's warm start
    python benchmarks/bench_demo_time.py --compare 77436cb --what rl,sft,eval,train
    python benchmarks/bench_demo_time.py --phases runs/demo/metrics.json      # phase table of demo runs

Each measurement runs in a fresh subprocess with ``PYTHONPATH`` set to the sources of one version
(this checkout's ``src``, or a ``git archive`` copy of ``--compare``), on the same data and start
checkpoint, with that version's own demo settings (RL: ``pepo.demo.DemoSettings``, ``--steps``
RL steps; evaluation: the demo's ``evaluate_model`` call; train: ``pepo train`` on tiny recipes).

RL breakdown, per optimiser step (the mean over the steps run, setup excluded), from timers put
around TRL / transformers / accelerate methods that exist in every version:

* data loading: ``Trainer.get_batch_samples`` (the dataloader: rows and their images);
* rollout: ``GRPOTrainer._generate_and_score_completions``, of which ``generate``
  (``GenerationMixin.generate``) and the processor (``ProcessorMixin.__call__`` and
  ``apply_chat_template``: tokenising and image preprocessing; image preprocessing alone is the
  image processor's ``__call__``, which a per-image cache skips on hits);
* loss forward: ``GRPOTrainer._compute_loss``; backward: ``Accelerator.backward``;
* other: the rest of the step (optimiser, scheduler, callbacks, logging).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/versions.py, also when loaded by path
from versions import ROOT, version_sources  # noqa: E402

# (label, indent) in print order; keys of the worker's per-step dict
RL_ROWS = [
    ("step", "RL step (total)", 0),
    ("data", "data loading (get_batch_samples)", 1),
    ("rollout", "rollout (_generate_and_score_completions)", 1),
    ("generate", "generate", 2),
    ("processor", "processor: chat template + tokenise + images", 2),
    ("image_processor", "image preprocessing (image processor calls)", 3),
    ("forward", "loss forward (_compute_loss)", 1),
    ("backward", "backward", 1),
    ("other", "other (optimiser, logging, ...)", 1),
]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


# ---------------------------------------------------------------------------------------------
# worker: runs inside one version's sources
# ---------------------------------------------------------------------------------------------


class Timers:
    """Wall time spent inside patched methods (outermost call only, so recursion counts once)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._depth[key] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth[key] -= 1
                if self._depth[key] == 0:
                    self.seconds[key] += time.perf_counter() - start
                    self.calls[key] += 1

        setattr(owner, name, timed)


def _install_timers() -> Timers:
    from accelerate import Accelerator
    from transformers import GenerationMixin, ProcessorMixin, Trainer
    from transformers.image_processing_utils import BaseImageProcessor
    from trl import GRPOTrainer

    timers = Timers()
    timers.wrap(Trainer, "train", "train")
    timers.wrap(Trainer, "get_batch_samples", "data")
    timers.wrap(GRPOTrainer, "_generate_and_score_completions", "rollout")
    timers.wrap(GenerationMixin, "generate", "generate")
    timers.wrap(ProcessorMixin, "__call__", "processor")
    timers.wrap(ProcessorMixin, "apply_chat_template", "processor")
    timers.wrap(BaseImageProcessor, "__call__", "image_processor")
    timers.wrap(GRPOTrainer, "_compute_loss", "forward")
    timers.wrap(Accelerator, "backward", "backward")
    return timers


def _threads(demo) -> int:
    """``$BENCH_THREADS``, else the version's own default for torch threads (`pepo demo --threads`)."""
    if os.environ.get("BENCH_THREADS"):
        return int(os.environ["BENCH_THREADS"])
    import argparse as _argparse

    captured = {}
    original = _argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        captured["threads"] = parser.get_default("threads")
        raise SystemExit(0)

    _argparse.ArgumentParser.parse_args = capture
    try:
        demo.main([])
    except SystemExit:
        pass
    finally:
        _argparse.ArgumentParser.parse_args = original
    return captured.get("threads") or 1


def worker_rl(args) -> dict:
    import torch

    import pepo.demo as demo
    from pepo.embedded.recipe import load_rows, rl_train

    torch.set_num_threads(_threads(demo))
    s = demo.DemoSettings()
    train = load_rows(Path(args.data) / "train.jsonl")
    timers = _install_timers()
    started = time.perf_counter()
    result = rl_train(
        args.start, train, Path(args.work) / args.method, args.method, max_steps=args.steps,
        prompts_per_step=s.rl_prompts_per_step, num_generations=s.num_generations,
        learning_rate=s.rl_learning_rate, max_completion_length=s.max_completion_length, seed=0,
        freeze_vision_tower=s.rl_freeze_vision_tower, loss_type=s.rl_loss_type,
    )
    total = time.perf_counter() - started
    per_step = {k: v / args.steps for k, v in timers.seconds.items()}
    per_step["step"] = timers.seconds["train"] / args.steps
    per_step["other"] = per_step["step"] - sum(per_step.get(k, 0.0) for k in ("data", "rollout", "forward", "backward"))
    rewards = [r["reward"] for r in result.log if "reward" in r]
    return {"per_step": per_step, "setup_s": total - timers.seconds["train"], "rl_train_s": total,
            "threads": torch.get_num_threads(), "mean_reward": statistics.mean(rewards) if rewards else None,
            "mean_length": statistics.mean(r["completions/mean_length"] for r in result.log)}


def worker_sft(args) -> dict:
    """The demo's warm start for ``--steps`` steps (one validation check at the end, never stopping)."""
    import torch

    import pepo.demo as demo
    from pepo.data import load_geometry3k
    from pepo.embedded.recipe import load_rows, warm_start

    torch.set_num_threads(_threads(demo))
    s = demo.DemoSettings()
    train = load_rows(Path(args.data) / "train.jsonl")
    val = load_geometry3k(Path(args.data) / "val.jsonl", image_root=Path(args.data)).records
    timers = _install_timers()
    started = time.perf_counter()
    _, log = warm_start(
        args.start, train, val, Path(args.work) / "sft", max_steps=args.steps, learning_rate=s.sft_learning_rate,
        eval_every=args.steps, target_accuracy=2.0, seed=0, max_new_tokens=s.max_completion_length,
        freeze_vision_tower=s.sft_freeze_vision_tower,
    )
    total = time.perf_counter() - started
    return {"per_step": {"step": timers.seconds["train"] / args.steps, "data": timers.seconds["data"] / args.steps,
                         "generate": timers.seconds["generate"] / args.steps,
                         "backward": timers.seconds["backward"] / args.steps},
            "setup_s": total - timers.seconds["train"], "val_accuracy": log[-1]["val_accuracy"]}


def worker_eval(args) -> dict:
    """The demo's evaluation of one checkpoint (test split, avg@8), as `pepo eval` runs it."""
    import torch

    import pepo.demo as demo
    from pepo.data import load_geometry3k
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    torch.set_num_threads(_threads(demo))
    s = demo.DemoSettings()
    test = load_geometry3k(Path(args.data) / "test.jsonl", image_root=Path(args.data)).records
    timers = _install_timers()
    model, processor = load_model_and_processor(args.start)
    started = time.perf_counter()
    result = evaluate_model(model, processor, test, n=s.eval_samples, max_new_tokens=s.max_completion_length,
                            batch_size=args.eval_batch_size, seed=0, progress=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "questions": len(test), "questions_per_s": len(test) / seconds,
            "avg": result.totals["avg_at_n"], "generate_s": timers.seconds["generate"],
            "processor_s": timers.seconds["processor"], "threads": torch.get_num_threads()}


def worker_train(args) -> dict:
    """`pepo train --config recipes/<method>_tiny.yaml` (the version's own recipe, from the same start
    checkpoint ``--start`` for every version; the embedded data built beforehand)."""
    import yaml

    try:
        from pepo.train import main  # `pepo train`
    except ImportError:  # versions before pepo.train (e.g. 77436cb)
        from pepo.trainer.cli import main

    recipe_values = yaml.safe_load((Path.cwd() / "recipes" / f"{args.method}_tiny.yaml").read_text())  # cwd: the version
    recipe_values["model_name_or_path"] = str(args.start)
    recipe_values.pop("warm_start", None)
    recipe = Path(args.work) / f"{args.method}_tiny.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(yaml.safe_dump(recipe_values))
    out = Path(args.work) / f"train_{args.method}"
    main(["--config", str(recipe), "--output_dir", str(out), "--max_steps", "1"])  # builds the data: not timed
    timers = _install_timers()
    started = time.perf_counter()
    code = main(["--config", str(recipe), "--output_dir", str(out), "--max_steps", str(args.steps)])
    seconds = time.perf_counter() - started
    if code or not timers.seconds["train"]:
        raise RuntimeError(f"pepo train exited with {code} and trained {timers.seconds['train']:.1f} s")
    prompts = args.steps * recipe_values["per_device_train_batch_size"] * recipe_values.get("gradient_accumulation_steps", 1)
    prompts //= recipe_values["num_generations"]
    return {"seconds": seconds, "train_s": timers.seconds["train"], "steps": args.steps,
            "questions_per_s": prompts / timers.seconds["train"]}


# ---------------------------------------------------------------------------------------------
# parent: fixture, interleaved runs, tables
# ---------------------------------------------------------------------------------------------


def _fixture(work: Path, source: str | None) -> tuple[Path, Path]:
    """(data folder, start checkpoint): a demo's, or a small synthetic set and a fresh tiny VLM."""
    if source:
        return Path(source) / "data", Path(source) / "warm_start" / "checkpoint"
    sys.path.insert(0, str(ROOT / "src"))
    from pepo.embedded import build_tiny_vlm, generate_dataset
    from pepo.embedded.synthetic import DEFAULT_QUESTION_TYPES

    data = work / "data"
    if not (data / "test.jsonl").exists():
        generate_dataset(data, n_train=2048, n_val=32, n_test=128, seed=0, qtypes=DEFAULT_QUESTION_TYPES, chain="short")
    start = work / "tiny_vlm"
    if not (start / "config.json").exists():
        build_tiny_vlm(start, seed=0)
    return data, start


def _run(version_root: Path, what: str, method: str, args, data: Path, start: Path, work: Path) -> dict:
    out = work / f"result_{os.getpid()}.json"
    env = {**os.environ, "PYTHONPATH": str(version_root / "src")}
    if args.threads is not None and version_root == ROOT:
        env["BENCH_THREADS"] = str(args.threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", what, "--method", method,
               "--data", str(data), "--start", str(start), "--work", str(work / version_root.name),
               "--steps", str({"rl": args.steps, "sft": args.sft_steps}.get(what, args.train_steps)),
               "--eval-batch-size", str(args.eval_batch_size), "--result", str(out)]
    before = load()
    done = subprocess.run(command, env=env, cwd=str(version_root), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{version_root.name} {what} {method} failed:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["load"] = f"{before} -> {load()}"
    return result


def _ratio(old: float, new: float) -> str:
    return f"{old / new:.2f}x" if new > 0 else "n/a"


def compare(args) -> int:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_demo_time_"))
    work.mkdir(parents=True, exist_ok=True)
    data, start = _fixture(work, args.source and str(Path(args.source).resolve()))  # the workers run elsewhere
    versions = {"this checkout": ROOT}
    if args.compare:
        versions = {args.compare: version_sources(args.compare, work), **versions}
    print(f"# bench_demo_time ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load at start {load()})\n")
    print(f"data {data}, start {start}; {args.repeats} interleaved repeats, median shown\n")
    whats = [w for w in args.what.split(",") if w]
    for what in whats:
        methods = args.methods.split(",") if what in ("rl", "train") else ["-"]
        for method in methods:
            runs: dict[str, list[dict]] = {name: [] for name in versions}
            for _ in range(args.repeats):
                for name, root in versions.items():
                    runs[name].append(_run(root, what, method, args, data, start, work))
            _table(what, method, runs, args)
    print(f"load at end {load()}")
    return 0


def _median(rows: list[dict], key: str, sub: str | None = None) -> float:
    values = [(r[sub] if sub else r).get(key, 0.0) for r in rows]
    return statistics.median(values)


def _table(what: str, method: str, runs: dict[str, list[dict]], args) -> None:
    names = list(runs)
    header = "| " + " | ".join(names) + " |" + (" speed-up |" if len(names) == 2 else "")
    rule = "|---" * (len(names) + 1 + (len(names) == 2)) + "|"
    if what == "sft":
        print(f"## warm start (TRL SFT, the demo's settings): seconds per step ({args.sft_steps} steps, one validation "
              "check at the end)\n")
        print("| phase " + header)
        print(rule)
        for key, label in (("step", "SFT step (total)"), ("data", "data loading + collation (main process)"),
                           ("backward", "backward"), ("generate", "validation generate (per step)")):
            values = [_median(runs[n], key, "per_step") for n in names]
            speed = f" {_ratio(*values)} |" if len(names) == 2 else ""
            print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" |{speed}")
        print("| setup before the first step (s) | " + " | ".join(f"{_median(runs[n], 'setup_s'):.3g}" for n in names)
              + " |" + (" |" if len(names) == 2 else ""))
    elif what == "rl":
        print(f"## RL, {method}: seconds per optimiser step ({args.steps} steps, the demo's settings)\n")
        print("| phase " + header)
        print(rule)
        for key, label, indent in RL_ROWS:
            values = [_median(runs[n], key, "per_step") for n in names]
            cells = " | ".join(f"{v:.3f}" for v in values)
            speed = f" {_ratio(*values)} |" if len(names) == 2 else ""
            print(f"| {'&nbsp;&nbsp;' * indent}{label} | {cells} |{speed}")
        for key, label in (("setup_s", "setup before the first step (s)"), ("threads", "torch threads"),
                           ("mean_length", "mean completion length"), ("mean_reward", "mean reward")):
            cells = " | ".join(f"{_median(runs[n], key):.3g}" for n in names)
            print(f"| {label} | {cells} |" + (" |" if len(names) == 2 else ""))
    else:
        title = "pepo eval (the demo's evaluation: test split, avg@8)" if what == "eval" else \
            f"pepo train --config recipes/{method}_tiny.yaml ({args.train_steps} steps)"
        print(f"## {title}\n")
        print("| measure " + header)
        print(rule)
        keys = [("questions_per_s", "questions / s"), ("seconds" if what == "eval" else "train_s", "seconds")]
        for key, label in keys:
            values = [_median(runs[n], key) for n in names]
            speed = f" {_ratio(values[1], values[0]) if key == 'questions_per_s' else _ratio(*values)} |" \
                if len(names) == 2 else ""
            print(f"| {label} | " + " | ".join(f"{v:.3g}" for v in values) + f" |{speed}")
        if what == "eval":
            print("| avg@8 | " + " | ".join(f"{_median(runs[n], 'avg'):.1f}" for n in names) + " |" +
                  (" |" if len(names) == 2 else ""))
    print("\nload per run: " + "; ".join(f"{n}: " + ", ".join(r["load"] for r in runs[n]) for n in names) + "\n")


def phases(paths: list[str]) -> int:
    """The phase table of `pepo demo` runs, from their metrics.json. Where the methods ran side by
    side (``jobs`` > 1), their RL times overlap: the table adds the wall time of steps 4-5."""
    print("| run | total | data + model | warm start | RL, per method | RL and its evaluations, wall | the rest |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        m = json.loads(Path(path).read_text())
        t = m["timings"]
        rl = {k[3:-2]: v for k, v in t.items() if k.startswith("rl_")}
        wall = t.get("methods_wall_s")
        rest = t["total_s"] - t["data_and_model_s"] - t["warm_start_s"] - (sum(rl.values()) if wall is None else wall)
        rl_text = ", ".join(f"{k} {v:.0f} s" for k, v in rl.items()) + f" ({m['settings']['rl_steps']} steps each)"
        wall_text = "-" if wall is None else f"{wall:.0f} s ({m.get('jobs', 1)} at a time)"
        print(f"| {path} | {t['total_s']:.0f} s | {t['data_and_model_s']:.0f} s | {t['warm_start_s']:.0f} s "
              f"({m['sft_log'][-1]['step']} steps) | {rl_text} | {wall_text} | {rest:.0f} s |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", default=None, help="a git revision to run side by side (e.g. 77436cb)")
    parser.add_argument("--from", dest="source", default=None,
                        help="a `pepo demo` output folder: its data/ and warm_start/checkpoint (default: a small "
                             "synthetic set and a fresh tiny VLM)")
    parser.add_argument("--what", default="rl", help="comma-separated: rl, sft, eval, train")
    parser.add_argument("--methods", default="grpo,pepo_g", help="RL methods / tiny recipes")
    parser.add_argument("--steps", type=int, default=6, help="RL steps per measurement")
    parser.add_argument("--train-steps", type=int, default=8, help="steps of `pepo train` on a tiny recipe")
    parser.add_argument("--sft-steps", type=int, default=40, help="warm-start steps per measurement")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="questions per generate call (the demo's)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per version")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for this checkout's runs (default: its `pepo demo --threads` default)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--phases", nargs="+", default=None, metavar="METRICS_JSON",
                        help="print the phase table of these `pepo demo` metrics.json files and exit")
    # worker mode (internal)
    parser.add_argument("--worker", choices=("rl", "sft", "eval", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--method", default="grpo", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases:
        return phases(args.phases)
    if args.worker:
        run = {"rl": worker_rl, "sft": worker_sft, "eval": worker_eval, "train": worker_train}[args.worker]
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    bad = [w for w in args.what.split(",") if w not in ("rl", "sft", "eval", "train")]
    if bad:
        parser.error(f"--what: unknown {bad}; choose from rl, sft, eval, train")
    if min(args.steps, args.repeats, args.train_steps, args.sft_steps) < 1:
        parser.error("--steps, --sft-steps, --train-steps and --repeats must be >= 1")
    if args.source and not (Path(args.source) / "warm_start" / "checkpoint" / "config.json").exists():
        parser.error(f"--from {args.source}: no warm_start/checkpoint there (run `pepo demo --out {args.source}`)")
    return compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
