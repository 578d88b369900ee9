"""``pepo train``: :mod:`pepo.trainer.cli` plus the embedded defaults the tiny recipes name.

``model_name_or_path: embedded`` is the tiny Qwen2.5-VL at random initialisation (built under
``output_dir``), ``model_name_or_path: embedded_warm_start`` the same model after ``pepo demo``'s
supervised warm start (built once per settings and seed under a cache folder), and
``train_file: embedded`` the synthetic task (written under ``output_dir/embedded_data``). Building
them needs :mod:`pepo.embedded` and :mod:`pepo.demo`, which sit above :mod:`pepo.trainer`, so they
are registered here, on top of both, with :data:`pepo.trainer.cli.BUILT_MODELS` /
:data:`~pepo.trainer.cli.BUILT_DATA`. Importing this module registers them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from pepo.trainer import cli as trainer_cli
from pepo.trainer.cli import EMBEDDED, EMBEDDED_WARM_START, BuiltSource, TrainScriptArguments, UsageError

__all__ = ["embedded_warm_start", "main", "warm_start_folder", "warm_start_settings"]


def _cache_root(script_args: TrainScriptArguments) -> Path:
    if script_args.embedded_cache:
        return Path(script_args.embedded_cache)
    if os.environ.get("PEPO_CACHE"):
        return Path(os.environ["PEPO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pepo"


def warm_start_settings() -> dict:
    """``warm_start`` name -> :class:`pepo.demo.DemoSettings` the embedded warm start is built with."""
    from pepo.demo import QUICK, DemoSettings

    return {"demo": DemoSettings(), "quick": QUICK}


def code_fingerprint() -> str:
    """sha256 over every source file of the installed ``pepo`` package and the versions of the
    libraries the warm start is computed with: a cached build is reused only by the code that made it."""
    import importlib.metadata

    import pepo

    digest = hashlib.sha256()
    root = Path(pepo.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for library in ("torch", "transformers", "trl", "accelerate", "peft"):
        try:
            digest.update(f"{library}=={importlib.metadata.version(library)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{library} absent\0".encode())
    return digest.hexdigest()


def warm_start_folder(cache_root: Path, settings, seed: int, label: str = "demo") -> Path:
    """The cache folder of one warm start: its checkpoint in ``warm_start/checkpoint``, the synthetic
    splits it was trained (``data/train.jsonl``), selected (``data/val.jsonl``) and scored on (``data/test.jsonl``)."""
    key = {**asdict(settings), "seed": seed, "code": code_fingerprint()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_root) / f"warm_start-{label}-seed{seed}-{digest}"


def embedded_warm_start(cache_root: Path, settings, seed: int, label: str = "demo") -> Path:
    """The warm-started tiny Qwen2.5-VL checkpoint for ``settings`` (a :class:`pepo.demo.DemoSettings`)
    and ``seed``, built with :func:`pepo.demo.prepare` (pepo demo's own steps 1-3) when missing.

    One folder per settings, seed and code (a hash of every setting and of :func:`code_fingerprint`
    in its name, ``label`` for people): a start built with other settings or by another version of
    pepo is never reused. The build goes to a temporary folder renamed
    into place at the end, so a build killed half way is redone, never used."""
    from pepo.demo import prepare

    folder = warm_start_folder(cache_root, settings, seed, label)
    checkpoint = folder / "warm_start" / "checkpoint"
    if (checkpoint / "config.json").is_file():
        return checkpoint
    print(f"pepo train: building the embedded warm start ({label} settings, once) under {folder}", flush=True)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    prepare(partial, settings, seed)
    try:
        partial.rename(folder)
    except OSError:  # another process finished the same build first: keep theirs
        if not (checkpoint / "config.json").is_file():
            raise
    return checkpoint


def _embedded_model(output_dir: Path, seed: int) -> Path:
    from pepo.embedded import build_tiny_vlm

    path = output_dir / "embedded_model"
    return path if (path / "config.json").is_file() else build_tiny_vlm(path, seed=seed)


# Each build runs under main_process_first: with `accelerate launch`, one process builds while the
# others wait, then they read what it wrote.


def _build_model(script_args: TrainScriptArguments, training_args) -> Path:
    with training_args.main_process_first(desc="embedded tiny model"):
        return _embedded_model(Path(training_args.output_dir), training_args.seed)


def _check_warm_start(script_args: TrainScriptArguments) -> None:
    if script_args.warm_start not in warm_start_settings():
        raise UsageError(f"warm_start={script_args.warm_start!r}: choose one of {tuple(warm_start_settings())}")


def _build_warm_start(script_args: TrainScriptArguments, training_args) -> Path:
    with training_args.main_process_first(desc="embedded warm start"):
        settings = warm_start_settings()[script_args.warm_start]
        return embedded_warm_start(_cache_root(script_args), settings, training_args.seed, script_args.warm_start)


def _build_data(script_args: TrainScriptArguments, training_args) -> Path:
    from pepo.embedded import generate_split

    train_file = Path(training_args.output_dir) / "embedded_data" / "train.jsonl"
    with training_args.main_process_first(desc="embedded training data"):
        if not train_file.is_file():
            generate_split(train_file.parent, "train", script_args.max_train_samples or 256, seed=0)
    return train_file


def _embedded_test_split(script_args: TrainScriptArguments, training_args, model_args) -> Path:
    """The held-out split matching ``train_file: embedded``: the warm start's own test split (what its
    score before training is measured on) when the model is the embedded warm start; otherwise the
    synthetic task's test split, written once beside the training split."""
    if model_args.model_name_or_path == EMBEDDED_WARM_START:
        settings = warm_start_settings()[script_args.warm_start]
        folder = warm_start_folder(_cache_root(script_args), settings, training_args.seed, script_args.warm_start)
        return folder / "data" / "test.jsonl"
    from pepo.demo import DemoSettings
    from pepo.embedded import generate_split

    test_file = Path(training_args.output_dir) / "embedded_data" / "test.jsonl"
    if not test_file.is_file():  # the same stream (seed 0) as the training split's, another split name
        generate_split(test_file.parent, "test", DemoSettings().n_test, seed=0)
    return test_file


# eval_after_train: the held-out figure printed at the end. Sampling as pepo eval's default (8 samples
# at temperature 1, seed 0), at most the recipe's max_completion_length tokens: what training rewarded.
HELD_OUT_SAMPLES = 8


def _held_out_file(script_args: TrainScriptArguments, training_args) -> Path:
    """The synthetic task's ``eval_after_train`` split, as large as pepo demo's (128 val, 256 test
    questions), under ``output_dir/embedded_data`` beside the training split: seed 0, the same
    questions as the demo warm start's own split, never trained on (another random stream)."""
    from pepo.demo import DemoSettings
    from pepo.embedded import generate_split

    split, settings = script_args.eval_after_train, DemoSettings()
    data_dir = Path(training_args.output_dir) / "embedded_data"
    if not (data_dir / f"{split}.jsonl").is_file():
        generate_split(data_dir, split, settings.n_val if split == "val" else settings.n_test, seed=0)
    return data_dir / f"{split}.jsonl"


def _held_out_scores(model, processor, questions: list, max_new_tokens: int) -> list[float]:
    from pepo.evaluation import evaluate_model

    was_training = model.training
    model.eval()
    result = evaluate_model(model, processor, questions, n=HELD_OUT_SAMPLES, max_new_tokens=max_new_tokens,
                            batch_size=32, seed=0, progress=False)
    model.train(was_training)
    return [row["score"] for row in result.questions]


def evaluate_after_training(script_args: TrainScriptArguments, training_args, model_args, trainer) -> None:
    """``eval_after_train: val | test``: print the trained model's avg@8 on that held-out split beside
    the model it started from (the lift +- its paired standard error), scored by pepo eval's code."""
    from pepo.data import load_geometry3k
    from pepo.evaluation import paired_standard_error
    from pepo.modeling import load_model_and_processor

    if script_args.eval_after_train == "none":
        return
    start_path = model_args.model_name_or_path
    if start_path in trainer_cli.BUILT_MODELS:  # built before training: this finds it (every process takes part)
        start_path = trainer_cli.BUILT_MODELS[start_path].build(script_args, training_args)
    if not trainer.is_world_process_zero():  # one process scores: the others are done
        return
    path = _held_out_file(script_args, training_args)
    questions = load_geometry3k(path, image_root=path.parent).records
    tokens = training_args.max_completion_length
    print(f"pepo train: held-out check: avg@{HELD_OUT_SAMPLES} on {path} ({len(questions)} questions, "
          f"{tokens} tokens), the trained model and its start...", flush=True)
    after = _held_out_scores(trainer.model, trainer.processing_class, questions, tokens)
    start, processor = load_model_and_processor(start_path)
    before = _held_out_scores(start, processor, questions, tokens)
    lift, se = 100 * (sum(after) - sum(before)) / len(questions), 100 * paired_standard_error(before, after)
    record = {"split": script_args.eval_after_train, "data": str(path), "questions": len(questions),
              "samples": HELD_OUT_SAMPLES, "max_new_tokens": tokens, "start": str(start_path),
              "avg_start": 100 * sum(before) / len(before), "avg_after": 100 * sum(after) / len(after),
              "lift": lift, "paired_se": se, "per_question": {"start": before, "after": after}}
    out = Path(training_args.output_dir) / f"held_out_{script_args.eval_after_train}.json"
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"  held-out avg@{HELD_OUT_SAMPLES}: {100 * sum(after) / len(after):.1f} after training, "
          f"{100 * sum(before) / len(before):.1f} at the start: lift {lift:+.1f} +- {se:.1f} (paired SE)"
          f"{'' if abs(lift) > 2 * se else ', within 2 SE: no measurable change'} ({out})", flush=True)


trainer_cli.BUILT_MODELS[EMBEDDED] = BuiltSource(build=_build_model)
trainer_cli.BUILT_MODELS[EMBEDDED_WARM_START] = BuiltSource(build=_build_warm_start, check=_check_warm_start)
trainer_cli.BUILT_DATA[EMBEDDED] = BuiltSource(build=_build_data, test_split=_embedded_test_split)
trainer_cli.AFTER_TRAINING.append(evaluate_after_training)


def main(argv: list[str] | None = None) -> int:
    """``pepo train`` (:func:`pepo.trainer.cli.main`) with the embedded model and data available."""
    return trainer_cli.main(argv)
