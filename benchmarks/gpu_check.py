"""Issue 15's three GPU tables in one run (at most about 6 minutes on one H100/H200-class GPU).

    python benchmarks/gpu_check.py                        # on a CUDA machine: the issue's shapes
    python benchmarks/gpu_check.py --device cpu --tiny    # smoke run of the same code (about a minute)

1. **Perception prior**: ``pepo.perception_scores`` (cosine, dot, l2, l1) against the reference
   release's form (a bf16 similarity matrix per row and layer, in a Python loop) and against one read
   of every hidden-state tensor; median ms and extra peak memory.
2. **token_entropy** (bf16 logits, V = 151,936) against TRL's ``entropy_from_logits``, the naive
   float32 form and one read of the logits.
3. **Policy update**: ``bench_step.py --update-only`` in-process: one rollout, then interleaved
   ``compute_loss`` + ``backward`` repetitions of GRPO, PEPO_G (lambda = 1), High-Entropy RL and GRPO
   again (the A/A control), with rho = t_method / t_GRPO - 1 per repetition (median [IQR]) and the
   peak-memory ratio.

GPU times are CUDA-event times of the kernels (each call between two events, medians over
``--reps``); CPU times are wall times. Writes ``benchmarks/results/gpu/<machine>.json`` (or ``--out``).
Needs only this repository and its dependencies; nothing is downloaded (the model is built from a
config with random weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REQUIRED = ("torch", "transformers", "trl", "datasets", "mathruler", "rich")
RESULTS = Path(__file__).parent / "results" / "gpu"
V_QWEN = 151_936
# name: (rows, image tokens, completion tokens, D, hidden-state tensors); 43 text tokens besides
PERCEPTION_SHAPES = {
    "gpu": [(8, 1024, 1024, 2048, 37), (8, 256, 2048, 2048, 37), (16, 1024, 2048, 3584, 29)],
    "tiny": [(2, 16, 24, 64, 3), (3, 8, 40, 96, 3)],
}
TEXT_TOKENS = 43
ENTROPY_SHAPES = {"gpu": [(8, 1024, V_QWEN), (16, 2048, V_QWEN)], "tiny": [(2, 16, 1000), (3, 24, 1000)]}
# the update: 36 layers x hidden 2048 (~1.4 B parameters), 8 rows of 256 image + 43 text + 640 completion
UPDATE_SIZES = {
    "gpu": dict(num_layers=36, hidden_size=2048, image_size=448, completion=640, generations=8, reps=15),
    "tiny": dict(num_layers=2, hidden_size=64, image_size=56, completion=8, generations=2, reps=2),
}
MEASURES = ("cosine", "dot", "l2", "l1")


def missing_dependencies() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


# ---- timing -------------------------------------------------------------------------------------

def timed(fn, reps: int, device: str) -> tuple[float, float | None]:
    """(median ms over ``reps`` calls after one warm-up, extra peak MiB of one call or None on CPU)."""
    import torch

    fn()
    extra = None
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), extra


def guarded(fn, reps, device):
    """``timed``, or ``None`` when the GPU runs out of memory (the naive forms can)."""
    import torch

    try:
        return timed(fn, reps, device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


# ---- 1. perception prior -------------------------------------------------------------------------

def perception_table(shapes, reps: int, device: str) -> list[dict]:
    import torch

    import pepo
    from bench_core import reference_form

    rows = []
    for B, image, T, D, n in shapes:
        S = TEXT_TOKENS + image + T
        g = torch.Generator(device=device).manual_seed(0)
        hidden = [torch.randn(B, S, D, generator=g, device=device, dtype=torch.bfloat16) for _ in range(n)]
        vision = torch.zeros(B, S, dtype=torch.bool, device=device)
        vision[:, 8 : 8 + image] = True  # image tokens early in the prompt, as in a chat template
        row = {"shape": [B, image, T, D, n], "S": S}
        row["reference_bf16_loop"] = guarded(lambda: reference_form(hidden, vision, T, "cosine", torch.bfloat16),
                                             reps, device)
        for measure in MEASURES:
            row[measure] = guarded(lambda m=measure: pepo.perception_scores(hidden, vision, T, measure=m), reps, device)
        row["one_read"] = timed(lambda: [torch.sum(h, dtype=torch.float32) for h in hidden], reps, device)
        rows.append(row)
        print(f"perception {row['shape']}: " + ", ".join(
            f"{k} {v[0]:.2f} ms" for k, v in row.items() if isinstance(v, tuple)), flush=True)
        del hidden
    return rows


# ---- 2. entropy ---------------------------------------------------------------------------------

def entropy_table(shapes, reps: int, device: str) -> list[dict]:
    import torch
    from trl.trainer.utils import entropy_from_logits

    import pepo

    rows = []
    for B, T, V in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        logits = (4 * torch.randn(B, T, V, generator=g, device=device)).to(torch.bfloat16)

        def naive():
            x = logits.float()
            return -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)

        row = {"shape": [B, T, V], "naive_fp32": guarded(naive, reps, device),
               "trl": timed(lambda: entropy_from_logits(logits), reps, device),
               "pepo": timed(lambda: pepo.token_entropy(logits), reps, device),
               "one_read": timed(lambda: torch.sum(logits, dtype=torch.float32), reps, device)}
        difference = (pepo.token_entropy(logits) - entropy_from_logits(logits).float()).abs().max().item()
        row["max_abs_difference_vs_trl"] = difference
        rows.append(row)
        print(f"entropy {row['shape']}: " + ", ".join(
            f"{k} {v[0]:.2f} ms" for k, v in row.items() if isinstance(v, tuple)), flush=True)
        del logits
    return rows


# ---- what the timed code computes ----------------------------------------------------------------

AGREEMENT_SHAPE = (3, 8, 40, 96, 3)  # rows, image tokens, completion tokens, D, hidden states (small: any device)


def relative_difference(ours, reference) -> float:
    return ((ours.double() - reference.double()).abs().max() / reference.double().abs().max()).item()


def agreement(device: str) -> dict[str, float]:
    """Max |difference| / max |reference| of each timed pepo function on ``device``, on a small input:
    the perception prior per measure against the release's loop computed in float64 (bf16 hidden
    states; l1 takes the accelerator's sorted-prefix path on a GPU), ``token_entropy`` against the
    float64 form and against TRL's ``entropy_from_logits``. A fast kernel computing something else
    shows here."""
    import torch
    from bench_core import reference_form
    from trl.trainer.utils import entropy_from_logits

    import pepo

    B, image, T, D, n = AGREEMENT_SHAPE
    S = TEXT_TOKENS + image + T
    g = torch.Generator(device=device).manual_seed(1)
    hidden = [torch.randn(B, S, D, generator=g, device=device, dtype=torch.bfloat16) for _ in range(n)]
    vision = torch.zeros(B, S, dtype=torch.bool, device=device)
    vision[:, 8 : 8 + image] = True
    vision[-1, 8 + image // 2 : 8 + image] = False  # rows with different image counts
    differences = {}
    for measure in MEASURES:
        ours = pepo.perception_scores(hidden, vision, T, measure=measure)
        reference = reference_form(hidden, vision, T, measure, torch.float64)
        differences[f"perception_{measure}"] = relative_difference(ours, reference)
    logits = (4 * torch.randn(B, T, V_QWEN, generator=g, device=device)).to(torch.bfloat16)
    x = logits.double()
    float64 = -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)
    ours = pepo.token_entropy(logits)
    differences["entropy_vs_float64"] = relative_difference(ours, float64)
    differences["entropy_vs_trl"] = relative_difference(ours, entropy_from_logits(logits).float())
    print("agreement (max |pepo - reference| / max |reference|): " + ", ".join(f"{k} {v:.1e}" for k, v in differences.items()),
          flush=True)
    return differences


# ---- 3. policy update ---------------------------------------------------------------------------

def update_table(size: dict, device: str) -> tuple[list[dict], dict]:
    import bench_step

    args = SimpleNamespace(device=device, dtype="bfloat16" if device == "cuda" else "float32",
                           checkpointing=False, update_only=True)
    reps, model_info = bench_step.measure(dict(size), args)
    return bench_step.summarise(reps, "wall" if device == "cuda" else "cpu"), {**model_info, "repetitions": reps}


# ---- output -------------------------------------------------------------------------------------

def fmt(cell, digits=2) -> str:
    return "OOM" if cell is None else f"{cell[0]:.{digits}f}"


def mib(cell) -> str:
    return "-" if cell is None or cell[1] is None else f"{cell[1]:.0f}"


def print_tables(result: dict) -> None:
    from rich.console import Console

    console = Console(width=220)
    if "perception" in result:
        console.print(perception_rich_table(result))
    if "entropy" in result:
        console.print(entropy_rich_table(result))
    if "update" in result:
        console.print(update_rich_table(result))


def perception_rich_table(result: dict):
    from rich.table import Table

    t = Table(title=f"perception prior, median ms (extra MiB); one read = summing every hidden state once; "
                    f"{result['machine']}")
    for col in ("rows, image + completion, D, states", "reference bf16 loop (cosine)", "pepo cosine", "pepo dot",
                "pepo l2", "pepo l1", "one read", "cosine / one read", "dot / one read", "l2 / one read"):
        t.add_column(col, justify="right")
    for r in result["perception"]:
        B, image, T, D, n = r["shape"]
        read = r["one_read"][0]
        ratio = lambda cell: "-" if cell is None else f"{cell[0] / read:.1f}x"
        t.add_row(f"{B}, {image} + {T}, {D}, {n}", fmt(r["reference_bf16_loop"]),
                  *[f"{fmt(r[m])} ({mib(r[m])})" for m in MEASURES], fmt(r["one_read"], 3),
                  ratio(r["cosine"]), ratio(r["dot"]), ratio(r["l2"]))
    return t


def entropy_rich_table(result: dict):
    from rich.table import Table

    t = Table(title="token_entropy, bf16 logits: median ms (extra MiB)")
    for col in ("shape", "naive fp32", "TRL entropy_from_logits", "pepo.token_entropy", "one read", "pepo / TRL",
                "max |pepo - TRL|"):
        t.add_column(col, justify="right")
    for r in result["entropy"]:
        B, T, V = r["shape"]
        t.add_row(f"{B} x {T} x {V}", f"{fmt(r['naive_fp32'])} ({mib(r['naive_fp32'])})",
                  f"{fmt(r['trl'])} ({mib(r['trl'])})", f"{fmt(r['pepo'])} ({mib(r['pepo'])})", fmt(r["one_read"], 3),
                  f"{r['pepo'][0] / r['trl'][0]:.2f}x", f"{r['max_abs_difference_vs_trl']:.2e}")
    return t


def update_rich_table(result: dict):
    from rich.table import Table

    m = result["update_model"]
    t = Table(title=f"policy update (compute_loss + backward), {m['generations']} rows x ({m['prompt_tokens']} prompt "
                    f"incl. {m['image_tokens']} image + {m['completion_tokens']} completion), {m['num_layers']} layers "
                    f"x hidden {m['hidden_size']} ({m['parameters'] / 1e9:.2f} B params), {m['reps']} interleaved reps")
    for col in ("method", "update ms (median)", "rho vs GRPO, median [IQR]", "PEPO's own ms", "own / update",
                "peak MiB", "peak ratio"):
        t.add_column(col, justify="right")
    for r in result["update"]:
        q = r["rho_update"]
        t.add_row(r["method"], f"{1e3 * r['update_s']:.1f}", f"{100 * q[1]:+.2f}% [{100 * q[0]:+.2f}, {100 * q[2]:+.2f}]",
                  f"{r['pepo_own_ms']:.2f}", f"{100 * r['pepo_own_share']:.2f}%", f"{r['update_peak_mib']:.0f}",
                  "-" if r["update_peak_ratio"] is None else f"{r['update_peak_ratio']:.4f}")
    return t


def machine_name(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    import bench_step

    return f"{bench_step.machine_name('cpu', torch.get_num_threads())}, torch {torch.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and model: a smoke run of the same code")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per kernel (default 10, tiny 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("perception", "entropy", "update"))
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu/<machine>.json)")
    args = parser.parse_args()

    missing = missing_dependencies()
    if missing:
        print(f"gpu_check: missing {', '.join(missing)}; install the repository with its dependencies: "
              f"pip install -e . (or pip install {' '.join(missing)})", file=sys.stderr)
        return 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device; use --device cpu --tiny for a smoke run",
              file=sys.stderr)
        return 2
    if args.reps is not None and args.reps < 1:
        print(f"gpu_check: --reps must be >= 1, got {args.reps}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).parent))  # bench_core, bench_step, provenance
    import provenance

    scale = "tiny" if args.tiny else "gpu"
    reps = args.reps or (2 if args.tiny else 10)
    started = time.perf_counter()
    result = {"machine": machine_name(args.device), "device": args.device, "scale": scale,
              "command": provenance.command(), "commit": provenance.commit(), "torch": torch.__version__, "reps": reps}
    slug = re.sub(r"[^A-Za-z0-9]+", "_", result["machine"].split(",")[0]).strip("_").lower()
    out = Path(args.out) if args.out else RESULTS / f"{slug}{'_tiny' if args.tiny else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tables = {
        "perception": lambda: perception_table(PERCEPTION_SHAPES[scale], reps, args.device),
        "entropy": lambda: entropy_table(ENTROPY_SHAPES[scale], reps, args.device),
        "update": lambda: update_table(UPDATE_SIZES[scale], args.device),
    }
    result["agreement"] = agreement(args.device)
    result["seconds"] = time.perf_counter() - started
    for name, measure in tables.items():
        if name in args.skip:
            continue
        if name == "update":
            result["update"], result["update_model"] = measure()
        else:
            result[name] = measure()
        result["seconds"] = time.perf_counter() - started
        out.write_text(json.dumps(result, indent=1))  # each finished table survives a time limit
    print_tables(result)
    print(f"gpu_check: {result['seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
