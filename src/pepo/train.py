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


trainer_cli.BUILT_MODELS[EMBEDDED] = BuiltSource(build=_build_model)
trainer_cli.BUILT_MODELS[EMBEDDED_WARM_START] = BuiltSource(build=_build_warm_start, check=_check_warm_start)
trainer_cli.BUILT_DATA[EMBEDDED] = BuiltSource(build=_build_data, test_split=_embedded_test_split)


def main(argv: list[str] | None = None) -> int:
    """``pepo train`` (:func:`pepo.trainer.cli.main`) with the embedded model and data available."""
    return trainer_cli.main(argv)
