"""``pepo demo``: PEPO end to end on CPU in minutes, nothing downloaded.

1. generate the synthetic visual-reasoning task (:mod:`pepo.embedded.synthetic`);
2. build the tiny Qwen2.5-VL (:func:`pepo.embedded.build_tiny_vlm`);
3. warm start on the reference chains with TRL's SFT trainer, stopped by validation accuracy;
4. RL from that same start with each method (GRPO and PEPO_G by default; same seed, same steps),
   as many at a time as there are cores (``--jobs``), each in its own process;
5. evaluate every checkpoint on the held-out test split: avg@8 and majority vote, plus the
   blank-image check (the same questions with the image blanked: near chance if the task needs it);
6. write ``<out>/report.md`` (table: method, avg@8, majority, mean response length, PEPO's time share, rho),
   ``<out>/curves.png`` (reward, response length, visual similarity, entropy per step),
   ``<out>/metrics.json`` and the checkpoints (``<out>/<method>/checkpoint``).

``--quick`` is the one-minute version the tests run (too short for RL to help: it checks the
pipeline, not the result); it writes under ``runs/demo_quick`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from pepo.embedded.synthetic import DEFAULT_QUESTION_TYPES, QUESTION_TYPES, TASKS

DEFAULT_METHODS = ("grpo", "pepo_g")


@dataclass(frozen=True)
class DemoSettings:
    qtypes: tuple[str, ...] = DEFAULT_QUESTION_TYPES  # no position questions: see pepo.embedded.synthetic
    chain: str = "short"  # reference chains that state the one fact seen
    n_train: int = 48000  # the warm start sees most examples once (1500 of its <= 2000 steps are one epoch)
    n_val: int = 128
    n_test: int = 256
    sft_max_steps: int = 2000  # the cosine schedule's length; the validation check stops it earlier
    sft_eval_every: int = 50
    sft_target: float = 0.55  # stop the warm start once sampled val accuracy reaches this (mid-jump)
    sft_learning_rate: float = 5e-4  # learns faster than 1e-3 or 2e-3: benchmarks/results/warm_start_search.md
    sft_freeze_vision_tower: bool = True  # train projector + LM only: see pepo.embedded.recipe.warm_start
    rl_steps: int = 200  # what the README's demo table (benchmarks/results/demo/report.md) ran
    rl_prompts_per_step: int = 32
    rl_learning_rate: float = 2e-4
    rl_loss_type: str = "dapo"  # for every method: token-level normalisation over the batch
    rl_freeze_vision_tower: bool = True
    num_generations: int = 8
    max_completion_length: int = 16  # the short chains are <= 12 tokens
    eval_samples: int = 8


QUICK = DemoSettings(
    n_train=1024, n_val=32, n_test=32, sft_max_steps=120, sft_eval_every=60, rl_steps=4,
    rl_prompts_per_step=8, eval_samples=4,
    sft_learning_rate=1e-3,  # 120 steps: the answer format is learnt sooner at 1e-3 (`pepo train --warm_start quick`)
)


@dataclass
class Prepared:
    """What steps 1-3 leave: the task's splits, the built tiny model and its warm start."""

    train: list[dict]  # rows with the reference chains (pepo.embedded.recipe.load_rows)
    val: list
    test: list
    base: Path
    start: Path  # the warm-started checkpoint
    sft_log: list[dict]
    timings: dict[str, float]


def prepare(out: Path, settings: DemoSettings, seed: int = 0) -> Prepared:
    """Steps 1-3 under ``out``: the synthetic task (``data/``), the tiny Qwen2.5-VL (``tiny_vlm/``)
    and its supervised warm start (``warm_start/checkpoint``). ``pepo train``'s
    ``model_name_or_path: embedded_warm_start`` builds its start with this too."""
    from pepo.data import load_geometry3k
    from pepo.embedded import build_tiny_vlm, generate_dataset
    from pepo.embedded.recipe import load_rows, warm_start

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    print(f"[1/5] generating the synthetic task under {out / 'data'}")
    paths = generate_dataset(out / "data", n_train=settings.n_train, n_val=settings.n_val, n_test=settings.n_test, seed=seed,
                             qtypes=settings.qtypes, chain=settings.chain)
    train = load_rows(paths["train"])  # with the reference chains, for the warm start
    val, test = (load_geometry3k(paths[s], image_root=out / "data").records for s in ("val", "test"))
    print(f"[2/5] building the tiny Qwen2.5-VL under {out / 'tiny_vlm'}")
    base = build_tiny_vlm(out / "tiny_vlm", seed=seed)
    timings["data_and_model_s"] = time.perf_counter() - t0
    print(f"[3/5] warm start (TRL SFTTrainer, up to {settings.sft_max_steps} steps, "
          f"stops at validation accuracy {settings.sft_target})")
    t = time.perf_counter()
    start, sft_log = warm_start(
        base, train, val, out / "warm_start", max_steps=settings.sft_max_steps, learning_rate=settings.sft_learning_rate,
        eval_every=settings.sft_eval_every, target_accuracy=settings.sft_target, seed=seed,
        max_new_tokens=settings.max_completion_length, freeze_vision_tower=settings.sft_freeze_vision_tower,
    )
    timings["warm_start_s"] = time.perf_counter() - t
    return Prepared(train, val, test, base, start, sft_log, timings)


def _evaluate(path: Path, test: list, settings: DemoSettings, seed: int, blank: bool = False) -> dict:
    """The `pepo eval` code path on the test split: avg@N, majority, mean length, per-question scores."""
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    model, processor = load_model_and_processor(path)
    result = evaluate_model(
        model, processor, test, n=settings.eval_samples, max_new_tokens=settings.max_completion_length,
        batch_size=32, blank_images=blank, seed=seed,
    )
    totals = result.totals
    return {"avg": totals["avg_at_n"] / 100, "majority": totals["majority"] / 100,
            "mean_length": totals["mean_completion_tokens"], "per_question": result.questions,
            "by_qtype": {k: v["avg_at_n"] / 100 for k, v in totals["categories"].get("qtype", {}).items()}}


def _rl_and_evaluate(method: str, prepared: Prepared, out: Path, settings: DemoSettings, seed: int,
                     callbacks: list | None = None) -> tuple:
    """Step 4 and 5 for one method: RL from the warm start, then its checkpoint on the test split
    (as it is and with blank images). Returns (RLResult, test result, blank-image result)."""
    from pepo.embedded.recipe import rl_train

    result = rl_train(
        prepared.start, prepared.train, out / method, method, max_steps=settings.rl_steps,
        prompts_per_step=settings.rl_prompts_per_step, num_generations=settings.num_generations,
        learning_rate=settings.rl_learning_rate, max_completion_length=settings.max_completion_length, seed=seed,
        freeze_vision_tower=settings.rl_freeze_vision_tower, loss_type=settings.rl_loss_type, callbacks=callbacks,
    )
    return (result, _evaluate(result.checkpoint, prepared.test, settings, seed),
            _evaluate(result.checkpoint, prepared.test, settings, seed, blank=True))


def _run_methods(methods: list[str], prepared: Prepared, out: Path, settings: DemoSettings, seed: int,
                 jobs: int) -> dict[str, tuple]:
    """Steps 4-5 for every method: one after the other in this process (``jobs`` 1), or ``jobs``
    at a time in forked processes. Each RL run is one core of work (one torch thread) and seeds
    itself, so running them side by side on a multi-core machine gives the same numbers sooner."""
    if jobs == 1:
        done = {}
        for i, method in enumerate(methods, 1):
            print(f"[4/5] RL {i}/{len(methods)}: {method} ({settings.rl_steps} steps), then its evaluation on "
                  f"{len(prepared.test)} test questions x {settings.eval_samples} samples")
            done[method] = _rl_and_evaluate(method, prepared, out, settings, seed)
        return done
    return _run_forked(methods, prepared, out, settings, seed, jobs)


_FORKED: dict = {}  # what the forked RL processes inherit: the train rows are shared by fork, never pickled


def _shared_step_callback(steps, slot: int):
    """A trainer callback writing the trainer's step into ``steps[slot]`` (shared with the parent's bars)."""
    from transformers import TrainerCallback

    class SharedStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps[slot] = state.global_step

    return SharedStep()


def _forked_method(slot: int, method: str) -> tuple:
    """In a forked process: console to ``<out>/<method>/console.log``, one torch thread, run the method."""
    out, settings, seed, prepared, steps = (_FORKED[k] for k in ("out", "settings", "seed", "prepared", "steps"))
    (out / method).mkdir(parents=True, exist_ok=True)
    console = open(out / method / "console.log", "w", buffering=1)  # noqa: SIM115 (open for the process's life)
    os.dup2(console.fileno(), 1)  # what libraries write to the file descriptors ...
    os.dup2(console.fileno(), 2)
    sys.stdout = sys.stderr = console  # ... and to Python's streams (which a test harness may have replaced)
    torch.set_num_threads(_FORKED["threads"])
    return _rl_and_evaluate(method, prepared, out, settings, seed, callbacks=[_shared_step_callback(steps, slot)])


def _run_forked(methods, prepared, out, settings, seed, jobs) -> dict[str, tuple]:
    """:func:`_rl_and_evaluate` for each method in a pool of ``jobs`` forked processes, with a progress
    bar per method; a process's error is raised here (its console log holds the rest)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm import tqdm

    context = multiprocessing.get_context("fork")
    steps = context.Array("i", len(methods))
    print(f"[4/5] RL for {', '.join(methods)} ({settings.rl_steps} steps each), {jobs} at a time in separate "
          f"processes, each then evaluated on {len(prepared.test)} test questions x {settings.eval_samples} samples; "
          f"their consoles: {out}/<method>/console.log")
    bars = [tqdm(total=settings.rl_steps, desc=f"RL {m}", position=i, leave=True) for i, m in enumerate(methods)]
    done: dict[str, tuple] = {}
    _FORKED.update(out=out, settings=settings, seed=seed, prepared=prepared, steps=steps,
                   threads=torch.get_num_threads())
    try:
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            pending = {pool.submit(_forked_method, i, m): m for i, m in enumerate(methods)}
            while pending:
                finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    done[pending.pop(future)] = future.result()
                for i, bar in enumerate(bars):
                    bar.update(steps[i] - bar.n)
    finally:
        _FORKED.clear()
        for bar in bars:
            bar.close()
    return {m: done[m] for m in methods}


def run_demo(out: Path, methods: list[str], settings: DemoSettings, seed: int = 0, jobs: int = 1) -> dict:
    """The whole pipeline; returns the metrics written to ``out/metrics.json``. ``jobs``: RL runs at once."""
    from pepo.analysis import load_runs
    from pepo.analysis.plots import plot_dynamics

    t0 = time.perf_counter()
    prepared = prepare(out, settings, seed)
    test, timings = prepared.test, prepared.timings
    results = {"warm_start": _evaluate(prepared.start, test, settings, seed)}
    blank = {"warm_start": _evaluate(prepared.start, test, settings, seed, blank=True)}
    logs: dict[str, list[dict]] = {}
    t = time.perf_counter()
    for method, (result, tested, blanked) in _run_methods(methods, prepared, out, settings, seed, jobs).items():
        timings[f"rl_{method}_s"] = result.seconds
        logs[method], results[method], blank[method] = result.log, tested, blanked
    timings["methods_wall_s"] = time.perf_counter() - t  # steps 4-5, side by side when jobs > 1
    rows = _rows(results, blank, logs)
    timings["total_s"] = time.perf_counter() - t0
    metrics = {"settings": asdict(settings), "seed": seed, "methods": methods, "rows": rows, "jobs": jobs,
               "sft_log": prepared.sft_log, "rl_logs": logs, "timings": timings, "n_test": len(test)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot_dynamics(load_runs([out / "metrics.json"]), out / "curves.png")  # the curves of `pepo analyze --runs`
    (out / "report.md").write_text(_report(metrics))
    return metrics


def _rows(results: dict[str, dict], blank: dict[str, dict], logs: dict[str, list[dict]]) -> list[dict]:
    """One row per evaluated checkpoint (the warm start first): scores, lift over the warm start with
    its paired standard error, PEPO's logged time share and the step-time ratio against GRPO."""
    from pepo.evaluation import paired_standard_error

    step_time = {m: statistics.mean(r["step_time"] for r in log if "step_time" in r) for m, log in logs.items()
                 if any("step_time" in r for r in log)}
    start = results["warm_start"]
    rows = []
    for name, res in results.items():
        shares = [r["pepo/time_share"] for r in logs.get(name, []) if "pepo/time_share" in r]
        rows.append({
            "method": name, "avg": res["avg"], "majority": res["majority"], "mean_length": res["mean_length"],
            "blank_avg": blank[name]["avg"], "by_qtype": res["by_qtype"], "lift": res["avg"] - start["avg"],
            "lift_se": paired_standard_error([q["score"] for q in start["per_question"]], [q["score"] for q in res["per_question"]]),
            "step_time_s": step_time.get(name),
            "time_share_logged": statistics.mean(shares) if shares else None,
            # the paper's extra-cost ratio rho = (t_PEPO - t_GRPO) / t_GRPO, from mean step times
            "rho_vs_grpo": (step_time[name] - step_time["grpo"]) / step_time["grpo"]
            if name in step_time and "grpo" in step_time and name != "grpo" else None,
        })
    return rows


def _fmt(value, spec=".1f", scale=1.0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value * scale, spec)


def _table(metrics: dict) -> list[str]:
    """The results table (``pepo.analysis.report.markdown_table``), one row per checkpoint."""
    from pepo.analysis.report import markdown_table

    n = metrics["settings"]["eval_samples"]
    columns = ["method", f"avg@{n}", "majority", "mean response length", "PEPO time share", "rho vs GRPO",
               "lift vs warm start (+- paired SE)", "avg with blank image"]
    cells = [[
        r["method"], f"{100 * r['avg']:.1f}", f"{100 * r['majority']:.1f}", f"{r['mean_length']:.1f}",
        _fmt(r["time_share_logged"], ".3f"), _fmt(r["rho_vs_grpo"], "+.3f"),
        "-" if r["method"] == "warm_start" else f"{100 * r['lift']:+.1f} +- {_fmt(r['lift_se'], scale=100)}",
        f"{100 * r['blank_avg']:.1f}",
    ] for r in metrics["rows"]]
    return markdown_table([dict(zip(columns, row)) for row in cells], columns).splitlines()


def _report(metrics: dict) -> str:
    s = metrics["settings"]
    lines = [
        "# pepo demo report",
        "",
        f"Tiny Qwen2.5-VL on the synthetic 2x2-grid task; {metrics['n_test']} held-out test questions, "
        f"{s['eval_samples']} samples each at temperature 1.0 (avg@{s['eval_samples']}); seed {metrics['seed']}.",
        f"RL: {s['rl_steps']} steps x {s['rl_prompts_per_step']} prompts x {s['num_generations']} samples, "
        f"lr {s['rl_learning_rate']} (cosine to 0), loss_type {s['rl_loss_type']}, "
        f"vision tower {'frozen' if s['rl_freeze_vision_tower'] else 'trained'}, from the same warm start.",
        f"Task: question types {', '.join(s['qtypes'])}; {s['chain']} reference chains. Warm start: TRL SFT, "
        f"lr {s['sft_learning_rate']}, vision tower {'frozen' if s['sft_freeze_vision_tower'] else 'trained'}, "
        f"stopped at validation accuracy {s['sft_target']} (or {s['sft_max_steps']} steps).",
        "",
        *_table(metrics),
    ]
    if s["rl_loss_type"]:
        lines += ["", f"Every RL row trains with loss_type {s['rl_loss_type']} in place of its method's own: the `grpo` "
                      f"row is GRPO's group advantages with the {s['rl_loss_type']} loss, not TRL's loss_type grpo."]
    lines += [
        "",
        "PEPO time share: PEPO's own computation time over the whole step, as logged by PEPOTrainer "
        "(`pepo/time_share`). rho vs GRPO: the paper's (t_method - t_GRPO) / t_GRPO from mean step times (noisy on a "
        "shared CPU; `benchmarks/bench_step.py` measures it paired, with an A/A control).",
        "",
        "Warm-start validation log: " + ", ".join(f"step {e['step']}: {100 * e['val_accuracy']:.1f}" for e in metrics["sft_log"]),
        "",
        "Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in metrics["timings"].items()),
        "",
        "![curves](curves.png)",
        "",
    ]
    return "\n".join(lines)


def _jobs(asked: int | None, n_methods: int) -> int:
    """RL runs at once: as asked, else one per core; never more than the methods, and 1 where the
    platform cannot fork (the RL processes share the warm start's data by fork)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(asked or cores, n_methods))


def main(argv: list[str] | None = None) -> int:
    from pepo.cli_checks import ArgumentError, OneLineParser, check_at_least, check_out_dir, interrupted

    parser = OneLineParser(prog="pepo demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the one-minute version (pipeline check, too short for RL to help)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated RL methods: grpo, pepo_g, dapo, pepo_d, high_entropy, perception, exploration, "
                        "papo_g, papo_d, vppo")
    parser.add_argument("--out", default=None,
                        help="output folder (report, curves, checkpoints) [runs/demo; with --quick runs/demo_quick]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rl-steps", type=int, default=None, help="override the number of RL steps")
    parser.add_argument("--task", choices=sorted(TASKS), default=None,
                        help="task variant: one_fact (the default question types) or two_facts (answers that need "
                             "two facts read from the image: pepo.embedded.synthetic)")
    parser.add_argument("--qtypes", default=None,
                        help=f"comma-separated question types (default: {','.join(DEFAULT_QUESTION_TYPES)}; "
                             f"all: {','.join(QUESTION_TYPES)})")
    parser.add_argument("--chain", choices=("short", "long"), default=None,
                        help="reference chain style (default short; long names positions and reasons in steps)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per process (1 is fastest for this tiny model, and robust on a busy machine)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="RL runs at once, each in its own process [one per CPU core, at most one per method]")
    args = parser.parse_args(argv)

    from pepo.embedded.recipe import RL_METHODS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in RL_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(RL_METHODS)}")
    settings = QUICK if args.quick else DemoSettings()
    if args.rl_steps is not None:
        settings = replace(settings, rl_steps=args.rl_steps)
    if args.task is not None and args.qtypes is not None:
        parser.error("--task and --qtypes both choose the question types: give one of them")
    if args.task is not None:
        settings = replace(settings, qtypes=TASKS[args.task])
    if args.qtypes is not None:
        qtypes = tuple(q.strip() for q in args.qtypes.split(",") if q.strip())
        bad = [q for q in qtypes if q not in QUESTION_TYPES]
        if bad or not qtypes:
            parser.error(f"--qtypes: unknown question type(s) {bad}; choose from {list(QUESTION_TYPES)}")
        settings = replace(settings, qtypes=qtypes)
    if args.chain is not None:
        settings = replace(settings, chain=args.chain)
    try:
        check_at_least("--rl-steps", args.rl_steps, 1)
        check_at_least("--threads", args.threads, 1)
        check_at_least("--jobs", args.jobs, 1)
        check_at_least("--seed", args.seed, 0)
        out = check_out_dir(args.out or ("runs/demo_quick" if args.quick else "runs/demo"))  # quick never overwrites full
    except ArgumentError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    from pepo.trainer.progress import filter_unactionable_warnings, quiet_library_progress

    filter_unactionable_warnings()
    quiet_library_progress()
    try:
        metrics = run_demo(out, methods, settings, seed=args.seed, jobs=_jobs(args.jobs, len(methods)))
    except KeyboardInterrupt:
        return interrupted("pepo demo", f"{out} holds what finished; rerun the same command to start again")
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}  curves: {out / 'curves.png'}  total {metrics['timings']['total_s']:.0f} s")
    return 0
