"""``pepo analyze``: the paper's token-level analysis (Figures 2, 3 and 6) for any model and data.

    pepo analyze --model runs/demo/pepo_g/checkpoint --benchmark geometry3k --data runs/demo/data/test.jsonl \
        --n 8 --top-k 10 --runs runs/demo --out analysis/

Samples ``--n`` responses per question (the ``pepo eval`` code path), grades them, runs each
response once through the model with hidden states (and once more without the image), and writes
``report.md`` with the figures (PNG), the numbers behind them (CSV) and ``responses.html`` in
``--out``. ``--runs`` alone (no ``--model``) draws only Figure 6 from training logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pepo.cli_checks import (
    ArgumentError,
    OneLineParser,
    check_at_least,
    check_device,
    check_dtype,
    check_model_dir,
    check_out_dir,
    check_sampling,
    interrupted,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from pepo.core import PERCEPTION_MEASURES, WEIGHTING_MODES
    from pepo.data import BENCHMARKS, SPLITS

    parser = OneLineParser(prog="pepo analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="local checkpoint directory to analyse (save_pretrained layout)")
    parser.add_argument("--data", default=None, help="data file (.jsonl/.json/.parquet) or folder of them")
    parser.add_argument("--split", default=None, help=f"with a --data folder holding several splits, the one to read ({', '.join(SPLITS)})")
    parser.add_argument("--benchmark", default="geometry3k", help=f"data format: {', '.join(sorted(BENCHMARKS))} [geometry3k]")
    parser.add_argument("--image-root", default=None, help="root of relative image paths (default: the data file's folder)")
    parser.add_argument("--allow-absolute-paths", action="store_true", help="accept absolute image paths in the data")
    parser.add_argument("--n", type=int, default=8, help="responses sampled per question [8]")
    parser.add_argument("--top-k", type=int, default=10, help="K of the top-K / bottom-K tokens per response [10]")
    parser.add_argument("--max-questions", type=int, default=None, help="analyse only the first N questions")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, also that of the entropy [1.0]")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling top_p [1.0]")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per response [1024]")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per generate call [8]")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed [0]")
    parser.add_argument("--measure", choices=PERCEPTION_MEASURES, default="cosine",
                        help="similarity measure of the figures and the weights (the CSVs hold all) [cosine]")
    parser.add_argument("--weighting", choices=sorted(WEIGHTING_MODES), default="pepo", help="weighting mode of the weights [pepo]")
    parser.add_argument("--gate-alpha", type=float, default=0.05, help="gate strength alpha of the weights [0.05]")
    parser.add_argument("--gate-temperature", type=float, default=1.0, help="gate temperature tau of the weights [1.0]")
    parser.add_argument("--no-shift", action="store_true", help="skip the second forward without the image (Figure 3 shift)")
    parser.add_argument("--runs", nargs="+", default=None, metavar="RUN_DIR",
                        help="training output dirs / trainer_state.json files for Figure 6 (one line each)")
    parser.add_argument("--html-responses", type=int, default=8, help="responses in responses.html [8]")
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default float32)")
    parser.add_argument("--device", default=None, help="e.g. cuda:0 (default cpu)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--overwrite", action="store_true", help="discard the samples already in <out>/samples.jsonl and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _check(args) -> None:
    """Every argument, before anything is loaded (:class:`ArgumentError`)."""
    if args.model is None and args.runs is None:
        raise ArgumentError("give --model and --data (Figures 2, 3), --runs (Figure 6), or both")
    if (args.model is None) != (args.data is None):
        raise ArgumentError("--model and --data go together")
    for name in ("top_k", "batch_size", "max_new_tokens", "max_questions"):
        check_at_least(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    check_at_least("--html-responses", args.html_responses, 0)
    if args.temperature <= 0:
        raise ArgumentError(f"--temperature must be > 0 (it is also the entropy's), got {args.temperature}")
    check_sampling(args.n, args.temperature, args.top_p)
    check_at_least("--gate-alpha", args.gate_alpha, 0)
    if args.gate_temperature <= 0:
        raise ArgumentError(f"--gate-temperature must be > 0, got {args.gate_temperature}")
    check_dtype(args.dtype)
    check_device(args.device)
    if args.model is not None:
        check_model_dir(args.model)
        if not Path(args.data).exists():
            raise ArgumentError(f"--data {args.data}: no such file or folder (pepo reads local copies only)")
    check_out_dir(args.out)


def _prepare_samples(args, out: Path):
    """Data, and the resume check of ``samples.jsonl``: what can fail before the model loads."""
    from pepo.evaluation import eval_config, results_header
    from pepo.evaluation.cli import load_questions
    from pepo.evaluation.resume import check_resumable
    from pepo.modeling import load_processor

    try:
        processor = load_processor(args.model)
    except (OSError, ValueError, KeyError) as exc:
        raise ArgumentError(f"--model {args.model}: cannot load its processor ({str(exc).splitlines()[0]})") from None
    data, provenance = load_questions(args, "pepo analyze", processor)
    records = data.records[: args.max_questions] if args.max_questions else data.records
    if not records:
        raise ArgumentError(f"--data {args.data}: no questions to analyse")
    samples = out / "samples.jsonl"
    if args.overwrite:
        samples.unlink(missing_ok=True)
    config = eval_config(n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                         blank_images=False, backend="transformers", seed=args.seed)
    check_resumable(samples, results_header(config, provenance))
    return data, records, provenance


def _print_summary(report: Path, responses, k: int, measure: str, console: Console) -> None:
    from pepo.analysis.tables import figure2_per_question, figure2_shift

    if responses:
        table = Table(title=f"Figure 2 shift ({measure}, K={k}): correct - incorrect, per question")
        for column in ("view", "questions (c/i)", "mean diff", "AUC", "p"):
            table.add_column(column, justify="right")
        for row in figure2_shift(figure2_per_question(responses, [measure], k)):
            table.add_row(row["view"], f"{row['questions_correct']}/{row['questions_incorrect']}", f"{row['mean_diff']:+.4f}",
                          f"{row['auc']:.3f}", f"{row['p_value']:.3g}")
        console.print(table)
    console.print(f"report: {report}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pepo.analysis import load_runs
    from pepo.data import DataError
    from pepo.evaluation.resume import ResumeMismatch

    out = Path(args.out)
    try:
        _check(args)
        dynamics = load_runs(args.runs) if args.runs else None
        data, records, provenance = _prepare_samples(args, out) if args.model is not None else (None, None, None)
    except ResumeMismatch as exc:
        print(f"pepo analyze: {exc.path} holds samples of another run: {exc.field} is {exc.old!r} there, {exc.new!r} "
              "here; use another --out, or --overwrite to start over", file=sys.stderr)
        return 2
    except (ArgumentError, DataError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"pepo analyze: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("pepo analyze", "nothing was sampled yet")
    if data is not None:
        from pepo.evaluation.cli import report_questions

        report_questions("pepo analyze", data, args.data)
    try:
        return _run(args, out, records, provenance, dynamics)
    except KeyboardInterrupt:
        return interrupted("pepo analyze", f"the sampled questions are in {out / 'samples.jsonl'}; "
                                           "rerun the same command to resume")


def _run(args, out: Path, records, provenance, dynamics) -> int:
    from pepo.analysis import collect_responses, write_analysis

    responses, settings = None, {"runs": " ".join(args.runs or []) or "-"}
    if records is not None:
        from pepo.modeling import load_model_and_processor

        model, processor = load_model_and_processor(args.model, dtype=args.dtype, device=args.device)
        result, responses, empty = collect_responses(
            model, processor, records, n=args.n, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
            samples_path=out / "samples.jsonl", progress=not args.no_progress, measure=args.measure,
            gate_alpha=args.gate_alpha, gate_temperature=args.gate_temperature, weighting=args.weighting,
            with_shift=not args.no_shift, provenance=provenance,
        )
        settings = {
            "model": args.model, "benchmark": args.benchmark, "data": args.data, "questions": len(records),
            "samples per question": args.n, "temperature": args.temperature, "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens, "seed": args.seed, "top-K": args.top_k, "measure": args.measure,
            "weights": f"{args.weighting}, alpha {args.gate_alpha}, tau {args.gate_temperature}",
            f"avg@{args.n} (%)": f"{result.totals['avg_at_n']:.2f}", "empty responses skipped": empty,
            "samples": "samples.jsonl (the pepo eval rows; rerunning resumes from it)", **settings,
        }
    report = write_analysis(out, responses, measure=args.measure, k=args.top_k, settings=settings, dynamics=dynamics,
                            html_responses=args.html_responses)
    _print_summary(report, responses, args.top_k, args.measure, Console())
    return 0
