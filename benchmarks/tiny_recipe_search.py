"""Settings of the tiny recipes (recipes/*_tiny.yaml) that improve the model they start from.

The tiny recipes start from pepo demo's supervised warm start (``model_name_or_path:
embedded_warm_start``, built by :func:`pepo.train.embedded_warm_start`) and train on the
synthetic task (``train_file: embedded``). Two phases, both through ``pepo train`` itself
(:func:`pepo.train.main`, the recipe file plus command-line overrides) and scored with
:func:`pepo.evaluation.evaluate_model` (avg@8 at temperature 1, ``max_new_tokens`` = the recipes'
``max_completion_length`` 16, seed 0), lift over the warm start +- its paired standard error
(:func:`pepo.evaluation.paired_standard_error`):

* ``sweep``: one recipe (``--recipe``) under every setting of the grid, scored on the
  **validation** split (128 questions): the settings are chosen here.
* ``confirm``: the recipe files as they are (``--recipes``), scored on the held-out **test**
  split (256 questions), never used to choose.

``start_sha256`` (of the start's weights) says which warm start a row trained from. ``merge`` adds the rows of other runs' files (``--files``: sweeps run in parallel). Each phase adds its rows to ``<out>.json`` (keyed by phase, recipe and setting) and rewrites
``<out>.md``; each row records the command and commit that produced it.

    PYTHONPATH=src python benchmarks/tiny_recipe_search.py sweep --recipe recipes/pepo_g_tiny.yaml
    PYTHONPATH=src python benchmarks/tiny_recipe_search.py confirm --recipes recipes/pepo_g_tiny.yaml recipes/grpo_tiny.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

from provenance import REPO, command, commit

DEFAULT_OUT = REPO / "benchmarks" / "results" / "tiny_recipes" / "search"
EVAL = dict(n=8, max_new_tokens=16, batch_size=32, seed=0)  # max_new_tokens: the recipes' max_completion_length
# (learning_rate, prompts per step, max_steps): per_device_train_batch_size = prompts x num_generations 4
GRID = {
    "learning_rate": [5e-4, 1e-4, 5e-5, 2e-5],
    "prompts_per_step": [1, 4],
    "max_steps": [4, 8],
}


def warm_start(cache: Path, start: str | None) -> Path:
    """The tiny recipes' start: ``--start`` or the demo warm start of ``cache`` (built when missing)."""
    if start:
        return Path(start)
    from pepo.demo import DemoSettings
    from pepo.train import embedded_warm_start

    return embedded_warm_start(cache, DemoSettings(), 0, "demo")


def records(start: Path, split: str) -> list:
    from pepo.data import load_geometry3k

    data = start.parents[1] / "data"  # the warm start's own splits, beside its checkpoint
    return load_geometry3k(data / f"{split}.jsonl", image_root=data).records


def score(model_path: Path, questions: list) -> list[float]:
    """Per-question avg@8 (fractions) of the checkpoint, in the order of ``questions``."""
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    model, processor = load_model_and_processor(model_path)
    result = evaluate_model(model, processor, questions, progress=False, **EVAL)
    return [row["score"] for row in result.questions]


def train(recipe: Path, start: Path, out: Path, overrides: dict) -> float:
    """``pepo train --config recipe`` from ``start`` into ``out``; returns the seconds it took."""
    import pepo.train

    shutil.rmtree(out, ignore_errors=True)
    argv = ["--config", str(recipe), "--model_name_or_path", str(start), "--output_dir", str(out),
            "--disable_tqdm", "true", "--eval_after_train", "none"]  # scored here, on the phase's split
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = pepo.train.main(argv)
    if code != 0:
        raise SystemExit(f"pepo train {' '.join(argv)} exited {code}")
    return time.perf_counter() - started


def summary(before: list[float], after: list[float]) -> dict:
    from pepo.evaluation import paired_standard_error

    avg_before, avg_after = 100 * sum(before) / len(before), 100 * sum(after) / len(after)
    se = 100 * paired_standard_error(before, after)
    return {"before": round(avg_before, 2), "after": round(avg_after, 2), "lift": round(avg_after - avg_before, 2),
            "paired_se": round(se, 2), "lift_over_2se": avg_after - avg_before > 2 * se}


def overrides_of(lr: float, prompts: int, steps: int, freeze: str, num_generations: int = 4) -> dict:
    return {"learning_rate": lr, "max_steps": steps, "num_generations": num_generations, "freeze_vision_tower": freeze,
            "per_device_train_batch_size": prompts * num_generations,
            "max_train_samples": max(16, prompts * steps)}  # each prompt seen once


def run_sweep(args, start: Path, provenance: dict) -> list[dict]:
    questions = records(start, "val")
    before = score(start, questions)
    rows = []
    for lr, prompts, steps, freeze, group in itertools.product(args.learning_rate, args.prompts_per_step, args.max_steps,
                                                               args.freeze_vision_tower, args.num_generations):
        setting = overrides_of(lr, prompts, steps, freeze, group)
        seconds = train(Path(args.recipe), start, args.work / "sweep", setting)
        row = {"phase": "sweep", "split": "val", "recipe": Path(args.recipe).name, **setting,
               "prompts_per_step": prompts, "train_seconds": round(seconds, 1),
               **summary(before, score(args.work / "sweep", questions)), **provenance}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def recipe_settings(recipe: Path) -> dict:
    """The swept fields as the recipe file sets them (prompts per step = batch / num_generations)."""
    import yaml

    raw = yaml.safe_load(recipe.read_text())
    return {"learning_rate": raw["learning_rate"], "max_steps": raw["max_steps"],
            "num_generations": raw["num_generations"], "freeze_vision_tower": str(raw.get("freeze_vision_tower", False)).lower(),
            "prompts_per_step": raw["per_device_train_batch_size"] * raw.get("gradient_accumulation_steps", 1)
            // raw["num_generations"]}


def run_confirm(args, start: Path, provenance: dict) -> list[dict]:
    questions = records(start, "test")
    before = score(start, questions)
    rows = []
    for recipe in args.recipes:
        out = args.work / Path(recipe).stem
        seconds = train(Path(recipe), start, out, {})
        row = {"phase": "confirm", "split": "test", "recipe": Path(recipe).name, **recipe_settings(Path(recipe)),
               "train_seconds": round(seconds, 1),
               **summary(before, score(out, questions)), **provenance}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def write(out: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into ``out.json`` (a later row replaces one of the same phase, recipe and setting)."""
    path = out.with_suffix(".json")
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    # rows of c67a79a lack freeze_vision_tower: they trained with that recipe's value, false
    key = lambda r: (r["phase"], r["recipe"], r["commit"], r.get("learning_rate"), r.get("prompts_per_step"), r.get("max_steps"),  # noqa: E731
                     r.get("freeze_vision_tower", "false"), r.get("num_generations"))
    merged = {key(r): r for r in [*old, *rows]}
    path.write_text(json.dumps({"eval": EVAL, "rows": list(merged.values())}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(list(merged.values())))


def markdown(rows: list[dict]) -> str:
    lines = ["# Tiny recipes: settings chosen on the validation split, confirmed on the test split", "",
             "Written by `benchmarks/tiny_recipe_search.py` (command and commit per row). avg@8 in percent, "
             f"sampling {EVAL}; lift = after - warm start, +- paired standard error over questions. Every row trains "
             "from the same demo warm start (`pepo.demo.prepare(DemoSettings(), seed 0)`, weights sha256 "
             "e29e82f7a40ae65a, passed as `--start`). Test rows run the recipe file as committed at the row's "
             "commit ('recipe' in a column: that row's settings are in that file); `*_90bf80a.yaml` is the "
             "recipe file of commit 90bf80a.", ""]
    for phase, title in (("sweep", "## Sweep (validation split, 128 questions)"),
                         ("confirm", "## Shipped recipes (test split, 256 questions)")):
        chosen = [r for r in rows if r["phase"] == phase]
        if not chosen:
            continue
        lines += [title, "", "| recipe | learning_rate | prompts/step | num_generations | max_steps | freeze_vision_tower | warm start | after "
                  "| lift | paired SE | lift > 2 SE | train s | commit | command |", "|" + "---|" * 14]
        for r in chosen:
            lines.append(f"| {r['recipe']} | {r.get('learning_rate', 'recipe')} | {r.get('prompts_per_step', 'recipe')} "
                         f"| {r.get('num_generations', 'recipe')} | {r.get('max_steps', 'recipe')} | {r.get('freeze_vision_tower', 'recipe' if phase == 'confirm' else 'false')} "
                         f"| {r['before']:.1f} | {r['after']:.1f} | {r['lift']:+.1f} "
                         f"| {r['paired_se']:.1f} | {'yes' if r['lift_over_2se'] else 'no'} | {r['train_seconds']} "
                         f"| {r['commit']} | `{r['command']}` |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["sweep", "confirm", "merge"])
    parser.add_argument("--files", nargs="+", type=Path, default=[], help="merge: results .json files of other runs")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "pepo_g_tiny.yaml"), help="sweep: the recipe swept")
    parser.add_argument("--recipes", nargs="+", default=[str(REPO / "recipes" / "pepo_g_tiny.yaml")],
                        help="confirm: the recipes run as they are")
    parser.add_argument("--cache", type=Path, default=Path("runs/tiny_recipe_search/cache"),
                        help="where the demo warm start is built (pepo train's embedded_cache)")
    parser.add_argument("--start", default=None, help="a warm-start checkpoint to use instead (its data/ two levels up)")
    for name, values in GRID.items():
        parser.add_argument(f"--{name}", nargs="+", type=type(values[0]), default=values, help=f"sweep: {values}")
    parser.add_argument("--freeze_vision_tower", nargs="+", default=["true"], choices=["true", "false"],
                        help="sweep: as the demo's RL (true) or training the vision tower too (false)")
    parser.add_argument("--num_generations", nargs="+", type=int, default=[4], help="sweep: samples per prompt")
    parser.add_argument("--work", type=Path, default=Path("runs/tiny_recipe_search"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file stem (.json and .md)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the tiny model gains nothing from more threads on a shared CPU
    if args.phase == "merge":  # sweeps run in parallel processes, each into its own file
        write(args.out, [row for path in args.files for row in json.loads(path.read_text())["rows"]])
        return 0
    start = warm_start(args.cache, args.start)
    provenance = {"command": command(), "commit": commit(),
                  "start_sha256": hashlib.sha256((start / "model.safetensors").read_bytes()).hexdigest()[:16]}
    rows = (run_sweep if args.phase == "sweep" else run_confirm)(args, start, provenance)
    write(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
