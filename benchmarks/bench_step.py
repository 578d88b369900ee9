"""What PEPO costs inside a whole training step: PEPOTrainer with ``weighting=none`` vs ``pepo``
(and the High-Entropy RL baseline, TRL's ``top_entropy_quantile=0.2``), on one model, in one run.

    python benchmarks/bench_step.py            # CPU-sized Qwen2.5-VL, 8 layers, hidden 512 (~10 min on 2 cores)
    python benchmarks/bench_step.py --quick    # 2 layers, hidden 128, short sequences (~1 min)
    python benchmarks/bench_step.py --update-only --device cuda   # one rollout, then updates only
    python benchmarks/bench_step.py --update-only --compare 77436cb --methods none,pepo,none_control

``--compare REV`` runs this script twice, as two worker processes, one on this checkout's sources
and one on ``git archive REV``'s (``benchmarks/versions.py``, as ``bench_demo_time.py --compare``),
each building its version's model and trainers once; the parent asks them for one repetition at a
time, alternating which version goes first, and writes both versions' tables and a side-by-side
one (``results/bench_step_compare_REV[...].md`` / ``.json``, with the command and both commits).

``--update-only`` generates one rollout (the inputs every update scores) and then times interleaved
policy updates only: on a GPU, ``generate`` is most of a step's time and tells nothing about PEPO.

The model is a Qwen2.5-VL built from config by :func:`pepo.embedded.build_tiny_vlm` (random
weights, word-level tokenizer; nothing is downloaded): by default 8 decoder layers, hidden 512,
448 x 448 images (256 image tokens), 512-token completions, so each row is about 800 tokens.
One GRPO step of ``G`` completions of one prompt is split in its two phases, each timed apart:

* **rollout**: TRL's ``_generate_and_score_completions`` (generation, rewards, advantages), with the
  same seed for every method, so every method generates the same tokens;
* **policy update**: ``compute_loss`` + ``backward`` on one fixed rollout, the same inputs for every
  method (this is where PEPO works: hidden states from the one policy forward, perception prior,
  token weights). The optimiser step is left out: it is the same for every method and would only
  make rho smaller.

Each method has its own copy of the model (same weights) and trainer; ``none_control`` is a
second plain-GRPO trainer, an A/A control whose rho shows the noise floor of the measurement. Repetitions are interleaved
(rep r runs the methods in an order rotated by r) so that a load change on the machine touches all
methods alike. Reported per method: median times, ``rho = (t_method - t_none) / t_none`` computed
per repetition (paired) with its median and interquartile range, PEPO's own compute as the trainer
measures it (``pepo/time_s``: the perception prior, token weights and metrics, timed inside the
step) and its share of the update, and the peak memory ratio.

Clocks: on CPU the times and rho's are the process's CPU seconds (``time.process_time``) with one
torch thread by default: on a small machine shared with other work, wall time mostly measures who
else is running, CPU time measures the work. The wall-clock rho of the update is shown beside it.
On CUDA everything is wall time after ``torch.cuda.synchronize()``.

Peak memory (CPU): the process runs with glibc's mmap threshold lowered so freed tensors go back
to the OS; before each timed call the peak resident set (VmHWM) is reset through
``/proc/self/clear_refs``, and the call's peak is read against the resident set before it (the
models, the rollout). On CUDA: ``torch.cuda.max_memory_allocated`` over the same window.

Writes ``benchmarks/results/bench_step[_quick].json`` (every repetition) and ``.csv`` (the summary).
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Allocations above 64 KiB are mmap'ed and unmapped on free, so the resident set follows live
# memory. glibc reads these at start-up: re-execute once with them set.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/versions.py, also when loaded by path
from versions import ROOT, commit_of, version_sources  # noqa: E402

RESULTS = Path(__file__).parent / "results"
METHODS = {
    "none": {"weighting": "none"},  # plain GRPO
    "pepo": {"weighting": "pepo", "schedule": "constant"},  # PEPO_G, weights fully applied (lambda = 1)
    "high_entropy": {"weighting": "none", "top_entropy_quantile": 0.2},  # High-Entropy RL baseline
    # A/A control: plain GRPO again, on its own model copy. Its rho's are what a method costing exactly
    # nothing measures on this machine (noise and placement effects): read the others against it.
    "none_control": {"weighting": "none"},
}
SIZES = {
    # num_layers, hidden_size, image_size (px; /28 squared = image tokens), completion tokens, generations, reps
    "full": dict(num_layers=8, hidden_size=512, image_size=448, completion=512, generations=4, reps=7),
    "quick": dict(num_layers=2, hidden_size=128, image_size=112, completion=64, generations=4, reps=3),
}


# ---- memory and machine -------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak memory of a block above what was live before it, in MiB (CPU: resident set; CUDA: allocator)."""

    def __init__(self, device: str):
        self.device = device
        self.mib = 0.0

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kib("VmHWM") * 1024
        self.mib = (peak - self.base) / 2**20


def machine_name(device: str, threads: int) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA), {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = "a GPU present, not used" if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPU cores, {threads} torch thread(s), {gpu}"


# ---- model, data, trainers ----------------------------------------------------------------------

def build_model_and_processor(size: dict, workdir: Path, dtype: torch.dtype, device: str, family: str = "qwen2_5_vl"):
    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_model_and_processor

    # the default family without the keyword: --compare runs this on versions whose build_tiny_vlm has none
    chosen = {} if family == "qwen2_5_vl" else {"family": family}
    path = build_tiny_vlm(workdir / "model", seed=0, hidden_size=size["hidden_size"], num_layers=size["num_layers"],
                          image_size=size["image_size"], **chosen)
    return load_model_and_processor(path, dtype=dtype, device=device)


def prompt_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows of the synthetic task (in the tokenizer's vocabulary), TRL's conversational VLM layout."""
    from pepo.embedded.synthetic import PROMPT_SUFFIX, make_problem, render

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        problem = make_problem(rng)
        rows.append({
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{problem.question}\n\n{PROMPT_SUFFIX}"}]}],
            "image": render(problem),
        })
    return rows


def varying_reward(completions, **kwargs) -> list[float]:
    """Varies within a group, so advantages are non-zero (a random model earns no accuracy reward)."""
    return [float(len(str(c)) % 5) for c in completions]


def build_trainers(model, processor, size: dict, args, workdir: Path, methods: dict | None = None) -> dict:
    """One trainer per method of ``methods`` (default :data:`METHODS`: name -> PEPOConfig fields), each on
    its own copy of ``model``."""
    from datasets import Dataset

    from pepo.trainer import PEPOConfig, PEPOTrainer

    dataset = Dataset.from_list(prompt_rows(4))
    trainers = {}
    for name, fields in (METHODS if methods is None else methods).items():
        config = PEPOConfig(
            output_dir=str(workdir / name), use_cpu=args.device == "cpu", bf16=args.dtype == "bfloat16",
            activation_checkpointing=args.checkpointing, report_to=[], seed=0, disable_tqdm=True,
            per_device_train_batch_size=size["generations"], num_generations=size["generations"],
            max_completion_length=size["completion"], max_steps=1, save_strategy="no", logging_steps=1,
            loss_type="grpo", beta=0.0, temperature=1.0,
            # every completion runs to max_completion_length: the sequence length is the one asked for
            generation_kwargs={"min_new_tokens": size["completion"]},
            **fields,
        )
        trainers[name] = PEPOTrainer(model=copy.deepcopy(model), reward_funcs=[varying_reward], args=config,
                                     train_dataset=dataset, processing_class=processor)
    return trainers


# ---- the two phases of a step -------------------------------------------------------------------

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Wall seconds and this process's CPU seconds of a block. On a shared CPU machine with one torch
    thread, CPU seconds are the work itself, barely touched by other processes taking turns on the cores."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def rollout(trainer, examples, seed: int, device: str):
    """TRL's generation + scoring of one batch; returns (inputs, Timer, peak MiB)."""
    trainer.model.train()
    torch.manual_seed(seed)
    with PeakMemory(device) as mem, Timer(device) as timer:
        inputs = trainer._generate_and_score_completions(examples)
    return inputs, timer, mem.mib


def policy_update(trainer, inputs, device: str):
    """``compute_loss`` + ``backward`` on ``inputs``; returns (Timer, peak MiB, PEPO's own wall seconds)."""
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)  # as after an optimiser step: the gradients are allocated anew
    trainer.current_gradient_accumulation_steps = 1
    clock = getattr(trainer, "_pepo_clock", None)  # versions before issue 15 (--compare 77436cb): _pepo_seconds
    if clock is not None:
        clock.reset()
    else:
        trainer._pepo_seconds = 0.0
    with PeakMemory(device) as mem, Timer(device) as timer:
        loss = trainer.compute_loss(model, copy.copy(inputs))
        loss.backward()
    del loss
    # after the Timer's sync: reading costs nothing
    return timer, mem.mib, clock.read_open() if clock is not None else trainer._pepo_seconds


# ---- statistics and output ----------------------------------------------------------------------

def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(p25, median, p75); for fewer than 2 values all three are the value."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarise(reps: list[dict], clock: str) -> list[dict]:
    """Per method: medians, paired rho's (median and quartiles over repetitions), PEPO's own share, peak ratio.
    ``clock`` is ``"cpu"`` (process CPU seconds) or ``"wall"``: the seconds rho is computed from."""
    suffix = "_cpu_s" if clock == "cpu" else "_s"
    with_rollouts = "rollout_s" in reps[0]["none"]  # not with --update-only
    rows = []
    for name in METHODS:
        def series(key, method=name):
            return [r[method][key] for r in reps]

        def paired_rho(key, method=name):
            if key not in reps[0][method]:
                return None
            return quartiles([r[method][key] / r["none"][key] - 1.0 for r in reps])

        def median(key, method=name):
            return statistics.median(series(key, method)) if key in reps[0][method] else None

        peak, none_peak = statistics.median(series("update_peak_mib")), statistics.median(series("update_peak_mib", "none"))
        rows.append({
            "method": name,
            "clock": clock,
            "rollout_s": median("rollout" + suffix),
            "update_s": median("update" + suffix),
            "step_s": median("step" + suffix),
            "rho_rollout": paired_rho("rollout" + suffix),
            "rho_update": paired_rho("update" + suffix),
            "rho_step": paired_rho("step" + suffix),
            "rho_update_wall": paired_rho("update_s"),
            "pepo_own_ms": 1e3 * statistics.median(series("pepo_own_s")),
            # PEPO's own compute, timed inside the step, over the whole update of the same repetition
            # (both wall seconds): the low-noise estimate of rho_update
            "pepo_own_share": statistics.median([r[name]["pepo_own_s"] / r[name]["update_s"] for r in reps]),
            "update_peak_mib": peak,
            # a tiny model's update can stay inside memory the process already holds: no ratio then
            "update_peak_ratio": peak / none_peak if none_peak > 0 else None,
            "rollout_peak_mib": median("rollout_peak_mib") if with_rollouts else None,
        })
    return rows


def pct(q: tuple[float, float, float] | None) -> str:
    return "-" if q is None else f"{100 * q[1]:+.2f}% [{100 * q[0]:+.2f}, {100 * q[2]:+.2f}]"


def num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(summary: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    clock = summary[0]["clock"]
    table = Table(title=title)
    columns = ("method", f"rollout s ({clock})", f"update s ({clock})", "rho rollout [IQR]", "rho update [IQR]",
               "rho update, wall [IQR]", "rho step [IQR]", "PEPO own ms", "own / update", "update peak MiB",
               "peak ratio")
    for col in columns:
        table.add_column(col, justify="right")
    for r in summary:
        table.add_row(
            r["method"], num(r["rollout_s"], ".2f"), f"{r['update_s']:.3f}", pct(r["rho_rollout"]), pct(r["rho_update"]),
            pct(r["rho_update_wall"]), pct(r["rho_step"]), f"{r['pepo_own_ms']:.1f}",
            f"{100 * r['pepo_own_share']:.3f}%", f"{r['update_peak_mib']:.1f}", num(r['update_peak_ratio'], ".4f"),
        )
    Console(width=230).print(table)


def markdown_table(summary: list[dict]) -> str:
    """The summary as a Markdown table (what the README shows)."""
    clock = summary[0]["clock"]
    lines = [
        f"| method | rollout s ({clock}) | update s ({clock}) | rho rollout | rho update | rho update (wall) | rho step "
        "| PEPO own ms | own / update | update peak MiB | peak ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['method']} | {num(r['rollout_s'], '.2f')} | {r['update_s']:.3f} | {pct(r['rho_rollout'])} | "
            f"{pct(r['rho_update'])} | {pct(r['rho_update_wall'])} | {pct(r['rho_step'])} | {r['pepo_own_ms']:.1f} | "
            f"{100 * r['pepo_own_share']:.3f}% | {r['update_peak_mib']:.1f} | {num(r['update_peak_ratio'], '.4f')} |"
        )
    return "\n".join(lines)


CSV_FIELDS = ("method", "clock", "rollout_s", "update_s", "step_s", "rho_rollout", "rho_update", "rho_update_wall",
              "rho_step", "pepo_own_ms", "pepo_own_share", "update_peak_mib", "update_peak_ratio", "rollout_peak_mib")


def write_results(out: Path, meta: dict, reps: list[dict], summary: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "summary": summary, "repetitions": reps}, indent=2))
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["machine"]
        for field in CSV_FIELDS:
            header += [f"{field}_p25", f"{field}_median", f"{field}_p75"] if field.startswith("rho") else [field]
        writer.writerow(header)
        for r in summary:
            row = [meta["machine"]]
            for field in CSV_FIELDS:
                if field.startswith("rho"):
                    row += list(r[field]) if r[field] is not None else ["", "", ""]
                else:
                    row += [r[field]]
            writer.writerow(row)


def setup(size: dict, args, workdir: Path) -> tuple[dict, dict, list, dict]:
    """The model, one trainer per method, a warm-up, and the fixed rollout every update scores.
    Returns (trainers, inputs, examples, model facts)."""
    model, processor = build_model_and_processor(size, workdir, getattr(torch, args.dtype), args.device)
    trainers = build_trainers(model, processor, size, args, workdir)
    del model
    first = next(iter(trainers.values()))
    examples = [first.train_dataset[0]] * size["generations"]  # one prompt group
    # warm-up (thread pools, allocator, first-call work) and the fixed rollout every update scores
    inputs = None
    for trainer in trainers.values():
        if inputs is None or not args.update_only:
            inputs, _, _ = rollout(trainer, examples, seed=0, device=args.device)
        policy_update(trainer, inputs, args.device)
    prompt_len, completion_len = inputs["prompt_ids"].shape[1], inputs["completion_ids"].shape[1]
    image_tokens = int((inputs["prompt_ids"][0] == first.image_token_id).sum())
    print(f"rows: {size['generations']} x (prompt {prompt_len} incl. {image_tokens} image tokens + "
          f"completion {completion_len}) = {prompt_len + completion_len} tokens each", flush=True)
    model_info = {"family": "Qwen2.5-VL (built from config)", "parameters": sum(p.numel() for p in first.model.parameters()),
                  **size, "prompt_tokens": prompt_len, "image_tokens": image_tokens, "completion_tokens": completion_len,
                  "activation_checkpointing": args.checkpointing}
    return trainers, inputs, examples, model_info


def repetition(r: int, trainers: dict, inputs: dict, examples: list, args) -> dict:
    """Repetition ``r``: every method once, in an order rotated by ``r``."""
    names = list(trainers)
    order = names[r % len(names):] + names[: r % len(names)]
    rep = {"order": order}
    for name in order:
        trainer = trainers[name]
        if not args.update_only:
            _, rollout_t, rollout_peak = rollout(trainer, examples, seed=1 + r, device=args.device)
        update_t, update_peak, own = policy_update(trainer, inputs, args.device)
        rep[name] = {"update_s": update_t.wall, "update_cpu_s": update_t.cpu, "pepo_own_s": own,
                     "update_peak_mib": update_peak}
        if not args.update_only:
            rep[name].update({"rollout_s": rollout_t.wall, "step_s": rollout_t.wall + update_t.wall,
                              "rollout_cpu_s": rollout_t.cpu, "step_cpu_s": rollout_t.cpu + update_t.cpu,
                              "rollout_peak_mib": rollout_peak})
    return rep


def rep_line(r: int, reps: int, rep: dict) -> str:
    return f"rep {r + 1}/{reps} (load {os.getloadavg()[0]:.1f}): " + ", ".join(
        f"{n} update {rep[n]['update_s']:.3f}s (cpu {rep[n]['update_cpu_s']:.3f}s)" for n in rep["order"])


def profile_updates(trainers: dict, inputs: dict, device: str) -> str:
    """One more policy update per method under ``torch.profiler``: its operators by self time (device
    time on CUDA), as text, to show where a method's extra time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sort = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    parts = []
    for name, trainer in trainers.items():
        with profile(activities=activities) as prof:
            timer, _, own = policy_update(trainer, inputs, device)
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=40)
        except (KeyError, AttributeError, ValueError):  # a torch without that sort key
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        parts.append(f"## {name}: update {timer.wall:.4f} s wall (profiled), PEPO own {1e3 * own:.2f} ms\n\n{table}")
    return "\n\n".join(parts) + "\n"


def measure(size: dict, args) -> tuple[list[dict], dict]:
    """Build the model and one trainer per method, then run ``size["reps"]`` interleaved repetitions.
    ``args``: ``device``, ``dtype``, ``checkpointing``, ``update_only``, optionally ``profile`` (a path:
    :func:`profile_updates` is written there after the timed repetitions). Returns (repetitions, model facts)."""
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        trainers, inputs, examples, model_info = setup(size, args, Path(tmp))
        reps = []
        for r in range(size["reps"]):
            reps.append(repetition(r, trainers, inputs, examples, args))
            print(rep_line(r, size["reps"], reps[-1]), flush=True)
        if getattr(args, "profile", None):
            Path(args.profile).write_text(profile_updates(trainers, inputs, args.device), encoding="utf-8")
            print(f"wrote {args.profile}", flush=True)
    return reps, model_info


# ---- --compare REV: this checkout and an older commit, interleaved -----------------------------------

def worker(size: dict, args) -> int:
    """``--worker``: set up with this process's sources (``PYTHONPATH``), answer ``ready`` with the model
    facts, then run one repetition per ``rep R`` line read from stdin and answer it (one JSON line each)."""
    answer, sys.stdout = sys.stdout, sys.stderr  # everything else goes to stderr
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        trainers, inputs, examples, model_info = setup(size, args, Path(tmp))
        print(json.dumps({"ready": model_info}), file=answer, flush=True)
        for line in sys.stdin:
            r = int(line.split()[1])
            print(json.dumps(repetition(r, trainers, inputs, examples, args)), file=answer, flush=True)
    return 0


class VersionWorker:
    """A ``--worker`` subprocess running this script on one version's sources."""

    def __init__(self, name: str, root: Path, argv: list[str]):
        self.name = name
        # the version's sources first; the rest of PYTHONPATH (packages installed into a folder, as
        # gpu_run.sh does on a machine without them) stays, this checkout's src left out
        kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT / "src"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), *kept])}
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--worker"], env=env,
                                        cwd=str(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench_step worker for {self.name} exited with {self.process.wait()} (its stderr above)")
        return json.loads(line)

    def repetition(self, r: int) -> dict:
        self.process.stdin.write(f"rep {r}\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def compare(size: dict, args, argv: list[str]) -> tuple[dict, dict]:
    """Run ``size["reps"]`` repetitions of every method in two worker processes, ``args.compare`` and this
    checkout, alternating which version goes first. Returns ({version: reps}, {version: model facts})."""
    with tempfile.TemporaryDirectory(prefix="bench_step_versions_") as tmp:
        workers = [VersionWorker(args.compare, version_sources(args.compare, Path(tmp)), argv),
                   VersionWorker("this checkout", ROOT, argv)]
        try:
            infos = {w.name: w.read()["ready"] for w in workers}
            reps = {w.name: [] for w in workers}
            for r in range(size["reps"]):
                for w in workers if r % 2 == 0 else workers[::-1]:
                    reps[w.name].append(w.repetition(r))
                    print(f"{w.name}: " + rep_line(r, size["reps"], reps[w.name][-1]), flush=True)
        finally:
            for w in workers:
                w.close()
    return reps, infos


def side_by_side(summaries: dict[str, list[dict]]) -> str:
    """Markdown: per method, each version's update time, rho against its own GRPO, PEPO's own ms and share."""
    names = list(summaries)
    head = "| method | " + " | ".join(f"{m} ({n})" for m in ("update s", "rho update [IQR]", "PEPO own ms", "own / update")
                                      for n in names) + " |"
    lines = [head, "|---" + "|---:" * (4 * len(names)) + "|"]
    rows = {n: {r["method"]: r for r in summaries[n]} for n in names}
    for method in rows[names[0]]:
        cells = [f"{rows[n][method]['update_s']:.3f}" for n in names]
        cells += [pct(rows[n][method]["rho_update"]) for n in names]
        cells += [f"{rows[n][method]['pepo_own_ms']:.1f}" for n in names]
        cells += [f"{100 * rows[n][method]['pepo_own_share']:.3f}%" for n in names]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------

SIZE_OPTIONS = {  # command-line option -> (its key in SIZES, what it sets)
    "reps": ("reps", "timed repetitions"),
    "layers": ("num_layers", "decoder layers"),
    "hidden": ("hidden_size", "text hidden size"),
    "completion": ("completion", "completion tokens"),
    "image-size": ("image_size", "image side in px"),
    "generations": ("generations", "rows: completions of the one prompt"),
}


def add_size_options(parser: argparse.ArgumentParser, sizes: dict) -> None:
    """``--reps``, ``--layers``, ... overriding ``sizes["full"]`` / ``sizes["quick"]`` (also bench_families.py)."""
    for option, (key, what) in SIZE_OPTIONS.items():
        parser.add_argument(f"--{option}", type=int, default=None,
                            help=f"{what} (default {sizes['full'][key]}, quick {sizes['quick'][key]})")


def chosen_size(sizes: dict, args, parser: argparse.ArgumentParser) -> dict:
    """``sizes["quick"]`` with ``--quick``, else ``sizes["full"]``, with the options given; a value below 1
    (below 2 for ``--generations``: GRPO needs a group) is refused in one line."""
    size = dict(sizes["quick" if args.quick else "full"])
    for option, (key, _) in SIZE_OPTIONS.items():
        value = getattr(args, option.replace("-", "_"))
        if value is None:
            continue
        if value < (2 if option == "generations" else 1):
            parser.error(f"--{option} {value}: give a whole number >= {2 if option == 'generations' else 1}")
        size[key] = value
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and sequences, 3 repetitions")
    parser.add_argument("--update-only", action="store_true",
                        help="one rollout, then interleaved policy updates only (no rollout per repetition)")
    add_size_options(parser, SIZES)
    parser.add_argument("--checkpointing", action="store_true", help="activation (gradient) checkpointing on")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a small machine shared with other work, more threads "
                        "mostly measure the scheduler)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="model dtype (default: float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--out", default=None, help="output path without suffix (default results/bench_step[_quick])")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--compare", default=None, metavar="REV",
                        help="also run git revision REV (e.g. 77436cb) in its own process, repetitions interleaved "
                        "with this checkout's; writes results/bench_step_compare_REV[...].json / .md")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed repetitions, one update per method under torch.profiler: <out>.profile.txt")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.profile and args.compare:
        parser.error("--profile profiles this checkout's methods: run it without --compare")
    methods = args.methods.split(",")
    if "none" not in methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods {args.methods}: choose from {', '.join(METHODS)}, with none (rho's base)")
    for name in [m for m in METHODS if m not in methods]:
        del METHODS[name]

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    size = chosen_size(SIZES, args, parser)
    threads = args.threads
    torch.set_num_threads(threads)
    default_name = "bench_step" + ("_quick" if args.quick else "") + ("_update_only" if args.update_only else "")
    if args.worker:
        return worker(size, args)
    args.commit = commit_of("HEAD")  # the tree this run measures: read now, not after minutes of other commits
    if args.compare:
        default_name = default_name.replace("bench_step", f"bench_step_compare_{args.compare}")
    out = Path(args.out) if args.out else RESULTS / default_name
    if args.compare:
        return main_compare(size, args, argv, out, threads)
    args.profile = f"{out}.profile.txt" if args.profile else None

    reps, model_info = measure(size, args)
    summary = summarise(reps, "cpu" if args.device == "cpu" else "wall")
    meta = {
        "machine": machine_name(args.device, threads), "device": args.device, "dtype": args.dtype,
        "torch": torch.__version__, "command": " ".join(["python", *sys.argv]), "commit": args.commit,
        "update_only": args.update_only,
        "load_average_at_end": os.getloadavg(), "model": model_info, "methods": METHODS,
    }
    params, prompt_len, image_tokens, completion_len = (model_info[k] for k in (
        "parameters", "prompt_tokens", "image_tokens", "completion_tokens"))
    title = (f"one GRPO step, {size['generations']} x {prompt_len + completion_len} tokens ({image_tokens} image, "
             f"{completion_len} completion), {size['num_layers']} layers x hidden {size['hidden_size']} "
             f"({params / 1e6:.1f} M params, {args.dtype}), median of {size['reps']} interleaved reps; {meta['machine']}")
    print_table(summary, title)
    print(markdown_table(summary))
    write_results(out, meta, reps, summary)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.csv')}")
    return 0


def main_compare(size: dict, args, argv: list[str], out: Path, threads: int) -> int:
    worker_argv = [a for a in argv if a not in ("--compare", args.compare) and not a.startswith("--compare=")]
    reps, infos = compare(size, args, worker_argv)
    clock = "cpu" if args.device == "cpu" else "wall"
    summaries = {name: summarise(version_reps, clock) for name, version_reps in reps.items()}
    meta = {
        "machine": machine_name(args.device, threads), "device": args.device, "dtype": args.dtype,
        "torch": torch.__version__, "command": " ".join(["python", *sys.argv]), "commit": args.commit,
        "compared_commit": commit_of(args.compare), "update_only": args.update_only,
        "load_average_at_end": os.getloadavg(), "models": infos, "methods": METHODS,
    }
    lines = [f"# bench_step --compare {args.compare}", "", f"`{meta['command']}`", "",
             f"This checkout: commit {meta['commit']}; compared: {meta['compared_commit']}. {meta['machine']}; "
             f"{size['reps']} repetitions per version, the versions alternating (each in its own process, "
             f"methods rotated within a repetition); medians, {clock} seconds.", ""]
    for name, info in infos.items():
        lines.append(f"* {name}: {info['parameters']:,} parameters, {info['num_layers']} layers x hidden "
                     f"{info['hidden_size']}, {size['generations']} rows x ({info['prompt_tokens']} prompt incl. "
                     f"{info['image_tokens']} image + {info['completion_tokens']} completion) tokens")
    lines += ["", side_by_side(summaries), ""]
    for name, summary in summaries.items():
        lines += [f"## {name}", "", markdown_table(summary), ""]
    text = "\n".join(lines)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({**meta, "summaries": summaries, "repetitions": reps}, indent=2))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
