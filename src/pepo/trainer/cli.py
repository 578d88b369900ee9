"""``pepo train``: PEPO / GRPO / DAPO training from a YAML recipe, TRL-style.

    pepo train --config recipes/pepo_g_qwen2_5_vl_3b_geometry3k.yaml [--field value ...]
    accelerate launch -m pepo train --config recipes/....yaml          # several GPUs
    python -m pepo train --config recipes/pepo_g_tiny.yaml

Arguments are parsed by TRL's ``TrlParser`` into three dataclasses, exactly as TRL's own
``trl grpo`` does: :class:`TrainScriptArguments` (data and rewards), :class:`~pepo.trainer.PEPOConfig`
(every ``GRPOConfig`` / ``TrainingArguments`` field plus PEPO's) and TRL's ``ModelConfig`` (model
path, dtype, LoRA). A YAML key sets a default; a ``--field value`` on the command line wins.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

EMBEDDED = "embedded"


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


def parse(argv: list[str]):
    """``(script_args, training_args, model_args)`` from ``argv`` (``--config file.yaml`` allowed)."""
    from trl import ModelConfig, TrlParser

    from pepo.trainer.config import PEPOConfig

    parser = TrlParser((TrainScriptArguments, PEPOConfig, ModelConfig), prog="pepo train")
    return parser.parse_args_and_config(argv)


def _embedded_model(output_dir: Path, seed: int) -> Path:
    from pepo.embedded import build_tiny_vlm

    path = output_dir / "embedded_model"
    return path if (path / "config.json").is_file() else build_tiny_vlm(path, seed=seed)


def _train_dataset(script_args: TrainScriptArguments, output_dir: Path, training_args, accept_image_size=None):
    from pepo.data import load_benchmark, to_grpo_dataset

    train_file = script_args.train_file
    if train_file == EMBEDDED:
        from pepo.embedded import generate_split

        train_file = output_dir / "embedded_data" / "train.jsonl"
        # under `accelerate launch` one process writes the data while the others wait for it
        with training_args.main_process_first(desc="embedded training data"):
            if not train_file.is_file():
                generate_split(train_file.parent, "train", script_args.max_train_samples or 256, seed=0)
    # images the model's processor refuses (e.g. aspect ratio > 200) are bad records here, not at step 7
    loaded = load_benchmark(script_args.train_format, train_file, image_root=script_args.image_root,
                            accept_image_size=accept_image_size)
    records = loaded.records[: script_args.max_train_samples] if script_args.max_train_samples else loaded.records
    return to_grpo_dataset(records)


def build_trainer(script_args: TrainScriptArguments, training_args, model_args):
    """The :class:`~pepo.trainer.PEPOTrainer` a parsed recipe describes (model, data, rewards, LoRA)."""
    from trl import get_peft_config

    from pepo.modeling import image_size_check, load_model_and_processor
    from pepo.rewards import get_reward
    from pepo.trainer.trainer import PEPOTrainer

    if training_args.use_cpu:  # an FSDP / DeepSpeed accelerate config shards on CPU too (not DDP, silently)
        from pepo.trainer.cpu_sharding import allow_sharding_on_cpu

        allow_sharding_on_cpu()
    output_dir = Path(training_args.output_dir)
    model_path = model_args.model_name_or_path
    if model_path is None:
        raise ValueError("pepo train: set model_name_or_path (a local checkpoint directory, or 'embedded')")
    if model_path == EMBEDDED:
        with training_args.main_process_first(desc="embedded tiny model"):
            model_path = _embedded_model(output_dir, training_args.seed)
    model, processor = load_model_and_processor(
        model_path, dtype=model_args.dtype or "float32", trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
    )
    return PEPOTrainer(
        model=model,
        reward_funcs=[get_reward(name) for name in script_args.reward_funcs],
        args=training_args,
        train_dataset=_train_dataset(script_args, output_dir, training_args, image_size_check(processor)),
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )


def _is_complete_checkpoint(path: Path) -> bool:
    """Transformers writes ``trainer_state.json`` last: present and parseable means the save finished."""
    try:
        return isinstance(json.loads((path / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


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
        found = sorted(
            (p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        complete = [p for p in found if _is_complete_checkpoint(p)]
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


def main(argv: list[str] | None = None) -> int:
    import yaml

    from pepo.data import DataError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        script_args, training_args, model_args = parse(argv)
        checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        trainer = build_trainer(script_args, training_args, model_args)
    except (DataError, FileNotFoundError, KeyError, ValueError, yaml.YAMLError) as exc:
        # bad recipe values or YAML, data, reward names, paths: the message says what to fix, no traceback
        print(f"pepo train: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    # restores weights, optimiser, scheduler, RNG states and global_step, so the progressive
    # lambda and the data order continue where the checkpoint left off
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(trainer.args.output_dir)
    return 0
