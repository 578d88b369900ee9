"""``pepo train``: PEPO / GRPO / DAPO training from a YAML recipe, TRL-style.

    pepo train --config recipes/pepo_g_qwen2_5_vl_3b_geometry3k.yaml [--field value ...]
    accelerate launch -m pepo train --config recipes/....yaml          # several GPUs
    python -m pepo train --config recipes/pepo_g_tiny.yaml

Arguments are parsed by TRL's ``TrlParser`` into three dataclasses, exactly as TRL's own
``trl grpo`` does: :class:`TrainScriptArguments` (data and rewards), :class:`~pepo.trainer.PEPOConfig`
(every ``GRPOConfig`` / ``TrainingArguments`` field plus PEPO's) and TRL's ``ModelConfig`` (model
path, dtype, LoRA). A YAML key sets a default; a ``--field value`` on the command line wins.

``--help`` is pepo's own short page (:func:`short_help`); ``--help-all`` is TRL's full list. Every
argument, the data and the model path are checked before anything is loaded: a mistake is one
line on stderr and exit code 2. Where no GPU is found, ``bf16`` defaults to false (CPU training).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pepo.versions import argparse_actions

EMBEDDED = "embedded"  # the tiny Qwen2.5-VL at random initialisation, built under output_dir
EMBEDDED_WARM_START = "embedded_warm_start"  # the same model after pepo demo's supervised warm start
# the handful of fields people change, as the short help lists them (--help-all: every field's own help)
COMMON_FIELDS: dict[str, str] = {
    "output_dir": "where the model, trainer_state.json and checkpoints go",
    "model_name_or_path": f"local checkpoint folder, or '{EMBEDDED_WARM_START}' / '{EMBEDDED}' (tiny Qwen2.5-VL)",
    "train_file": "training records (Geometry3K JSONL by default), or 'embedded' (synthetic task)",
    "reward_funcs": "reward names, e.g. accuracy format",
    "weighting": "pepo (PEPO) | none (plain GRPO / DAPO) | perception | exploration",
    "perception_aware": "none | papo (PAPO) | vppo (VPPO), with weighting: none",
    "max_steps": "optimiser steps",
    "learning_rate": "peak learning rate",
    "per_device_train_batch_size": "completions per device per micro-step",
    "num_generations": "completions sampled per prompt (the GRPO group)",
    "max_completion_length": "tokens per completion",
    "logging_steps": "one console line and one logged row every N steps",
    "save_steps": "a checkpoint-N folder every N steps (with save_strategy: steps)",
    "report_to": "metric backends: none, tensorboard, wandb, ...",
    "resume_from_checkpoint": "true: go on from the newest complete checkpoint in output_dir",
    "overwrite_output_dir": "true: start over in an output_dir holding another run (removes its checkpoints)",
    "bf16": "bfloat16 training (GPU); false where no GPU is found",
}


class UsageError(ValueError):
    """A bad argument or recipe value: printed as one line, exit code 2."""


@dataclass
class TrainScriptArguments:
    """Data and rewards of a ``pepo train`` run."""

    train_file: str = field(
        default=EMBEDDED,
        metadata={
            "help": "Training records, read by the reader train_format names (Geometry3K JSONL by default; see "
            "pepo.data). 'embedded' generates the synthetic task of pepo.embedded under <output_dir>/embedded_data "
            "(for the tiny-model recipes).",
        },
    )
    train_format: str = field(
        default="geometry3k",
        metadata={
            "help": "Reader of train_file, a benchmark name of pepo.data.BENCHMARKS (geometry3k, refcoco, "
            "fgvc_aircraft, puzzlevqa, ...): the grounding, few-shot and puzzle recipes train on those formats.",
        },
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder the records' image paths are relative to (default: the JSONL's folder)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training records (quick runs)."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Reward functions by name, from pepo.rewards.REWARD_FUNCTIONS (e.g. accuracy format)."},
    )
    warm_start: str = field(
        default="demo",
        metadata={
            "help": f"Settings of the warm start that model_name_or_path '{EMBEDDED_WARM_START}' builds when missing "
            "(pepo demo's steps 1-3, the same code): 'demo' (pepo demo's, a few minutes on a CPU, once) or 'quick' "
            "(pepo demo --quick's, under a minute, a weaker start).",
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output_dir that holds another run: its checkpoint-N folders, model weights, "
            "trainer_state.json and TensorBoard logs (runs/) are removed first. Without it (or "
            "--resume_from_checkpoint) such a folder is refused, so two runs never mix. (transformers 5 dropped "
            "TrainingArguments' field of this name; this is pepo's.)",
        },
    )
    eval_after_train: str = field(
        default="none",
        metadata={
            "help": "none | val | test: after training, print the model's avg@8 on that held-out split of the synthetic "
            "task (train_file: embedded), scored by pepo eval's code (pepo.evaluation), beside the warm start's. The "
            "reward printed during training is the training reward, on the prompts being trained on.",
        },
    )
    embedded_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the built warm starts, one subfolder per settings, seed and pepo version (default: $PEPO_CACHE, "
            "else $XDG_CACHE_HOME/pepo, else ~/.cache/pepo).",
        },
    )


def _parser():
    from trl import ModelConfig, TrlParser

    from pepo.trainer.config import PEPOConfig

    parser = TrlParser((TrainScriptArguments, PEPOConfig, ModelConfig), prog="pepo train")

    def error(message: str):  # argparse would print the ~200-line usage and exit
        raise UsageError(message)

    parser.error = error
    if not _has_bf16_device():
        for action in argparse_actions(parser):
            if action.dest == "bf16":
                action.default = False  # CPU training, not TrainingArguments' "doesn't support bf16/gpu"
    return parser


def _has_bf16_device() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _recipe(argv: list[str]) -> tuple[Path | None, dict]:
    """The ``--config`` file of ``argv`` (a path, or a shipped recipe's name such as ``pepo_g_tiny``)
    and its mapping (``{}`` without one), read as TrlParser will."""
    import yaml

    from pepo.shipped_recipes import find_recipe

    if "--config" not in argv:
        return None, {}
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise UsageError("--config: give a recipe file or a shipped recipe's name, e.g. --config pepo_g_tiny")
    path = Path(argv[index + 1])
    if not path.is_file():
        path = find_recipe(argv[index + 1])
        if path is None:
            raise UsageError(f"--config {argv[index + 1]}: no such file or shipped recipe{_recipes_hint()}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: a recipe is a YAML mapping of field: value, got {type(config).__name__}")
    return path, config


def _check_recipe_fields(parser, path: Path, config: dict) -> None:
    """Every key of the recipe is a field (the values are checked with the command line's)."""
    dests = {action.dest for action in argparse_actions(parser)}
    unknown = [key for key in config if key not in dests and key != "env"]  # env: TrlParser's environment block
    if unknown:
        raise UsageError(f"{path}: unknown field(s) {', '.join(map(str, unknown))}: "
                         "pepo train --help-all lists every field")


def _where(message: str, argv: list[str], path: Path | None, config: dict) -> str:
    """Prefix a field's error with the recipe file when the value came from the recipe."""
    import re

    match = re.match(r"argument --(\w+)(?:/--[\w-]+)*: (.*)", message) or re.match(r"(\w+)=(.*)", message)
    if match is None:
        return message
    name = match.group(1)
    from_cli = any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)
    if path is not None and name in config and not from_cli:
        return f"{path}: {name}: {match.group(2)}" if message.startswith("argument") else f"{path}: {message}"
    return f"--{name}: {match.group(2)}" if message.startswith("argument") else message


def _field_source(name: str, on_command_line: set[str], path: Path | None, config: dict) -> str:
    """``--name`` when the command line sets the field, ``recipe.yaml: name`` when the recipe does."""
    if name in on_command_line:
        return f"--{name}"
    return f"{path}: {name}" if path is not None and name in config else name


def _fields_on_command_line(parser, argv: list[str]) -> set[str]:
    actions = parser._option_string_actions
    return {actions[a.split("=")[0]].dest for a in argv if a.split("=")[0] in actions}


def _without_config(argv: list[str]) -> list[str]:
    args = list(argv)
    if "--config" in args:
        del args[args.index("--config"):args.index("--config") + 2]
    return args


def _check_values(values: dict, on_command_line: set[str], path: Path | None, config: dict) -> None:
    """Every field's value as the dataclasses would get it (recipe, then command line) checked by
    :mod:`pepo.trainer.field_checks` before they are built; ``output_dir`` must not be a file."""
    from trl import ModelConfig

    from pepo.cli_checks import ArgumentError, check_out_dir
    from pepo.trainer.config import PEPOConfig
    from pepo.trainer.field_checks import FieldError, check_fields, field_kinds

    try:
        check_fields(values, field_kinds(TrainScriptArguments, PEPOConfig, ModelConfig))
        if values.get("output_dir"):
            check_out_dir(values["output_dir"], _field_source("output_dir", on_command_line, path, config))
    except FieldError as error:
        raise UsageError(f"{_field_source(error.name, on_command_line, path, config)} {error.text}") from None
    except ArgumentError as error:
        raise UsageError(str(error)) from None


def parse(argv: list[str]):
    """``(script_args, training_args, model_args)`` from ``argv`` (``--config file.yaml`` allowed).

    Raises :class:`UsageError` naming the recipe file (or ``--field``), the field, its value and what
    it must be, for every value the recipe or the command line sets, before a dataclass is built."""
    parser = _parser()
    path, config = _recipe(argv)
    if path is not None:
        _check_recipe_fields(parser, path, config)
        parser.set_defaults_with_config(**{k: v for k, v in config.items() if k != "env"})
        argv = [*argv[: argv.index("--config") + 1], str(path), *argv[argv.index("--config") + 2 :]]  # a name -> its file
    try:
        values = vars(parser.parse_known_args(_without_config(argv))[0])
    except ValueError as error:  # argparse's: "argument --max_steps: invalid int value: 'four'"
        raise UsageError(_where(str(error), argv, path, config)) from None
    on_command_line = _fields_on_command_line(parser, argv)
    given = set(config) | on_command_line  # the defaults are the libraries' own
    _check_values({name: value for name, value in values.items() if name in given}, on_command_line, path, config)
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as error:
        message = str(error)
        if "not used by the HfArgumentParser" in message:
            message = f"unknown arguments {message.split(': ', 1)[-1]}: every field is listed by pepo train --help-all"
        if "doesn't support bf16" in message:
            message = "bf16=True: needs a GPU with bfloat16 and none was found; set bf16: false (or --bf16 false) for CPU"
        raise UsageError(_where(message, argv, path, config)) from None


def _recipes_hint() -> str:
    from pepo.shipped_recipes import recipes_dir

    return f" (pepo recipes lists the shipped ones, in {recipes_dir()})" if recipes_dir() else ""


def short_help() -> str:
    """pepo's own ``pepo train --help``: what it does, the recipes, two examples, the common fields."""
    import textwrap

    from pepo.shipped_recipes import recipe_names, recipes_dir

    recipes = recipe_names()
    tiny = " ".join(r for r in recipes if r.endswith("_tiny"))
    large = " ".join(r for r in recipes if "_geometry3k" in r and "/" not in r)
    paper = " ".join(r for r in recipes if r.startswith("paper/"))
    lines = [
        "usage: pepo train --config RECIPE [--field value ...]",
        "",
        "Train a vision-language model with PEPO, GRPO, DAPO, PAPO or VPPO (TRL's GRPOTrainer plus PEPO's",
        "token weights) from a YAML recipe. A --field value on the command line overrides the recipe's field.",
        "RECIPE is a YAML file or the name of a shipped recipe (pepo recipes lists them, pepo recipes cp copies one).",
        "",
        f"Recipes shipped, in {recipes_dir() or '(none found in this install)'}:",
        *textwrap.wrap(f"tiny Qwen2.5-VL on CPU, minutes: {tiny}", 100, initial_indent="  ", subsequent_indent="    "),
        *textwrap.wrap(f"Qwen2.5-VL-3B on Geometry3K, GPU: {large}", 100, initial_indent="  ", subsequent_indent="    "),
        *textwrap.wrap(f"the paper's other models and tasks, GPU: {paper}", 100, initial_indent="  ",
                       subsequent_indent="    "),
        "",
        "Examples:",
        "  pepo train --config pepo_g_tiny",
        "  pepo train --config pepo_g_qwen2_5_vl_3b_geometry3k --output_dir runs/pepo_g \\",
        "      --model_name_or_path /models/Qwen2.5-VL-3B-Instruct --train_file data/geometry3k/train.jsonl",
        "",
        "Fields people change (in the recipe, or as --field value):",
        *(f"  --{name:<28} {text}" for name, text in COMMON_FIELDS.items()),
        "",
        "Every field (TRL's GRPOConfig, transformers' TrainingArguments, PEPO's, LoRA): pepo train --help-all",
        "After training: pepo eval --model <output_dir> ...   pepo analyze --runs <output_dir> --out <folder>",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class BuiltSource:
    """A ``model_name_or_path`` or ``train_file`` value that names something pepo builds on first use
    rather than reads (the embedded tiny model, its warm start, its synthetic task)."""

    build: Callable[[TrainScriptArguments, Any], Path]  # (script_args, training_args) -> the folder / file
    check: Callable[[TrainScriptArguments], None] = lambda script_args: None  # before anything is loaded
    # (script_args, training_args, model_args) -> the held-out split matching built training data, named at the end
    test_split: Callable[[TrainScriptArguments, Any, Any], Path] | None = None


# Registered by pepo.train (the `pepo train` command), which sits above pepo.trainer and
# pepo.embedded: this layer does not know what they build.
BUILT_MODELS: dict[str, BuiltSource] = {}
BUILT_DATA: dict[str, BuiltSource] = {}
# eval_after_train's held-out evaluation, registered by pepo.train (pepo.evaluation sits above this
# layer): called with (script_args, training_args, model_args, trainer) once the model is saved.
AFTER_TRAINING: list[Callable[[TrainScriptArguments, Any, Any, Any], None]] = []
EVAL_SPLITS = ("none", "val", "test")


def _train_dataset(script_args: TrainScriptArguments, training_args, accept_image_size=None, model_type=None):
    from pepo.data import load_benchmark, to_grpo_dataset

    train_file = script_args.train_file
    if train_file in BUILT_DATA:
        train_file = BUILT_DATA[train_file].build(script_args, training_args)
    # images the model's processor refuses (e.g. aspect ratio > 200) are bad records here, not at step 7
    loaded = load_benchmark(script_args.train_format, train_file, image_root=script_args.image_root,
                            accept_image_size=accept_image_size)
    records = loaded.records[: script_args.max_train_samples] if script_args.max_train_samples else loaded.records
    refuse_several_images(records, model_type)
    return to_grpo_dataset(records)


def refuse_several_images(records, model_type: str | None) -> None:
    """A record with several images, for a model family that cannot train such a row
    (``Family.one_image_per_row``), is a bad record: one line naming its file and line."""
    from pepo.data import DataError
    from pepo.families import one_image_per_row

    reason = one_image_per_row(model_type)
    if not reason:
        return
    for record in records:
        if len(record.images) > 1:
            raise DataError(record.source, None, "images", f"{len(record.images)} images in one record, but a "
                            f"{model_type} model cannot train a row with several images ({reason}); "
                            "give one image per record, or train a model of another family")


def check_arguments(script_args: TrainScriptArguments, training_args, model_args) -> None:
    """Everything that can be checked without loading a model: a mistake raises one clear error."""
    from pepo.rewards import get_reward

    model_path = model_args.model_name_or_path
    if model_path is None:
        raise UsageError(f"set model_name_or_path (a local checkpoint folder, '{EMBEDDED_WARM_START}' or '{EMBEDDED}')")
    if model_path in BUILT_MODELS:
        BUILT_MODELS[model_path].check(script_args)
    elif not (Path(model_path) / "config.json").is_file():
        raise UsageError(f"model_name_or_path {model_path}: no config.json there; pepo loads local checkpoint folders "
                         f"(save_pretrained layout), or '{EMBEDDED_WARM_START}' / '{EMBEDDED}'")
    for name in script_args.reward_funcs:
        get_reward(name)  # KeyError listing the known rewards
    _check_report_to(training_args.report_to)
    if script_args.train_file in BUILT_DATA:
        BUILT_DATA[script_args.train_file].check(script_args)
    elif not Path(script_args.train_file).exists():
        raise UsageError(f"train_file {script_args.train_file}: no such file or folder")
    _check_eval_after_train(script_args)


def _check_eval_after_train(script_args: TrainScriptArguments) -> None:
    split = script_args.eval_after_train
    if split not in EVAL_SPLITS:
        raise UsageError(f"eval_after_train={split!r}: choose one of {EVAL_SPLITS}")
    if split != "none" and script_args.train_file not in BUILT_DATA:
        raise UsageError(f"eval_after_train={split!r}: names a split of the synthetic task (train_file: {EMBEDDED}); "
                         f"for {script_args.train_file} set it to none and run pepo eval --model <output_dir> --data <test.jsonl>")


def _check_report_to(report_to) -> None:
    """Each ``report_to`` backend is one transformers knows and is installed (the Trainer would fail after
    the model loaded)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in (n for n in names if n not in ("none", "all")):
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(INTEGRATION_TO_CALLBACK)
            raise UsageError(f"report_to {name}: not a metric backend; choose from none, {known}")
        if name not in get_available_reporting_integrations():
            raise UsageError(f"report_to {name}: {name} is not installed (pip install {name}), or report_to: none")


def build_trainer(script_args: TrainScriptArguments, training_args, model_args):
    """The :class:`~pepo.trainer.PEPOTrainer` a parsed recipe describes (model, data, rewards, LoRA).

    Arguments, rewards and the training data (against the model's processor) are checked before the
    model's weights are loaded; the embedded models are built first, when missing."""
    from transformers import AutoConfig
    from trl import get_peft_config

    from pepo.modeling import image_size_check, load_model_and_processor, load_processor
    from pepo.rewards import get_reward
    from pepo.trainer.progress import use_compact_console
    from pepo.trainer.trainer import PEPOTrainer

    check_arguments(script_args, training_args, model_args)
    if training_args.use_cpu:  # an FSDP / DeepSpeed accelerate config shards on CPU too (not DDP, silently)
        from pepo.trainer.cpu_sharding import allow_sharding_on_cpu

        allow_sharding_on_cpu()
    rewards = [get_reward(name) for name in script_args.reward_funcs]
    model_path = model_args.model_name_or_path
    if model_path in BUILT_MODELS:
        model_path = BUILT_MODELS[model_path].build(script_args, training_args)
    # images the model's processor refuses are bad records now, before the weights are loaded
    processor = load_processor(model_path, trust_remote_code=training_args.trust_remote_code)
    config = AutoConfig.from_pretrained(model_path, local_files_only=True, trust_remote_code=training_args.trust_remote_code)
    dataset = _train_dataset(script_args, training_args, image_size_check(processor), config.model_type)
    check_enough_prompts(len(dataset), training_args, script_args.train_file)
    _check_perception_before_loading(config, processor, dataset, training_args)
    model, processor = load_model_and_processor(
        model_path, dtype=model_args.dtype or "float32", trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
    )
    trainer = PEPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    return use_compact_console(trainer)


def _check_perception_before_loading(config, processor, dataset, training_args) -> None:
    """The trainer's perception checks (an image token, an image row), from the checkpoint's config
    and processor, so that a refused run has not loaded the weights first."""
    from pepo.core import WEIGHTING_MODES
    from pepo.image_tokens import resolve_image_token_id
    from pepo.trainer.mixed_batches import check_perception_is_possible

    mode = WEIGHTING_MODES.get(training_args.weighting)
    if mode is None or not mode.needs_perception:
        return
    image_token_id = resolve_image_token_id(config, processor, training_args.image_token)
    model_name = (config.architectures or [type(config).__name__])[0]
    check_perception_is_possible(training_args.weighting, True, image_token_id, dataset, model_name)


def check_enough_prompts(records: int, training_args, train_file: str) -> None:
    """TRL's sampler drops an incomplete batch of prompts: with fewer records than one generation batch
    takes (``generation_batch_size / num_generations``) training runs 0 steps and exits 0. Refused."""
    prompts = training_args.generation_batch_size // training_args.num_generations
    if records < prompts:
        raise ValueError(
            f"{train_file}: {records} training record(s), but one generation batch takes {prompts} prompts "
            f"(generation_batch_size {training_args.generation_batch_size} / num_generations "
            f"{training_args.num_generations}): training would run 0 steps. Give more records (max_train_samples) "
            "or lower per_device_train_batch_size"
        )


def _is_complete_checkpoint(path: Path) -> bool:
    """Transformers writes ``trainer_state.json`` last: present and parseable means the save finished."""
    try:
        return isinstance(json.loads((path / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def saved_checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders under ``output_dir``, oldest first (numeric order), complete or not."""
    found = (p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit())
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """:func:`saved_checkpoints` whose save finished (a save killed half way has no valid trainer_state.json)."""
    return [p for p in saved_checkpoints(output_dir) if _is_complete_checkpoint(p)]


def resume_checkpoint(value: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint ``--resume_from_checkpoint value`` names, checked before any work starts.

    ``true`` / ``last``: the newest *complete* ``checkpoint-N`` under ``output_dir``. Transformers
    writes ``trainer_state.json`` last, so a folder without it (or with it cut short) is a save that
    was killed half way; transformers' own ``resume_from_checkpoint=True`` would pick it and fail. Such folders are skipped with a warning. ``false`` / empty: no resume.
    A path must be a complete checkpoint folder.
    """
    if value is None or str(value).strip().lower() in ("", "false", "no", "none"):
        return None
    output_dir = Path(output_dir)
    if str(value).strip().lower() in ("true", "yes", "last"):
        found, complete = saved_checkpoints(output_dir), complete_checkpoints(output_dir)
        if not complete:
            raise ValueError(f"--resume_from_checkpoint {value}: no complete checkpoint-N folder in {output_dir}")
        for partial in found[found.index(complete[-1]) + 1 :]:
            warnings.warn(f"{partial}: incomplete checkpoint (no valid trainer_state.json; killed while saving?): skipped",
                          stacklevel=2)
        return str(complete[-1])
    path = Path(value)
    if not _is_complete_checkpoint(path):
        raise ValueError(
            f"--resume_from_checkpoint {value}: not a complete checkpoint folder ({path / 'trainer_state.json'} is "
            "missing or unreadable); pass a checkpoint-N folder, or 'true' for the newest complete one in output_dir"
        )
    return str(path)


# what a run leaves in its output_dir besides checkpoint-N (pepo's embedded_model / embedded_data are
# rebuilt the same way by any run, so they belong to none); runs/ holds TensorBoard's event files
RUN_FILES = ("trainer_state.json", "training_args.bin", "model.safetensors", "model.safetensors.index.json",
             "adapter_model.safetensors", "runs")


def _previous_run(output_dir: Path) -> list[Path]:
    return [*saved_checkpoints(output_dir), *(output_dir / name for name in RUN_FILES if (output_dir / name).exists())]


def check_run_folder(output_dir: str | Path, resuming: bool, overwrite: bool) -> None:
    """One run per ``output_dir``: a folder holding another run's model or checkpoints is refused unless
    the run resumes it or ``overwrite`` starts over (:func:`clear_previous_run`)."""
    if resuming and overwrite:
        raise UsageError("--resume_from_checkpoint continues the run in output_dir and --overwrite_output_dir removes "
                         "it: choose one")
    found = _previous_run(Path(output_dir))
    if found and not resuming and not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise UsageError(f"output_dir {output_dir} holds another run ({names}); continue it with "
                         "--resume_from_checkpoint true, start over with --overwrite_output_dir true (removes them), "
                         "or choose another output_dir")


def clear_previous_run(output_dir: str | Path) -> None:
    """Remove another run's checkpoints, model weights, state and TensorBoard logs from ``output_dir``."""
    import shutil

    for path in _previous_run(Path(output_dir)):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _finished_at(checkpoint: str | None) -> int | None:
    """The global step a checkpoint was saved at (``None`` without one)."""
    if checkpoint is None:
        return None
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("global_step", 0))


def _interrupted(trainer, argv: list[str], overwrite: bool = False) -> str:
    """The one line a Ctrl-C prints: where training stopped and how to go on."""
    output_dir = Path(trainer.args.output_dir).resolve()
    step = f"step {trainer.state.global_step}/{trainer.state.max_steps}"
    saved = complete_checkpoints(output_dir)  # a save cut short by the Ctrl-C is no place to resume from
    if not saved:
        return (f"pepo train: interrupted at {step}; no complete checkpoint saved yet under {output_dir} "
                "(save_strategy / save_steps); start again with --overwrite_output_dir true")
    return (f"pepo train: interrupted at {step}; resume from {saved[-1].name} with: "
            f"pepo train {_resume_command(argv, overwrite)}")


def _resume_command(argv: list[str], overwrite: bool) -> str:
    """``argv`` without its own resume / overwrite choice, resuming from the newest complete checkpoint
    (and, when the recipe asks to overwrite, telling it not to)."""
    options = ("--resume_from_checkpoint", "--overwrite_output_dir", "--overwrite-output-dir")
    kept, skip, on_command_line = [], False, False
    for arg in argv:
        if skip and not arg.startswith("--"):
            skip = False
            continue
        skip = arg in options
        on_command_line |= arg.split("=")[0] in options[1:]
        if not skip and arg.split("=")[0] not in options and arg:
            kept.append(arg)
    keep_off = ["--overwrite_output_dir", "false"] if overwrite and not on_command_line else []
    return " ".join([*kept, "--resume_from_checkpoint", "true", *keep_off])


def main(argv: list[str] | None = None) -> int:
    import yaml

    from pepo.data import DataError
    from pepo.trainer.progress import filter_unactionable_warnings, quiet_library_progress

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(f"pepo train: give a recipe: pepo train --config RECIPE{_recipes_hint()}; "
              "pepo train --help for more", file=sys.stderr)
        return 2
    if "-h" in argv or "--help" in argv:
        print(short_help())
        return 0
    if "--help-all" in argv:
        _parser().print_help()
        return 0
    filter_unactionable_warnings()
    quiet_library_progress()
    try:
        script_args, training_args, model_args = parse(argv)
        checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        check_run_folder(training_args.output_dir, checkpoint is not None, script_args.overwrite_output_dir)
        check_arguments(script_args, training_args, model_args)
        output_dir = Path(training_args.output_dir).resolve()
        done = _finished_at(checkpoint)
        if done is not None and training_args.max_steps > 0 and done >= training_args.max_steps:
            print(f"pepo train: {checkpoint} is at step {done} = max_steps {training_args.max_steps}: nothing to "
                  f"train (raise --max_steps to go on); the model is in {output_dir}")
            return 0
        if script_args.overwrite_output_dir:
            with training_args.main_process_first(local=False, desc="clearing output_dir"):
                if training_args.should_save:  # the process that writes the checkpoints
                    clear_previous_run(output_dir)
        trainer = build_trainer(script_args, training_args, model_args)
    except (DataError, FileNotFoundError, KeyError, ValueError, yaml.YAMLError) as exc:
        # bad recipe values or YAML, data, reward names, paths: the message says what to fix, no traceback
        print(f"pepo train: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    # restores weights, optimiser, scheduler, RNG states and global_step, so the progressive
    # lambda and the data order continue where the checkpoint left off
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        if trainer.is_world_process_zero():
            print("\n" + _interrupted(trainer, argv, script_args.overwrite_output_dir), file=sys.stderr)
        return 130
    trainer.save_model(str(output_dir))
    trainer.save_state()  # trainer_state.json: every logged metric, what `pepo analyze --runs` reads
    if trainer.is_world_process_zero():
        print(_end_lines(trainer, script_args, model_args))
    for after_training in AFTER_TRAINING:  # on every process: a hook may wait for the others (main_process_first)
        after_training(script_args, training_args, model_args, trainer)
    return 0


def _end_lines(trainer, script_args: TrainScriptArguments, model_args) -> str:
    """Where the run went: the model, TensorBoard's event files when reported, and the next commands
    (with the held-out split matching built training data such as ``train_file: embedded``)."""
    output_dir = Path(trainer.args.output_dir).resolve()
    built = BUILT_DATA.get(script_args.train_file)
    test_split = built.test_split(script_args, trainer.args, model_args) if built and built.test_split else None
    lines = [f"pepo train: model and trainer_state.json in {output_dir}"]
    logging_dirs = [cb.logging_dir for cb in trainer.callback_handler.callbacks
                    if type(cb).__name__ == "TensorBoardCallback" and getattr(cb, "logging_dir", None)]
    lines += [f"  TensorBoard event files in {Path(folder).resolve()} (tensorboard --logdir {Path(folder).resolve()})"
              for folder in logging_dirs]
    lines.append(f"  next: pepo eval --model {output_dir} --data {test_split or '<test.jsonl>'}; "
                 f"pepo analyze --runs {output_dir} --out <folder>")
    return "\n".join(lines)
