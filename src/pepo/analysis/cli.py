r"""``pepo analyze``: the paper's token-level analysis (Figures 2, 3 and 6) for any model and data.

    pepo demo --quick     # writes the checkpoints, data and training logs this example reads
    pepo analyze --model runs/demo_quick/pepo_g/checkpoint --benchmark geometry3k \
        --data runs/demo_quick/data/test.jsonl --n 8 --top-k 10 --runs runs/demo_quick --out analysis/

Samples ``--n`` responses per question (the ``pepo eval`` code path), grades them, runs each
response once through the model with hidden states (and once more without the image), and writes
``report.md`` with the figures (PNG), the numbers behind them (CSV) and ``responses.html`` in
``--out``. ``--runs`` alone (no ``--model``) draws only Figure 6 from training logs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pepo.cli_checks import ArgumentError, OneLineParser, check_at_least, check_out_dir, finite_float, interrupted
from pepo.evaluation.cli import (
    add_question_arguments,
    apply_no_progress,
    check_question_arguments,
    prepare_questions,
    refuse,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from pepo.core import PERCEPTION_MEASURES, WEIGHTING_MODES

    parser = OneLineParser(prog="pepo analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_arguments(parser, required=False)
    parser.add_argument("--top-k", type=int, default=10, help="K of the top-K / bottom-K tokens per response [10]")
    parser.add_argument("--measure", choices=PERCEPTION_MEASURES, default="cosine",
                        help="similarity measure of the figures and the weights (the CSVs hold all) [cosine]")
    parser.add_argument("--weighting", choices=sorted(WEIGHTING_MODES), default="pepo", help="weighting mode of the weights [pepo]")
    parser.add_argument("--gate-alpha", type=finite_float, default=0.05, help="gate strength alpha of the weights [0.05]")
    parser.add_argument("--gate-temperature", type=finite_float, default=1.8,
                        help="gate temperature tau of the weights (the recipes' value) [1.8]")
    parser.add_argument("--no-shift", action="store_true", help="skip the second forward without the image (Figure 3 shift)")
    parser.add_argument("--runs", nargs="+", default=None, metavar="RUN_DIR",
                        help="training output dirs / trainer_state.json files for Figure 6 (one line each)")
    parser.add_argument("--html-responses", type=int, default=8, help="responses in responses.html [8]")
    parser.add_argument("--out", required=True, help="report folder")
    return parser


def _check(args) -> None:
    """Every argument, before anything is loaded (:class:`ArgumentError`)."""
    if args.model is None and args.runs is None:
        raise ArgumentError("give --model and --data (Figures 2, 3), --runs (Figure 6), or both")
    if (args.model is None) != (args.data is None):
        raise ArgumentError("--model and --data go together")
    check_at_least("--top-k", args.top_k, 1)
    check_at_least("--html-responses", args.html_responses, 0)
    if args.temperature <= 0:
        raise ArgumentError(f"--temperature must be > 0 (it is also the entropy's), got {args.temperature}")
    check_at_least("--gate-alpha", args.gate_alpha, 0)
    if args.gate_temperature <= 0:
        raise ArgumentError(f"--gate-temperature must be > 0, got {args.gate_temperature}")
    check_question_arguments(args)
    check_out_dir(args.out)
    if args.model is not None:
        _check_image_token(args.model)


def _check_image_token(model_path: str) -> None:
    """The checkpoint's image token, from its config and processor (no weights loaded): without one
    every perception signal would be written as 0."""
    from transformers import AutoConfig

    from pepo.image_tokens import resolve_image_token_id
    from pepo.modeling import load_processor

    if not (Path(model_path) / "config.json").is_file():
        return  # check_question_arguments has said what is wrong with the path
    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    if resolve_image_token_id(config, load_processor(model_path)) is None:
        raise ArgumentError(
            f"--model {model_path}: no image token id in its config (image_token_id / image_token_index) nor its "
            "processor (image_token_id / image_token): pepo analyze reads the perception signals at the image tokens "
            "and would write 0 for every token; give a vision-language checkpoint that names its image token"
        )


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
    apply_no_progress(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pepo.analysis import load_runs
    from pepo.data import DataError

    out = Path(args.out)
    try:
        _check(args)
        dynamics = load_runs(args.runs) if args.runs else None
        data, records, provenance = None, None, None
        if args.model is not None:
            data, records, provenance = prepare_questions(args, "pepo analyze", out / "samples.jsonl", limit=args.limit,
                                                          backend="transformers", verb="analyse")
    except (ArgumentError, DataError, FileNotFoundError, KeyError, ValueError) as exc:  # ValueError: ResumeMismatch too
        return refuse("pepo analyze", exc, rows="samples")
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
                            html_responses=args.html_responses,
                            questions={record.id: record for record in records or []})
    _print_summary(report, responses, args.top_k, args.measure, Console())
    return 0
