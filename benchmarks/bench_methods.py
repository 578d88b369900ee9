"""Every RL method of pepo from one warm start of the embedded task, over seeds (issue 20).

    python benchmarks/bench_methods.py --task one_fact --seeds 0 1 2 3 4
    python benchmarks/bench_methods.py --task two_facts --seeds 0 1 2 3 4
    python benchmarks/bench_methods.py --task one_fact --report-only      # the tables of the rows so far

One warm start per task variant: `pepo demo`'s own steps 1-3 (:func:`pepo.demo.prepare`, through
the embedded warm-start cache of `pepo train`, one folder per settings under ``--cache``), or an
existing `pepo demo` output folder (``--from``). From it, for every seed and method, the demo's RL
phase (:func:`pepo.embedded.recipe.rl_train`, the demo's RL settings except the sizes below) and
avg@N on the first ``--questions`` questions of ``--split`` (the evaluation sampling seed is the RL
seed, so every method of one seed is scored with the same random numbers).

Rows: one per method x seed, appended to ``<results>.jsonl`` (``--results``; default
``benchmarks/results/bench_methods_<task>``) the moment it finishes, so a stopped run continues
where it stopped when the same command runs again, in this session or a later one. A row is reused
only under the same fingerprint (the warm start's weights, the task data's bytes, every RL and
evaluation setting and ``--label``) and the same method config; rows of other fingerprints stay in
the file and get their own section of ``<results>.md`` / ``<results>.json``.

Statistics (per fingerprint): each method's mean avg@N over seeds with a 95% t interval; the
difference from the method's base (:data:`BASES`), paired by seed, with its 95% t interval and the
paired t-test over seeds (``scipy.stats.ttest_rel``: the unit is the training run, so the test
includes RL's seed-to-seed variation, which a test over questions would leave out); the standard
error one run's avg@N has from the finite question set (per-question scores); the median step time
over the method's base's, per seed, averaged.

Method values: each method's own fields are those of :data:`pepo.embedded.recipe.RL_METHODS`, stored in
every row. They are not all the released ones (``recipes/paper/released_values.yaml``): the committed
rows ran DAPO's clip-higher 0.28 (the PEPO release runs 0.2), PAPO_G's 7B double entropy 0.05 / 0.05
(its 3B script: 0 / 0) and VPPO's config defaults k 0.2 / beta_min 0.8 (its scripts: 0.4 / 0.9). Every
section of ``<results>.md`` carries a table of the values its rows ran beside the releases', with the
reason for each difference (:data:`WHY_DIFFERENT`); the rows are not re-run to change them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = ("grpo", "dapo", "pepo_g", "pepo_d", "papo_g", "vppo", "high_entropy")
# method -> the method it adds to (its config is the base's plus its own fields; checked in main)
BASES = {"pepo_g": "grpo", "papo_g": "grpo", "high_entropy": "grpo", "perception": "grpo", "exploration": "grpo",
         "pepo_d": "dapo", "papo_d": "dapo", "vppo": "dapo"}
WARM_START = "warm_start"


@dataclass(frozen=True)
class BenchSettings:
    """What a row's numbers depend on besides the warm start, the data and the method (fingerprinted)."""

    label: str
    task: str
    split: str
    questions: int
    eval_samples: int
    rl_steps: int
    prompts_per_step: int
    num_generations: int
    learning_rate: float
    max_completion_length: int
    loss_type: str
    freeze_vision_tower: bool


def parse_args(argv: list[str] | None):
    from pepo.cli_checks import OneLineParser
    from pepo.embedded.synthetic import TASKS

    parser = OneLineParser(prog="bench_methods.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="one_fact", help="the synthetic task variant")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated RL methods")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rl-steps", type=int, default=100, help="RL steps per run (the demo: 200)")
    parser.add_argument("--prompts-per-step", type=int, default=16, help="prompts per RL step (the demo: 32)")
    parser.add_argument("--learning-rate", type=float, default=None, help="RL learning rate [the demo's: 2e-4]")
    parser.add_argument("--questions", type=int, default=128, help="the first N questions of --split are scored")
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="val to choose settings, test for the comparison")
    parser.add_argument("--eval-samples", type=int, default=8, help="samples per question (avg@N)")
    parser.add_argument("--label", default="main", help="names the run in the tables (e.g. sizing); part of the fingerprint")
    parser.add_argument("--from", dest="source", default=None,
                        help="a `pepo demo` output folder whose data/ and warm_start/checkpoint are used")
    parser.add_argument("--cache", default="runs/bench_methods",
                        help="where the warm start is built (once per task and settings) and the RL runs go")
    parser.add_argument("--results", default=None, help="results prefix [benchmarks/results/bench_methods_<task>]")
    parser.add_argument("--report-only", action="store_true", help="write the tables from the rows so far, run nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser, parser.parse_args(argv)


def check_args(parser, args) -> list[str]:
    """The methods to run; every argument checked before anything is loaded (one line, exit 2)."""
    from pepo.embedded.recipe import RL_METHODS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in RL_METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown method(s) {unknown}; choose from {sorted(RL_METHODS)}")
    for name in ("rl_steps", "prompts_per_step", "questions", "eval_samples", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.learning_rate is not None and not 0 < args.learning_rate < 1:
        parser.error(f"--learning-rate must be in (0, 1), got {args.learning_rate}")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct and >= 0, got {args.seeds}")
    if args.source:
        for needed in ("warm_start/checkpoint/config.json", f"data/{args.split}.jsonl", "data/train.jsonl"):
            if not (Path(args.source) / needed).is_file():
                parser.error(f"--from {args.source}: no {needed} there (expected a `pepo demo` output folder)")
        from pepo.embedded.synthetic import TASKS

        split_file = Path(args.source) / "data" / f"{args.split}.jsonl"
        qtypes = set()
        for line_no, line in enumerate(split_file.read_text().splitlines(), 1):
            try:
                qtypes.add(json.loads(line).get("qtype"))
            except (json.JSONDecodeError, AttributeError):
                parser.error(f"{split_file}:{line_no}: not a JSON record")
        if not qtypes <= set(TASKS[args.task]):
            parser.error(f"--from {args.source}: {split_file.name} asks {sorted(map(str, qtypes - set(TASKS[args.task])))}, "
                         f"not --task {args.task}'s question types {list(TASKS[args.task])}")
    return methods


def settings_from(args) -> tuple[BenchSettings, object]:
    """The bench settings and the :class:`pepo.demo.DemoSettings` the warm start is built with."""
    from pepo.demo import DemoSettings
    from pepo.embedded.synthetic import TASKS

    demo = DemoSettings(qtypes=TASKS[args.task])
    bench = BenchSettings(
        label=args.label, task=args.task, split=args.split, questions=args.questions, eval_samples=args.eval_samples,
        rl_steps=args.rl_steps, prompts_per_step=args.prompts_per_step, num_generations=demo.num_generations,
        learning_rate=args.learning_rate or demo.rl_learning_rate, max_completion_length=demo.max_completion_length,
        loss_type=demo.rl_loss_type, freeze_vision_tower=demo.rl_freeze_vision_tower,
    )
    return bench, demo


def warm_start_folder(args, demo_settings) -> Path:
    """The folder holding ``data/`` and ``warm_start/checkpoint``: ``--from``, else built once under ``--cache``."""
    if args.source:
        return Path(args.source)
    from pepo.train import embedded_warm_start

    return embedded_warm_start(Path(args.cache), demo_settings, seed=0, label=args.task).parents[1]


def fingerprint(folder: Path, settings: BenchSettings) -> str:
    """sha256 over the warm start's weights, every byte of the task data and the settings."""
    from pepo.evaluation.resume import file_fingerprint, model_fingerprint

    content = {"warm_start": model_fingerprint(folder / "warm_start" / "checkpoint"),
               "data": file_fingerprint(folder / "data"), "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# rows: one per method x seed, appended as each finishes
# ----------------------------------------------------------------------------------------------


def with_suffix(prefix: Path, suffix: str) -> Path:
    return prefix.with_name(prefix.name + suffix)


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise SystemExit(f"bench_methods.py: {path}:{line_no}: not a JSON row ({error}); "
                             "remove that line (a run killed while writing it) and rerun") from None
    return rows


def row_key(fp: str, method: str, config: dict, seed: int) -> tuple:
    return fp, method, json.dumps(config, sort_keys=True), seed


def method_config(method: str) -> dict:
    from pepo.embedded.recipe import RL_METHODS

    return {} if method == WARM_START else dict(RL_METHODS[method])


# PEPOConfig fields that choose the token-level method; the rest (loss, clipping, sampling) is the base's
METHOD_FIELDS = ("weighting", "top_entropy_quantile", "perception_aware", "papo_", "vppo_", "gate_")


# bench method -> the row of recipes/paper/released_values.yaml its own fields are compared with
RELEASES = REPO / "recipes" / "paper" / "released_values.yaml"
RELEASED_ROW = {
    "grpo": "pepo_g_qwen2_5_vl_3b_geometry3k", "pepo_g": "pepo_g_qwen2_5_vl_3b_geometry3k",
    "high_entropy": "pepo_g_qwen2_5_vl_3b_geometry3k", "perception": "pepo_g_qwen2_5_vl_3b_geometry3k",
    "exploration": "pepo_g_qwen2_5_vl_3b_geometry3k",
    "dapo": "pepo_d_qwen2_5_vl_3b_geometry3k", "pepo_d": "pepo_d_qwen2_5_vl_3b_geometry3k",
    "papo_g": "papo_g_qwen2_5_vl_3b_virl39k", "papo_d": "papo_d_qwen2_5_vl_3b_virl39k",
    "vppo": "vppo_qwen2_5_vl_7b_virl39k",
}
# the fields that make a method what it is (loss, KL, sampling and sizes are the bench's own, one for all)
COMPARED_FIELDS = ("epsilon_high", "dynamic_sampling", "mask_truncated_completions", "top_entropy_quantile",
                   "papo_gamma", "papo_eta_ori", "papo_eta_aug", "vppo_k", "vppo_beta_min", "vppo_entropy_coef")
_PAIRED = "the paired comparison needs each method on its base's loss, clip and filtering (check_bases)"
# why a committed row's value differs from its release: the rows are not re-run (issue 28)
WHY_DIFFERENT = {
    ("dapo", "epsilon_high"): "canonical DAPO's clip-higher (arXiv 2503.14476); the PEPO release's DAPO runs "
                              "ms-swift's symmetric 0.2, found after these rows ran",
    ("pepo_d", "epsilon_high"): "its base dapo's clip (see dapo)",
    ("papo_d", "epsilon_high"): "its base dapo's clip (see dapo)",
    ("vppo", "epsilon_high"): "its base dapo's clip (see dapo)",
    ("papo_g", "epsilon_high"): "PAPO's EasyR1 default clip 0.3; " + _PAIRED,
    ("papo_d", "mask_truncated_completions"): "EasyR1 has no overlong filter; " + _PAIRED,
    ("vppo", "mask_truncated_completions"): "EasyR1 has no overlong filter; " + _PAIRED,
    ("papo_g", "papo_eta_ori"): "the released 7B PAPO_G values; the 3B script leaves the double entropy off",
    ("papo_g", "papo_eta_aug"): "the released 7B PAPO_G values; the 3B script leaves the double entropy off",
    ("vppo", "vppo_k"): "VPPO's config default (verl/trainer/config.py); both released scripts override it",
    ("vppo", "vppo_beta_min"): "VPPO's config default (verl/trainer/config.py); both released scripts override it",
    ("high_entropy", "top_entropy_quantile"): "the method itself (High-Entropy RL, arXiv 2506.01939); no released "
                                              "script, compared with the PEPO_G script it otherwise follows",
}


def released_values_table(rows: list[dict]) -> list[str]:
    """Markdown lines: each method's own values in ``rows`` beside its release's, and why they differ."""
    import dataclasses

    import yaml

    from pepo.trainer.config import PEPOConfig

    table = yaml.safe_load(RELEASES.read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(PEPOConfig)}
    lines = ["Method values these rows ran, beside the released scripts' (`recipes/paper/released_values.yaml`); "
             "every method ran with this section's loss_type and no KL term (beta 0: no reference model):", "",
             "| method | field | these rows | release | released script | why different |", "|---|---|---|---|---|---|"]
    same = []
    configs = {r["method"]: r["method_config"] for r in rows if r["method"] in RELEASED_ROW}
    for method, config in configs.items():
        row = table[RELEASED_ROW[method]]
        released = {**row.get("defaults", {}), **row["values"]}
        for field in COMPARED_FIELDS:
            ran, rel = config.get(field, defaults[field]), released.get(field, defaults[field])
            if field not in config and field not in released:
                continue
            if ran == rel:
                same.append(f"{method} {field}")
                continue
            why = WHY_DIFFERENT.get((method, field), _PAIRED)
            lines.append(f"| {method} | {field} | {ran} | {rel} | {row['repository']} {row['path'].split(' ')[0]} | {why} |")
    return lines + ["", f"Equal to the release: {', '.join(same) or 'none'}.", ""]


def check_bases(methods: list[str]) -> None:
    """Each method's config is its base's but for method fields (:data:`METHOD_FIELDS`): else the
    paired comparison would change more than the method."""
    for method in methods:
        base = BASES.get(method)
        if base:
            own, theirs = method_config(method), method_config(base)
            changed = sorted(k for k in own.keys() | theirs.keys()
                             if own.get(k) != theirs.get(k) and not k.startswith(METHOD_FIELDS))
            if changed:
                raise SystemExit(f"bench_methods.py: {method} changes its base {base}'s {changed}: fix BASES")


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def run_one(folder: Path, records: list, train_rows: list, settings: BenchSettings, fp: str, method: str,
            seed: int, out: Path, commit: str) -> dict:
    """One method x seed: RL from the warm start (none for the warm start itself), then avg@N.
    ``commit``: the code's git commit when the process started (it runs that code to the end)."""
    from pepo.embedded.recipe import rl_train
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    load_before = os.getloadavg()
    row = {"fingerprint": fp, "label": settings.label, "task": settings.task, "method": method, "seed": seed,
           "method_config": method_config(method), "settings": asdict(settings), "commit": commit}
    checkpoint, rl_seconds, step_times = folder / "warm_start" / "checkpoint", 0.0, []
    if method != WARM_START:
        result = rl_train(
            checkpoint, train_rows, out / f"{method}_seed{seed}", method, max_steps=settings.rl_steps,
            prompts_per_step=settings.prompts_per_step, num_generations=settings.num_generations,
            learning_rate=settings.learning_rate, max_completion_length=settings.max_completion_length, seed=seed,
            freeze_vision_tower=settings.freeze_vision_tower, loss_type=settings.loss_type,
        )
        checkpoint, rl_seconds = result.checkpoint, result.seconds
        step_times = [r["step_time"] for r in result.log if "step_time" in r]
    started = time.perf_counter()
    model, processor = load_model_and_processor(checkpoint)
    evaluation = evaluate_model(model, processor, records, n=settings.eval_samples,
                                max_new_tokens=settings.max_completion_length, batch_size=32, seed=seed, progress=False)
    row.update({
        "avg": evaluation.totals["avg_at_n"] / 100, "majority": evaluation.totals["majority"] / 100,
        "mean_length": evaluation.totals["mean_completion_tokens"],
        "per_question": [q["score"] for q in evaluation.questions],
        "rl_seconds": rl_seconds, "step_time_median": statistics.median(step_times) if step_times else None,
        "eval_seconds": time.perf_counter() - started,
        "load_before": list(load_before), "load_after": list(os.getloadavg()),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    })
    return row


# ----------------------------------------------------------------------------------------------
# statistics and tables
# ----------------------------------------------------------------------------------------------


def t_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); the half-width is NaN for fewer than 2 values."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def question_se(scores: list[float]) -> float:
    """Standard error of a mean over questions (one run's avg@N, or a paired per-question difference)."""
    return statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else math.nan


def summarise(rows: list[dict]) -> dict:
    """One fingerprint's rows (the newest row per method x seed) -> per-method statistics."""
    from scipy import stats

    by_method: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], {})[row["seed"]] = row
    summary = {}
    for method, seeds in by_method.items():
        avgs = [seeds[s]["avg"] for s in sorted(seeds)]
        mean, half = t_interval(avgs)
        entry = {"seeds": sorted(seeds), "avg": avgs, "mean": mean, "ci95": half,
                 "question_se": statistics.fmean(question_se(r["per_question"]) for r in seeds.values()),
                 "minutes_per_run": statistics.fmean((r["rl_seconds"] + r["eval_seconds"]) / 60 for r in seeds.values()),
                 "step_time_median": _mean_or_none([r["step_time_median"] for r in seeds.values()])}
        base = BASES.get(method)
        if base in by_method:
            paired = sorted(set(seeds) & set(by_method[base]))
            if paired:
                mine, theirs = [seeds[s] for s in paired], [by_method[base][s] for s in paired]
                diffs = [a["avg"] - b["avg"] for a, b in zip(mine, theirs)]
                diff_mean, diff_half = t_interval(diffs)
                p = float(stats.ttest_rel([a["avg"] for a in mine], [b["avg"] for b in theirs]).pvalue) if len(paired) > 1 else math.nan
                entry["vs_base"] = {
                    "base": base, "seeds": paired, "diff": diffs, "mean": diff_mean, "ci95": diff_half, "p_ttest_rel": p,
                    "question_se": statistics.fmean(
                        question_se([x - y for x, y in zip(a["per_question"], b["per_question"])]) for a, b in zip(mine, theirs)),
                    "step_time_ratio": _mean_or_none([a["step_time_median"] / b["step_time_median"] for a, b in zip(mine, theirs)
                                                      if a["step_time_median"] and b["step_time_median"]]),
                }
        summary[method] = entry
    return summary


def _mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def section(fp: str, rows: list[dict], summary: dict) -> str:
    """The markdown section of one fingerprint."""
    s = rows[-1]["settings"]
    label = s["label"] + (" (sizing run: not the final comparison)" if s["label"] == "sizing" else "")
    n = s["eval_samples"]
    lines = [
        f"## task {s['task']}, label {label}",
        "",
        f"Fingerprint {fp[:16]}; {s['questions']} {s['split']} questions x {n} samples (avg@{n}); RL {s['rl_steps']} steps x "
        f"{s['prompts_per_step']} prompts x {s['num_generations']} samples, lr {s['learning_rate']}, loss_type "
        f"{s['loss_type']}, vision tower {'frozen' if s['freeze_vision_tower'] else 'trained'}; commits "
        f"{', '.join(sorted({r['commit'] for r in rows}))}; rows finished {rows[0]['finished']} to {rows[-1]['finished']}.",
        "",
        f"| method | seeds | avg@{n} per seed | mean | 95% CI (t) | SE of one run (questions) | base | diff vs base (paired by seed) "
        "| 95% CI | p (ttest_rel, seeds) | SE of one diff (questions) | median step s | step time / base | min per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [WARM_START, *DEFAULT_METHODS] + sorted(set(summary) - {WARM_START, *DEFAULT_METHODS})
    for method in [m for m in order if m in summary]:
        e = summary[method]
        v = e.get("vs_base", {})
        ratio = v.get("step_time_ratio")
        step = e["step_time_median"]
        lines.append(
            f"| {method} | {len(e['seeds'])} | {' '.join(_pct(a) for a in e['avg'])} | {_pct(e['mean'])} | "
            f"+- {_pct(e['ci95'])} | {_pct(e['question_se'])} | {v.get('base', '-')} | {_pct(v.get('mean'), True)} | "
            f"+- {_pct(v.get('ci95'))} | {'n/a' if v.get('p_ttest_rel') is None or math.isnan(v['p_ttest_rel']) else format(v['p_ttest_rel'], '.3f')} | "
            f"{_pct(v.get('question_se'))} | {'n/a' if step is None else f'{step:.2f}'} | "
            f"{'n/a' if ratio is None else f'{ratio:.3f}'} | {e['minutes_per_run']:.1f} |")
    loads = [r["load_before"][0] for r in rows] + [r["load_after"][0] for r in rows]
    lines += ["", f"Load average (1 min) during the rows: {min(loads):.1f} to {max(loads):.1f} on this machine's "
              f"{os.cpu_count()} CPUs: step times are comparable within a seed (base and method ran back to back), "
              "not across machines.", ""]
    lines += released_values_table(rows)
    return "\n".join(lines)


def write_report(rows: list[dict], prefix: Path) -> str:
    """``<prefix>.md`` and ``<prefix>.json``: one section per fingerprint, newest first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["fingerprint"], []).append(row)
    for fp, group in groups.items():  # a method whose config changed: only the rows of its newest config
        newest = {r["method"]: r["method_config"] for r in group}
        groups[fp] = [r for r in group if r["method_config"] == newest[r["method"]]]
    ordered = sorted(groups.items(), key=lambda kv: kv[1][-1]["finished"], reverse=True)
    summaries = {fp: summarise(group) for fp, group in ordered}
    text = "\n".join(["# bench_methods: every RL method from one warm start, over seeds", "",
                      "Written by `benchmarks/bench_methods.py` from the rows of " f"`{prefix.name}.jsonl`.", ""]
                     + [section(fp, group, summaries[fp]) for fp, group in ordered])
    with_suffix(prefix, ".md").write_text(text)
    with_suffix(prefix, ".json").write_text(json.dumps(
        {fp: {"settings": group[-1]["settings"], "summary": summaries[fp]} for fp, group in ordered}, indent=1))
    return text


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    commit = _commit()  # before the warm start build: the code this process runs
    parser, args = parse_args(argv)
    methods = check_args(parser, args)
    check_bases(methods)
    prefix = Path(args.results or REPO / "benchmarks" / "results" / f"bench_methods_{args.task}")
    rows_path = with_suffix(prefix, ".jsonl")
    if args.report_only:
        rows = read_rows(rows_path)
        if not rows:
            parser.error(f"--report-only: no rows in {rows_path} yet")
        print(write_report(rows, prefix))
        return 0
    torch.set_num_threads(args.threads)
    from pepo.data import load_geometry3k
    from pepo.embedded.recipe import load_rows

    settings, demo_settings = settings_from(args)
    if args.source:
        available = len((Path(args.source) / "data" / f"{args.split}.jsonl").read_text().splitlines())
    else:
        available = demo_settings.n_val if args.split == "val" else demo_settings.n_test
    if args.questions > available:
        parser.error(f"--questions {args.questions}: the {args.split} split has {available} questions")
    folder = warm_start_folder(args, demo_settings)
    fp = fingerprint(folder, settings)
    rows = read_rows(rows_path)
    done = {row_key(r["fingerprint"], r["method"], r["method_config"], r["seed"]) for r in rows}
    todo = [(WARM_START, 0)] + [(m, s) for s in args.seeds for m in methods]  # base and method back to back per seed
    todo = [(m, s) for m, s in todo if row_key(fp, m, method_config(m), s) not in done]
    print(f"warm start {folder}; fingerprint {fp[:16]}; {len(todo)} runs to do, rows in {rows_path}", flush=True)
    if todo:
        records = load_geometry3k(folder / "data" / f"{args.split}.jsonl", image_root=folder / "data").records[: args.questions]
        train_rows = load_rows(folder / "data" / "train.jsonl")
        for method, seed in todo:
            row = run_one(folder, records, train_rows, settings, fp, method, seed, Path(args.cache) / f"runs-{fp[:12]}", commit)
            with rows_path.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(row) + "\n")
            print(f"{method} seed {seed}: avg@{settings.eval_samples} {100 * row['avg']:.1f}, "
                  f"RL {row['rl_seconds']:.0f} s, eval {row['eval_seconds']:.0f} s", file=sys.stderr, flush=True)
    rows = read_rows(rows_path)
    print(write_report(rows, prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
