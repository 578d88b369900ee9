r"""``pepo eval``: evaluate a local checkpoint on a local benchmark copy (``docs/method.md``, Data and evaluation).

    pepo demo --quick     # writes the checkpoints and data this example reads
    pepo eval --model runs/demo_quick/pepo_g/checkpoint --benchmark geometry3k \
        --data runs/demo_quick/data/test.jsonl --n 8 --out results/pepo_g_test.json

Writes ``--out`` (settings, totals, per-question outputs / answers / scores / majority answer) and,
as it goes, ``<out>.questions.jsonl``; rerunning the same command resumes from that file. Rows of
another model, data file, seed or setting are never reused: such a file is refused (``--overwrite``
starts over). Without ``--out`` the results go next to the model:
``<model>/eval/<benchmark>-<data name>.json``.
"""

from __future__ import annotations

import argparse
import json
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
    check_out_file,
    check_sampling,
    finite_float,
    interrupted,
)

__all__ = [
    "add_question_arguments",
    "apply_no_progress",
    "check_question_arguments",
    "default_out",
    "load_questions",
    "main",
    "prepare_questions",
    "refuse",
    "report_questions",
    "results_jsonl_path",
]


def results_jsonl_path(out: Path) -> Path:
    """The per-question JSONL written next to the result JSON (``results.json`` ->
    ``results.questions.jsonl``)."""
    return out.with_name(out.stem + ".questions.jsonl")


def default_out(model: str | Path, benchmark: str, data: str | Path, split: str | None = None) -> Path:
    """Where results go without ``--out``: next to the model, named after the benchmark and the data,
    so two models (or two data files) never share a results file by default."""
    name = "-".join(part for part in (benchmark, Path(data).stem, split) if part)
    return Path(model) / "eval" / f"{name}.json"


def add_question_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The options ``pepo eval`` and ``pepo analyze`` share: one spelling, one default, one help text.
    ``required``: ``--model`` and ``--data`` must be given (``pepo analyze`` can run on ``--runs``
    alone)."""
    from pepo.data import BENCHMARKS, SPLITS

    parser.add_argument("--model", required=required, default=None,
                        help="local checkpoint folder (save_pretrained layout, holds config.json)")
    parser.add_argument("--benchmark", default="geometry3k", help=f"data format: {', '.join(sorted(BENCHMARKS))} [geometry3k]")
    parser.add_argument("--data", required=required, default=None, help="data file (.jsonl/.json/.parquet) or folder of them")
    parser.add_argument("--split", default=None, help=f"with a --data folder holding several splits, the one to read ({', '.join(SPLITS)})")
    parser.add_argument("--image-root", default=None, help="root of relative image paths (default: the data file's folder)")
    parser.add_argument("--allow-absolute-paths", action="store_true", help="accept absolute image paths in the data")
    parser.add_argument("--skip-invalid", action="store_true", help="skip (and list) bad records instead of stopping")
    parser.add_argument("--n", type=int, default=8, help="responses sampled per question (avg@N) [8]")
    parser.add_argument("--temperature", type=finite_float, default=1.0,
                        help="sampling temperature; 0 = greedy, with --n 1 (pepo analyze: > 0, also the entropy's) [1.0]")
    parser.add_argument("--top-p", type=finite_float, default=1.0, help="nucleus sampling top_p [1.0]")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per response [1024]")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per generate call [8]")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions (N >= 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed [0]")
    parser.add_argument("--dtype", default=None, help="model dtype: float32, bfloat16, float16, auto (default float32)")
    parser.add_argument("--device", default=None, help="e.g. cuda:0 (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="discard the responses already saved under --out and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def apply_no_progress(args) -> None:
    """``--no-progress`` hides transformers' bars too (its "Loading weights" bar), not only pepo's."""
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def check_question_arguments(args) -> None:
    """The checks of :func:`add_question_arguments`' options (:class:`ArgumentError`); the model
    folder and the data only when ``--model`` is given."""
    check_sampling(args.n, args.temperature, args.top_p)
    for name in ("batch_size", "max_new_tokens", "limit"):
        check_at_least(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    check_dtype(args.dtype)
    check_device(args.device)
    if args.model is not None:
        check_model_dir(args.model)
        if not Path(args.data).exists():
            raise ArgumentError(f"--data {args.data}: no such file or folder (pepo reads local copies only)")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pepo eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_arguments(parser, required=True)
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers", help="generation backend")
    parser.add_argument("--out", default=None, help="result JSON [<model>/eval/<benchmark>-<data name>.json]")
    return parser


def _check_arguments(args) -> Path:
    """Every argument, before anything is loaded; returns the output path."""
    check_question_arguments(args)
    out = Path(args.out) if args.out is not None else default_out(args.model, args.benchmark, args.data, args.split)
    return check_out_file(out)


def load_questions(args, command: str, processor=None):
    """``(loaded data, provenance)`` of a run's ``--data`` (``args``: benchmark,
    data, split, image_root, skip_invalid, allow_absolute_paths, model, dtype); images the model's
    processor refuses are bad records. :func:`report_questions` says what was read."""
    from pepo.data import load_benchmark
    from pepo.evaluation.resume import question_sha256, run_provenance
    from pepo.modeling import image_size_check

    data = load_benchmark(
        args.benchmark, args.data, image_root=args.image_root, skip_invalid=getattr(args, "skip_invalid", False),
        allow_absolute_paths=args.allow_absolute_paths, split=args.split,
        accept_image_size=image_size_check(processor) if processor is not None else None,
    )
    provenance = run_provenance(
        model=args.model, data=args.data, hashes=[question_sha256(r) for r in data.records], benchmark=args.benchmark,
        image_root=args.image_root, split=args.split, dtype=args.dtype or ("auto" if getattr(args, "backend", "") == "vllm" else "float32"),
    )
    return data, provenance


def report_questions(command: str, data, data_path: str | Path) -> None:
    """The files read (a ``--data`` folder's, by their path in it) and the records skipped, on stderr."""
    root = Path(data_path)
    names = [str(f.relative_to(root)) if root.is_dir() else f.name for f in data.files]
    print(f"{command}: read {len(data.records)} questions from {len(names)} file(s): {', '.join(names)}", file=sys.stderr)
    for error in data.skipped:
        print(f"{command}: skipped {error}", file=sys.stderr)


def _load_model(args):
    if args.backend == "vllm":
        try:
            from vllm import LLM
        except ImportError:
            raise SystemExit("pepo eval: --backend vllm needs vLLM: pip install 'pepo[vllm]'") from None
        from pepo.modeling import load_processor

        llm = LLM(model=args.model, dtype=args.dtype or "auto", seed=args.seed)
        return llm, load_processor(args.model)
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


def prepare_questions(args, command: str, results: Path, *, limit: int | None, backend: str, verb: str):
    """``(data, records, provenance)``: the processor, the data (the first ``limit`` questions) and
    the resume check of ``results`` (emptied first with ``--overwrite``): what can fail before the
    model loads. ``verb`` says what an empty selection could not be used for."""
    from pepo.evaluation import eval_config, results_header
    from pepo.evaluation.resume import check_resumable
    from pepo.modeling import load_processor

    try:
        processor = load_processor(args.model)
    except (OSError, ValueError, KeyError) as exc:
        raise ArgumentError(f"--model {args.model}: cannot load its processor ({str(exc).splitlines()[0]})") from None
    data, provenance = load_questions(args, command, processor)
    records = data.records[:limit] if limit is not None else data.records
    if not records:
        raise ArgumentError(f"--data {args.data}: no questions to {verb}")
    if args.overwrite:
        results.unlink(missing_ok=True)
    config = eval_config(n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                         blank_images=False, backend=backend, seed=args.seed)
    check_resumable(results, results_header(config, provenance))
    return data, records, provenance


def refuse(command: str, exc: Exception, rows: str = "rows") -> int:
    """The one line for an error found before the model loads (``rows``: what a results file of
    another run holds); exit code 2."""
    from pepo.evaluation.resume import ResumeMismatch

    if isinstance(exc, ResumeMismatch):
        message = (f"{exc.path} holds {rows} of another run: {exc.field} is {exc.old!r} there, {exc.new!r} here; "
                   "use another --out, or --overwrite to start over")
    else:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
    print(f"{command}: {message}", file=sys.stderr)
    return 2


def _prepare(args):
    """Checks, data, and the resume check: everything that can fail before the model loads."""
    if args.backend == "vllm" and args.device is not None:
        raise ArgumentError("--device is for --backend transformers; vLLM places the model itself")
    out = _check_arguments(args)
    data, records, provenance = prepare_questions(args, "pepo eval", results_jsonl_path(out), limit=args.limit,
                                                  backend=args.backend, verb="evaluate")
    if args.overwrite:
        out.unlink(missing_ok=True)
    return out, data, records, provenance


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apply_no_progress(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pepo.data import DataError
    from pepo.evaluation import evaluate_model
    from pepo.evaluation.resume import ResumeMismatch

    try:
        out, data, records, provenance = _prepare(args)
    except (ArgumentError, DataError, FileNotFoundError, KeyError, ResumeMismatch) as exc:
        return refuse("pepo eval", exc)
    except KeyboardInterrupt:
        return interrupted("pepo eval", "nothing was evaluated yet")
    report_questions("pepo eval", data, args.data)
    try:
        model, processor = _load_model(args)
        result = evaluate_model(
            model, processor, records, n=args.n, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, backend=args.backend,
            results_path=results_jsonl_path(out), seed=args.seed, progress=not args.no_progress, provenance=provenance,
        )
    except KeyboardInterrupt:
        return interrupted("pepo eval", f"the finished questions are in {results_jsonl_path(out)}; "
                                        "rerun the same command to resume")
    payload = result.to_dict()
    payload["config"] |= {"model": args.model, "benchmark": args.benchmark, "data": args.data, "split": args.split,
                          "image_root": args.image_root, "provenance": provenance}
    payload["skipped"] = [str(error) for error in data.skipped]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    print_summary(payload, args.benchmark)
    print(f"results: {out} (per question: {results_jsonl_path(out)})")
    return 0
