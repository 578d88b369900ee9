"""The RL step per model family, pepo's family speed-ups on and off, side by side in one run.

    python benchmarks/bench_families.py --device cpu --quick       # every tiny family, CPU-sized
    python benchmarks/bench_families.py --device cuda --dtype bfloat16 --reps 3

For each family of :data:`pepo.embedded.TINY_FAMILIES` (or ``--families``), a tiny model of that
family is built from config by :func:`pepo.embedded.build_tiny_vlm` (random weights, nothing is
downloaded), all families at one size: by default 4 decoder layers, hidden 256, 224 px images,
128-token completions, 8 completions of one prompt (``--quick``: 2 layers, hidden 128, 112 px images,
32 tokens, 8 completions). How many image tokens an image becomes differs by family (Gemma3 pools to
4, LLaVA-OneVision tiles at 28 px whatever the size): the table states each family's tokens.

Two PEPOTrainers (``weighting=pepo``, constant schedule) per family, on two copies of the same
weights: **on** = ``share_image_encoding`` and ``share_prompts`` (the defaults), **off** = both
false (TRL's and transformers' plain computation). The vectorised M-RoPE index has no switch
(:func:`pepo.modeling.load_model_and_processor` installs it): it is in both arms where the family
has it. One GRPO step is timed in its two phases with ``benchmarks/bench_step.py``'s helpers:
**rollout** (TRL's ``_generate_and_score_completions``, same seed in both arms) and **update**
(``compute_loss`` + ``backward`` on one fixed rollout, the same inputs in both arms; no optimiser
step). Repetitions alternate which arm goes first. Reported per family: median seconds per phase
and arm, the paired ratio off / on per repetition (median [IQR]), and which speed-ups the **on**
model actually carries, read from the model as ``tests/families/test_other_families.py`` does
(``plain``: none; its ratio should be about 1, the noise of the measurement). The **off** model is
checked to carry none of the two switched speed-ups; the run stops otherwise.

Clocks as in ``bench_step.py``: on CPU the process's CPU seconds with one torch thread (``--threads``);
on CUDA wall seconds after ``torch.cuda.synchronize()``.

Writes ``benchmarks/results/bench_families[_quick].json`` (every repetition) and ``.md`` (the
table), both naming the command, the commit and the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when loaded by path
import bench_step  # noqa: E402
from provenance import command, commit  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PEPO_G = {"weighting": "pepo", "schedule": "constant"}
ARMS = {
    "on": {**PEPO_G, "share_image_encoding": True, "share_prompts": True},
    "off": {**PEPO_G, "share_image_encoding": False, "share_prompts": False},
}
SIZES = {
    # the same for every family: num_layers, hidden_size, image_size (px), completion tokens, generations, reps
    "full": dict(num_layers=4, hidden_size=256, image_size=224, completion=128, generations=8, reps=5),
    "quick": dict(num_layers=2, hidden_size=128, image_size=112, completion=32, generations=8, reps=5),
}
PHASES = ("rollout", "update", "step")


# ---- what a model carries -----------------------------------------------------------------------

def engaged(trainer) -> dict[str, bool]:
    """Which of pepo's speed-ups ``trainer``'s model carries, read from the model itself."""
    model = trainer.model
    return {
        "image_sharing": any(getattr(m, "_pepo_shares_images", False) for m in model.modules()),
        # generation's prefill and the loss forward both share, or the speed-up is not there
        "prompt_sharing": bool(getattr(model, "_pepo_shares_prompt_prefill", False))
        and trainer._shared_prompt_model(model, 1) is not model,
        "rope_index": any("get_rope_index" in vars(m) for m in model.modules()),
    }


def engaged_label(flags: dict[str, bool]) -> str:
    names = {"image_sharing": "images", "prompt_sharing": "prompts", "rope_index": "index"}
    on = [names[k] for k, v in flags.items() if v]
    return " + ".join(on) if on else "plain"


# ---- one family -----------------------------------------------------------------------------------

def setup_family(family: str, size: dict, args, workdir: Path):
    """The family's model, one trainer per arm, a warm-up step each, and the fixed rollout both updates
    score. Returns (trainers, inputs, examples, facts)."""
    model, processor = bench_step.build_model_and_processor(size, workdir, getattr(torch, args.dtype), args.device,
                                                            family=family)
    trainers = bench_step.build_trainers(model, processor, size, args, workdir, methods=ARMS)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    flags = {arm: engaged(t) for arm, t in trainers.items()}
    if flags["off"]["image_sharing"] or flags["off"]["prompt_sharing"]:
        raise RuntimeError(f"bench_families: {family}'s off arm carries a switched-off speed-up: {flags['off']}")
    examples = [trainers["on"].train_dataset[0]] * size["generations"]  # one prompt group
    for trainer in trainers.values():  # warm-up; the last rollout is the one every update scores
        inputs, _, _ = bench_step.rollout(trainer, examples, seed=0, device=args.device)
        bench_step.policy_update(trainer, inputs, args.device)
    prompt, completion = inputs["prompt_ids"].shape[1], inputs["completion_ids"].shape[1]
    facts = {"family": family, "model_class": type(trainers["on"].model).__name__, "parameters": parameters,
             "prompt_tokens": prompt, "completion_tokens": completion,
             "image_tokens": int((inputs["prompt_ids"][0] == trainers["on"].image_token_id).sum()),
             "engaged": flags["on"], "engaged_off": flags["off"]}
    print(f"{family}: {parameters / 1e6:.2f} M params, {size['generations']} x ({prompt} prompt incl. "
          f"{facts['image_tokens']} image + {completion} completion) tokens; on: {engaged_label(flags['on'])}, "
          f"off: {engaged_label(flags['off'])}", flush=True)
    return trainers, inputs, examples, facts


def repetition(r: int, trainers: dict, inputs: dict, examples: list, device: str) -> dict:
    """Repetition ``r``: both arms, ``on`` first on even ``r``; wall and CPU seconds per phase."""
    order = list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]
    rep = {"order": order}
    for arm in order:
        _, rollout_t, _ = bench_step.rollout(trainers[arm], examples, seed=1 + r, device=device)
        update_t, _, own = bench_step.policy_update(trainers[arm], inputs, device)
        rep[arm] = {"rollout_s": rollout_t.wall, "update_s": update_t.wall, "step_s": rollout_t.wall + update_t.wall,
                    "rollout_cpu_s": rollout_t.cpu, "update_cpu_s": update_t.cpu,
                    "step_cpu_s": rollout_t.cpu + update_t.cpu, "pepo_own_s": own}
    return rep


def measure_family(family: str, size: dict, args) -> dict:
    """Set up ``family`` and run ``size["reps"]`` interleaved repetitions; frees the models after."""
    with tempfile.TemporaryDirectory(prefix=f"bench_families_{family}_") as tmp:
        trainers, inputs, examples, facts = setup_family(family, size, args, Path(tmp))
        reps = []
        for r in range(size["reps"]):
            reps.append(repetition(r, trainers, inputs, examples, args.device))
            print(f"  rep {r + 1}/{size['reps']} (load {os.getloadavg()[0]:.1f}): " + ", ".join(
                f"{arm} step {reps[-1][arm]['step_s']:.3f}s (cpu {reps[-1][arm]['step_cpu_s']:.3f}s)"
                for arm in reps[-1]["order"]), flush=True)
    del trainers, inputs
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return {**facts, "repetitions": reps}


# ---- summary and output ---------------------------------------------------------------------------

def summarise(result: dict, clock: str) -> dict:
    """Per phase: each arm's median seconds and the paired ratio off / on (p25, median, p75).
    ``clock``: ``"cpu"`` (process CPU seconds) or ``"wall"``."""
    reps = result["repetitions"]
    row = {"family": result["family"], "engaged": engaged_label(result["engaged"]), "clock": clock}
    for phase in PHASES:
        key = f"{phase}_cpu_s" if clock == "cpu" else f"{phase}_s"
        for arm in ARMS:
            row[f"{phase}_{arm}_s"] = statistics.median(r[arm][key] for r in reps)
        row[f"ratio_{phase}"] = bench_step.quartiles([r["off"][key] / r["on"][key] for r in reps])
    return row


def ratio_cell(q: tuple[float, float, float]) -> str:
    return f"{q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]"


def markdown_table(rows: list[dict], results: list[dict]) -> str:
    head = ("| family | tokens per row (image + text prompt + completion) | speed-ups (on) | rollout s on / off "
            "| update s on / off | step s on / off | off / on step [IQR] | off / on rollout | off / on update |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row, result in zip(rows, results):
        tokens = (f"{result['image_tokens']} + {result['prompt_tokens'] - result['image_tokens']} + "
                  f"{result['completion_tokens']}")
        cells = [row["family"], tokens, row["engaged"]]
        cells += [f"{row[f'{phase}_on_s']:.3f} / {row[f'{phase}_off_s']:.3f}" for phase in PHASES]
        cells += [ratio_cell(row[f"ratio_{phase}"]) for phase in ("step", "rollout", "update")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out: Path, meta: dict, rows: list[dict], results: list[dict], size: dict) -> str:
    clock = "process CPU seconds" if meta["device"] == "cpu" else "wall seconds after torch.cuda.synchronize()"
    text = "\n".join([
        "# bench_families: the RL step per family, speed-ups on vs off", "",
        f"`{meta['command']}`", "",
        f"Commit {meta['commit']}; {meta['machine']}; {meta['dtype']}; load average {meta['load_average_at_start']} "
        f"at start, {meta['load_average_at_end']} at end.", "",
        f"Every family at {size['num_layers']} layers x hidden {size['hidden_size']}, {size['image_size']} px images, "
        f"{size['generations']} completions of one prompt; PEPO_G (weighting pepo). on: share_image_encoding + "
        f"share_prompts; off: neither. Medians of {size['reps']} repetitions alternating the arms' order, {clock}; "
        "off / on paired per repetition. Speed-ups (on): what the on model carries (images: image sharing, "
        "prompts: prompt sharing, index: vectorised M-RoPE index, in both arms; plain: none).", "",
        markdown_table(rows, results), ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({**meta, "size": size, "summary": rows, "families": results},
                                                   indent=2))
    return text


# ---- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None):
    from pepo.embedded import TINY_FAMILIES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(TINY_FAMILIES),
                        help=f"comma-separated, from {', '.join(TINY_FAMILIES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="CPU-sized models and sequences, 5 repetitions")
    bench_step.add_size_options(parser, SIZES)  # --reps, --layers, --hidden, --completion, --image-size, --generations
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as bench_step.py)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="model dtype (default: float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--out", default=None, help="output path without suffix (default results/bench_families[_quick])")
    args = parser.parse_args(argv)
    args.families = args.families.split(",")
    unknown = [f for f in args.families if f not in TINY_FAMILIES]
    if unknown:
        parser.error(f"--families {','.join(unknown)}: not a tiny family; choose from {', '.join(TINY_FAMILIES)}")
    args.size = bench_step.chosen_size(SIZES, args, parser)
    # every family's heads are hidden / 32 with half as many key/value heads; its patches 14 px, merged 2 x 2
    for name, value, multiple in (("hidden", args.hidden, 64), ("image-size", args.image_size, 28)):
        if value is not None and value % multiple:
            parser.error(f"--{name} {value}: give a multiple of {multiple}")
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: give a whole number >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.checkpointing = False  # bench_step.build_trainers reads it
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = args.size
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / ("bench_families" + ("_quick" if args.quick else ""))
    meta = {"command": command(), "commit": commit(), "machine": bench_step.machine_name(args.device, args.threads),
            "device": args.device, "dtype": args.dtype, "torch": torch.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "arms": ARMS}
    results = [measure_family(family, size, args) for family in args.families]
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    rows = [summarise(result, "cpu" if args.device == "cpu" else "wall") for result in results]
    print(write_results(out, meta, rows, results, size))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
