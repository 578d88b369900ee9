"""Every value of a ``pepo train`` recipe or command line checked before the config is built.

The kind of each field (integer, float, true/false, list; whether it may be empty) is read from the
annotations of the dataclasses ``pepo train`` parses (``TrainScriptArguments``, ``PEPOConfig`` with
TRL's ``GRPOConfig`` and transformers' ``TrainingArguments``, TRL's ``ModelConfig``), so a field added
upstream is covered without a line here: every float must be finite (NaN and inf are refused), every
integer whole, every list a list. :data:`RANGES` adds the allowed range of the fields where a value of
the right type can still be meaningless (a batch of 0, ``top_p`` 2, a negative learning rate); its
ranges agree with ``PEPOConfig.__post_init__`` and ``check_perception_aware`` (gate_alpha >= 0,
gate_temperature > 0, ...), which refuse the same values for a config built in Python.

:func:`check_fields` raises :class:`FieldError` with the field and the offending value; the caller
(:func:`pepo.trainer.cli.parse`) puts the recipe file or ``--field`` in front.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RANGES", "FieldError", "Range", "check_fields", "field_kinds"]


class FieldError(ValueError):
    """A field's value is refused: ``name`` is the field, ``text`` the rest of the one line."""

    def __init__(self, name: str, text: str):
        super().__init__(f"{name} {text}")
        self.name, self.text = name, text


@dataclass(frozen=True)
class Range:
    """``ok(value)`` holds for the values allowed; ``rule`` says which in words (``>= 1``, ``in (0, 1]``)."""

    ok: Callable[[float], bool]
    rule: str
    why: str = ""  # what the refused values would do, where it helps


def at_least(minimum: int, why: str = "") -> Range:
    return Range(lambda v: v >= minimum, f">= {minimum}", why)


def positive(why: str = "") -> Range:
    return Range(lambda v: v > 0, "> 0", why)


def between(low: float, high: float, low_open: bool = False, high_open: bool = False, why: str = "") -> Range:
    def ok(v):
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return Range(ok, f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}", why)


def steps_or_ratio(why: str = "") -> Range:
    """transformers' *_steps floats: a ratio of the total steps when < 1, else a whole number of steps."""
    return Range(lambda v: v > 0 and (v < 1 or v == int(v)), "> 0 (a ratio of the run's steps if < 1, else whole)", why)


COUNT = at_least(1, "0 is no work at all")
NON_NEGATIVE = at_least(0)
PROBABILITY = between(0, 1)
SEED = between(0, 2**32 - 1, why="numpy's seed range")
PORT = between(1, 65535)

RANGES: dict[str, Range] = {
    # data and batches
    "max_train_samples": at_least(1, "0 used to mean every record, a negative count dropped records; leave it out "
                                     "for every record"),
    "per_device_train_batch_size": COUNT,
    "per_device_eval_batch_size": COUNT,
    "gradient_accumulation_steps": COUNT,
    "eval_accumulation_steps": COUNT,
    "generation_batch_size": COUNT,
    "steps_per_generation": COUNT,
    "num_generations": at_least(2, "GRPO compares the completions of a prompt: one has no advantage"),
    "num_generations_eval": COUNT,
    "num_iterations": COUNT,
    "max_completion_length": COUNT,
    "vllm_max_model_length": COUNT,
    "vllm_tensor_parallel_size": COUNT,
    "dataloader_num_workers": NON_NEGATIVE,
    "dataloader_prefetch_factor": COUNT,
    # length of the run, logging, saving
    "max_steps": Range(lambda v: v == -1 or v >= 1, "-1 (num_train_epochs decides) or >= 1"),
    "num_train_epochs": positive(),
    "logging_steps": steps_or_ratio(),
    "save_steps": steps_or_ratio(),
    "eval_steps": steps_or_ratio(),
    "save_total_limit": COUNT,
    "torch_empty_cache_steps": COUNT,
    "ref_model_sync_steps": COUNT,
    "max_tool_calling_iterations": COUNT,
    "num_completions_to_print": NON_NEGATIVE,
    "seed": SEED,
    "data_seed": SEED,
    "ddp_timeout": COUNT,
    "vllm_server_port": PORT,
    "vllm_group_port": PORT,
    "vllm_server_timeout": positive(),
    "vllm_gpu_memory_utilization": between(0, 1, low_open=True),
    # optimiser
    "learning_rate": positive(),
    "weight_decay": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "adam_beta1": between(0, 1, high_open=True),
    "adam_beta2": between(0, 1, high_open=True),
    "adam_epsilon": positive(),
    "max_grad_norm": at_least(0, "0 turns clipping off"),
    "label_smoothing_factor": between(0, 1, high_open=True),
    "neftune_noise_alpha": NON_NEGATIVE,
    "lora_r": COUNT,
    "lora_alpha": COUNT,
    "lora_dropout": between(0, 1, high_open=True),
    # sampling
    "temperature": positive("0 is greedy decoding: every completion of a group alike, no advantage"),
    "top_p": between(0, 1, low_open=True),
    "top_k": at_least(0, "0 turns it off"),
    "min_p": PROBABILITY,
    "repetition_penalty": positive(),
    # GRPO / DAPO loss
    "beta": at_least(0, "0: no KL term"),
    "epsilon": positive("the clip range is (1 - epsilon, 1 + epsilon_high)"),
    "epsilon_high": positive("the clip range is (1 - epsilon, 1 + epsilon_high)"),
    "delta": positive(),
    "top_entropy_quantile": PROBABILITY,
    "entropy_coef": NON_NEGATIVE,
    "entropy_coef_min": NON_NEGATIVE,
    "entropy_coef_max": NON_NEGATIVE,
    "ref_model_mixup_alpha": PROBABILITY,
    "vllm_importance_sampling_clip_max": positive(),
    "vllm_importance_sampling_clip_min": NON_NEGATIVE,
    # PEPO (PEPOConfig.__post_init__ refuses the same)
    "gate_alpha": at_least(0, "the paper uses 0.05"),
    "gate_temperature": positive("public recipes use 1.8"),
    "dynamic_sampling_max_rounds": NON_NEGATIVE,
    # PAPO / VPPO (check_perception_aware refuses the same)
    "mask_prob": PROBABILITY,
    "papo_gamma": NON_NEGATIVE,
    "papo_eta_ori": NON_NEGATIVE,
    "papo_eta_aug": NON_NEGATIVE,
    "vppo_k": between(0, 1, low_open=True),
    "vppo_beta_min": PROBABILITY,
    "vppo_entropy_coef": NON_NEGATIVE,
}


@dataclass(frozen=True)
class Kind:
    """What a field holds, from its annotation: ``scalar`` is int, float, bool or None (anything else)."""

    scalar: type | None
    is_list: bool = False  # a list only (list[str]); a field that also takes a string is not
    optional: bool = False


def _kind(annotation) -> Kind:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    optional = type(None) in args
    args = tuple(a for a in args if a is not type(None))
    if len(args) == 1 and typing.get_origin(args[0]) is list:
        inner = typing.get_args(args[0])
        return Kind(inner[0] if inner and inner[0] in (int, float, bool) else None, True, optional)
    scalars = [a for a in args if a in (int, float, bool)]
    # int | str (pad_to_multiple_of 'auto'), str | bool: not one type, left to their own checks
    scalar = scalars[0] if len(scalars) == 1 and len(args) == 1 else None
    return Kind(scalar, False, optional)


def field_kinds(*dataclass_types) -> dict[str, Kind]:
    """``field name -> Kind`` for every init field of the dataclasses, from their annotations."""
    kinds = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                kinds[f.name] = _kind(hints[f.name])
    return kinds


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scalar(name: str, value, scalar: type, what: str = "") -> None:
    if scalar is bool:
        if not isinstance(value, bool):
            raise FieldError(name, f"{what}must be true or false, got {value!r}")
        return
    if scalar is int and not (_number(value) and isinstance(value, int)):
        raise FieldError(name, f"{what}must be a whole number, got {value!r}")
    if not _number(value):
        raise FieldError(name, f"{what}must be a number, got {value!r}")
    if not math.isfinite(value):
        raise FieldError(name, f"{what}must be a finite number, got {value!r}")


def _check_one(name: str, value, kind: Kind) -> None:
    if value is None:
        if not kind.optional:
            raise FieldError(name, "is empty; give it a value or leave the field out for its default")
        return
    if kind.is_list:
        if not isinstance(value, (list, tuple)):
            raise FieldError(name, f"must be a list, e.g. {name}: [{value}], got {value!r}")
        if kind.scalar is not None:
            for item in value:
                _check_scalar(name, item, kind.scalar, "items ")
        return
    if kind.scalar is not None:
        _check_scalar(name, value, kind.scalar)
    limits = RANGES.get(name)
    if limits is not None and _number(value) and not limits.ok(value):
        why = f" ({limits.why})" if limits.why else ""
        raise FieldError(name, f"must be {limits.rule}, got {value!r}{why}")


def check_fields(values: dict, kinds: dict[str, Kind]) -> None:
    """Check each ``name: value`` against its field's kind and :data:`RANGES`; the first bad one raises."""
    for name, value in values.items():
        if name in kinds:
            _check_one(name, value, kinds[name])
