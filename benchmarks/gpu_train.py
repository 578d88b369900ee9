"""A few steps of ``pepo train`` with PEPO_G and GRPO on a model built from a config: step time, peak
memory and PEPO's time share as a user's run sees them (issue 29).

    python benchmarks/gpu_train.py --out FILE.json                        # CUDA, bf16, 36 layers x 2048 (~1.4 B)
    python benchmarks/gpu_train.py --out FILE.json --device cpu --tiny    # smoke run of the same code

The model is the embedded Qwen2.5-VL (its small tokenizer; random weights, seed 0) at the size of
``gpu_check.py``'s update table; the data is the embedded synthetic task. Runs, in one process and in this
order: GRPO, PEPO_G, GRPO again (the A/A control: what two runs of the same method differ by). Each is
``pepo train --config {grpo,pepo_g}_tiny`` with the overrides below, so each is the shipped recipe's
method at another size. Per run: TRL's ``step_time`` of every step (generation included), PEPO's
``pepo/time_share`` (CUDA events, read when logging), and the peak CUDA memory of the run. Writes
``--out``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# name: (model size, overrides of the shipped tiny recipe)
SIZES = {
    "gpu": dict(num_layers=36, hidden_size=2048, image_size=448, prompts=8, generations=8, completion=192, steps=3),
    "tiny": dict(num_layers=2, hidden_size=64, image_size=56, prompts=2, generations=2, completion=8, steps=2),
}
RUNS = (("grpo", "grpo_tiny"), ("pepo_g", "pepo_g_tiny"), ("grpo_again", "grpo_tiny"))


def _numel(shape) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def train_argv(recipe: str, model: Path, out: Path, size: dict, device: str) -> list[str]:
    gpu = device == "cuda"
    overrides = {
        "model_name_or_path": model, "train_file": "embedded", "max_train_samples": size["prompts"] * size["steps"],
        "per_device_train_batch_size": size["prompts"] * size["generations"], "num_generations": size["generations"],
        "max_completion_length": size["completion"], "max_steps": size["steps"], "eval_after_train": "none",
        "use_cpu": str(not gpu).lower(), "bf16": str(gpu).lower(), "dtype": "bfloat16" if gpu else "float32",
        "activation_checkpointing": "false", "logging_steps": 1, "output_dir": out,
    }
    argv = ["--config", recipe, "--overwrite_output_dir"]
    for field, value in overrides.items():
        argv += [f"--{field}", str(value)]
    return argv


def run_one(recipe: str, model: Path, out: Path, size: dict, device: str) -> dict:
    import torch

    from pepo.train import main as pepo_train
    from pepo.trainer import cli as trainer_cli

    seen = {}
    hook = lambda script_args, training_args, model_args, trainer: seen.update(history=trainer.state.log_history)
    trainer_cli.AFTER_TRAINING.append(hook)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        code = pepo_train(train_argv(recipe, model, out, size, device))
    finally:
        trainer_cli.AFTER_TRAINING.remove(hook)
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    steps = [row for row in seen.get("history", []) if "step_time" in row]
    return {"recipe": recipe, "exit": code, "wall_s": wall, "peak_mib": peak,
            "step_time_s": [row["step_time"] for row in steps],
            "pepo_time_share": [row["pepo/time_share"] for row in steps if "pepo/time_share" in row],
            "completion_length": [row.get("completions/mean_length") for row in steps],
            "argv": ["pepo", "train", *train_argv(recipe, model, out, size, device)]}


def summary_lines(result: dict) -> list[str]:
    runs = result["runs"]
    base = runs["grpo"]
    lines = [f"pepo train, {result['model']}, {result['machine']}",
             "run | step s (each) | median step s | vs GRPO | PEPO time share (median) | peak MiB | peak / GRPO"]
    for name, run in runs.items():
        times = run["step_time_s"]
        if not times:
            lines.append(f"{name} | exit {run['exit']}, no steps")
            continue
        median = statistics.median(times[1:] or times)  # step 1 pays the kernels' first launches
        ratio = median / statistics.median(base["step_time_s"][1:] or base["step_time_s"]) - 1
        share = statistics.median(run["pepo_time_share"]) if run["pepo_time_share"] else None
        peak, base_peak = run["peak_mib"], base["peak_mib"]
        share_text = "-" if share is None else f"{100 * share:.3f}%"
        peak_text = "-" if peak is None else f"{peak:.0f}"
        peak_ratio = "-" if peak is None or not base_peak else f"{peak / base_peak:.4f}"
        lines.append(f"{name} | {', '.join(f'{t:.2f}' for t in times)} | {median:.3f} | {100 * ratio:+.2f}% | "
                     f"{share_text} | {peak_text} | {peak_ratio}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--work", default=None, help="folder for the model and the runs (default: a temporary one)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batch: a smoke run of the same code")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_train: --device cuda but torch sees no CUDA device; use --device cpu --tiny", file=sys.stderr)
        return 2
    from pepo.embedded import build_tiny_vlm

    size = SIZES["tiny" if args.tiny else "gpu"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_train-"))
    model = build_tiny_vlm(work / "model", seed=0, hidden_size=size["hidden_size"], num_layers=size["num_layers"],
                           image_size=size["image_size"])
    from safetensors import safe_open
    from transformers import AutoConfig

    parameters = 0
    for file in model.glob("*.safetensors"):
        with safe_open(file, framework="pt") as tensors:
            parameters += sum(_numel(tensors.get_slice(key).get_shape()) for key in tensors.keys())

    config = AutoConfig.from_pretrained(model, local_files_only=True)
    machine = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
               if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    import provenance

    result = {"command": provenance.command(), "commit": provenance.commit(), "machine": machine, "size": size,
              "model": f"{config.text_config.num_hidden_layers} layers x hidden {config.text_config.hidden_size} "
                       f"({parameters / 1e9:.2f} B parameters), "
                       f"{size['prompts']} prompts x {size['generations']} samples, {size['completion']} tokens",
              "runs": {}}
    for name, recipe in RUNS:
        result["runs"][name] = run_one(recipe, model, work / name, size, args.device)
        out.write_text(json.dumps(result, indent=1))  # what finished survives a time limit
    lines = summary_lines(result)
    result["summary"] = lines
    out.write_text(json.dumps(result, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
