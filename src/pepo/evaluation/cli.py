"""``pepo eval``: evaluate a local checkpoint on a local benchmark copy (spec section 8).

    pepo eval --model runs/demo/pepo_g --benchmark geometry3k --data test.jsonl \
        --image-root /data/geometry3k --n 8 --out results/geo3k_test.json

Writes ``--out`` (settings, totals, per-question outputs / answers / scores / majority answer) and,
as it goes, ``<out>.questions.jsonl``; rerunning the same command resumes from that file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["main", "results_jsonl_path"]


def results_jsonl_path(out: Path) -> Path:
    """The per-question JSONL written next to the result JSON (``results.json`` ->
    ``results.questions.jsonl``)."""
    return out.with_name(out.stem + ".questions.jsonl")


def _parser() -> argparse.ArgumentParser:
    from pepo.data import BENCHMARKS

    parser = argparse.ArgumentParser(prog="pepo eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local checkpoint directory (save_pretrained layout)")
    parser.add_argument("--benchmark", required=True, help=f"benchmark format: {', '.join(sorted(BENCHMARKS))}")
    parser.add_argument("--data", required=True, help="data file (.jsonl/.json/.parquet) or folder of them")
    parser.add_argument("--image-root", default=None, help="root of relative image paths (default: the data file's folder)")
    parser.add_argument("--allow-absolute-paths", action="store_true", help="accept absolute image paths in the data")
    parser.add_argument("--skip-invalid", action="store_true", help="skip (and count) bad records instead of stopping")
    parser.add_argument("--n", type=int, default=8, help="samples per question for avg@N (1 = greedy) [8]")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature [1.0]")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling top_p [1.0]")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per answer [1024]")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per generate call [8]")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers", help="generation backend")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed [0]")
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default float32)")
    parser.add_argument("--device", default=None, help="e.g. cuda:0 (default cpu)")
    parser.add_argument("--out", default="results.json", help="result JSON [results.json]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _load_model(args):
    if args.backend == "vllm":
        try:
            from vllm import LLM
        except ImportError:
            raise SystemExit("pepo eval: --backend vllm needs vLLM: pip install 'pepo[vllm]'") from None
        from transformers import AutoProcessor

        llm = LLM(model=args.model, dtype=args.dtype or "auto", seed=args.seed)
        return llm, AutoProcessor.from_pretrained(args.model, local_files_only=True)
    from pepo.modeling import load_model_and_processor

    return load_model_and_processor(args.model, dtype=args.dtype, device=args.device)


def print_summary(result: dict, benchmark: str, console: Console | None = None) -> None:
    """The totals as a table, then one table per category key."""
    console = console or Console()
    totals, n = result["totals"], result["config"]["n"]
    table = Table(title=f"pepo eval: {benchmark}")
    for column in ("questions", f"avg@{n} (%)", "majority (%)", "mean tokens"):
        table.add_column(column, justify="right")
    table.add_row(
        str(totals["questions"]), f"{totals['avg_at_n']:.2f} ± {totals['avg_at_n_stderr']:.2f}",
        f"{totals['majority']:.2f}", f"{totals.get('mean_completion_tokens', float('nan')):.1f}",
    )
    console.print(table)
    for key, values in totals.get("categories", {}).items():
        breakdown = Table(title=f"by {key}")
        for column in (key, "questions", f"avg@{n} (%)", "majority (%)"):
            breakdown.add_column(column, justify="left" if column == key else "right")
        for value, stats in values.items():
            breakdown.add_row(value, str(stats["questions"]), f"{stats['avg_at_n']:.2f}", f"{stats['majority']:.2f}")
        console.print(breakdown)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pepo.data import DataError, load_benchmark
    from pepo.evaluation import evaluate_model

    try:
        data = load_benchmark(
            args.benchmark, args.data, image_root=args.image_root, skip_invalid=args.skip_invalid,
            allow_absolute_paths=args.allow_absolute_paths,
        )
    except (KeyError, FileNotFoundError, DataError) as exc:
        print(f"pepo eval: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    for error in data.skipped:
        print(f"pepo eval: skipped {error}", file=sys.stderr)
    records = data.records[: args.limit] if args.limit else data.records
    if not records:
        print("pepo eval: no questions to evaluate", file=sys.stderr)
        return 2
    model, processor = _load_model(args)
    out = Path(args.out)
    result = evaluate_model(
        model, processor, records, n=args.n, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, backend=args.backend,
        results_path=results_jsonl_path(out), seed=args.seed, progress=not args.no_progress,
    )
    payload = result.to_dict()
    payload["config"] |= {"model": args.model, "benchmark": args.benchmark, "data": args.data, "image_root": args.image_root}
    payload["skipped"] = [str(error) for error in data.skipped]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    print_summary(payload, args.benchmark)
    print(f"results: {out} (per question: {results_jsonl_path(out)})")
    return 0
