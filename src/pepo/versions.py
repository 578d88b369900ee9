"""The upstream versions pepo is tested with, and the guard of every place it patches or relies on
library internals (transformers, accelerate, TRL, argparse).

Each patch site names its entry of :data:`PATCHES` and asks :func:`signature_matches` (or
:func:`require_signature`) whether the upstream function it wraps, shadows or bypasses still has the
parameters it was written for. On a mismatch the site either keeps the library's own path after one
:class:`UpstreamChangedWarning` (an optimisation that can be left out) or refuses with one line,
:class:`UnsupportedUpstreamError` (a patch without which the run would silently be another one).
:data:`TRL_OVERRIDES` is every ``GRPOTrainer`` method that pepo's trainer classes override, with the
parameters it was written for, and :data:`TRL_ATTRIBUTES` the private attributes it reads;
:func:`upstream_checked`, around ``GRPOTrainer.__init__`` in ``PEPOTrainer.__init__``, checks them and the
installed versions: the one check of TRL's signatures. ``docs/patches.md`` describes every entry (a test
keeps the two in step).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = [
    "PATCHES", "TESTED_RANGES", "TRL_ATTRIBUTES", "TRL_OVERRIDES", "Patch", "UnsupportedUpstreamError",
    "UpstreamChangedWarning", "argparse_actions", "parameters", "require_signature", "warn_once",
    "signature_matches", "untested_versions", "upstream_checked", "warn_if_untested_versions",
]

#: the ranges the test suite passes with (``make test`` at the lower end, ``make test-latest`` at the
#: newest the registry offers); pyproject.toml states the same (tests/test_versions.py compares them)
TESTED_RANGES = {
    "trl": ">=1.16,<1.17",
    "transformers": ">=5.24,<5.26",
    "accelerate": ">=1.15,<1.17",
}


class UpstreamChangedWarning(UserWarning):
    """A library changed under a pepo patch, which is left out (the library's own path runs)."""


class UnsupportedUpstreamError(ValueError):
    """A library changed under a pepo patch that the run cannot do without (one line, no traceback in
    ``pepo train``: a ``ValueError``, like the other refused settings)."""


@dataclass(frozen=True)
class Patch:
    site: str  # the pepo function or class that applies it
    target: str  # the upstream object it wraps, shadows, hooks or bypasses
    mismatch: str  # "falls back" (one warning, the library's own path) or "refuses" (one line)


PATCHES = {
    "mrope.get_rope_index": Patch(
        "pepo.mrope.vectorise_rope_index", "transformers Qwen2_5_VLModel.get_rope_index", "falls back"),
    "prompt_sharing": Patch(
        "pepo.prompt_sharing.sharing_backbone (the loss forward's SharedPromptForward and share_prompt_prefill's "
        "generate)", "transformers Qwen2-VL family get_rope_index and the forward's cache / position_ids inputs",
        "falls back"),
    "image_sharing.vision_tower": Patch(
        "pepo.image_sharing.share_image_encoding", "transformers Qwen2-VL family vision tower forward", "falls back"),
    "mixed_batches.pre_hook": Patch(
        "pepo.trainer.mixed_batches.ignore_empty_image_inputs", "the policy model's forward (pixel_values)",
        "falls back"),
    "cpu_sharding.AcceleratorState.__init__": Patch(
        "pepo.trainer.cpu_sharding.allow_sharding_on_cpu", "accelerate AcceleratorState.__init__", "refuses"),
    "modeling.QwenVLImageTextProcessor": Patch(
        "pepo.modeling.QwenVLImageTextProcessor", "transformers Qwen2_5_VLProcessor (__init__ bypassed, "
        "validate_inputs, _process_images, replace_image_token, create_mm_token_type_ids)",
        "refuses (__init__, validate_inputs); falls back (the image cache and token-type lookup)"),
    "modeling.InternVLImageTextProcessor": Patch(
        "pepo.modeling.InternVLImageTextProcessor", "transformers InternVLProcessor (__init__ bypassed, "
        "validate_inputs)", "refuses"),
    "modeling.Qwen3VLImageTextProcessor": Patch(
        "pepo.modeling.Qwen3VLImageTextProcessor", "transformers Qwen3VLProcessor (__init__ bypassed, "
        "validate_inputs)", "refuses"),
    "modeling.LlavaOnevisionImageTextProcessor": Patch(
        "pepo.modeling.LlavaOnevisionImageTextProcessor", "transformers LlavaOnevisionProcessor (__init__ bypassed, "
        "validate_inputs)", "refuses"),
    "argparse._actions": Patch("pepo.versions.argparse_actions", "argparse ArgumentParser._actions", "refuses"),
}

#: every GRPOTrainer method (TRL's, or transformers Trainer's that GRPOTrainer inherits) that PEPOTrainer
#: or PerceptionAwareMixin overrides, with its parameters in TRL 1.16 / transformers 5.24: each override
#: calls it by these names, so any other signature is refused (tests/test_versions.py checks that this
#: is exactly the set pepo's trainer classes override)
TRL_OVERRIDES = {
    "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
    "_compute_loss": ("self", "model", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
        "compute_aux_loss", "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
        "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("self", "inputs"),
    "_tokenize_prompts": ("self", "prompts"),
    "training_step": ("self", "model", "inputs", "num_items_in_batch"),
    "log": ("self", "logs", "start_time"),
    "save_model": ("self", "output_dir", "_internal_call"),
    "_load_from_checkpoint": ("self", "resume_from_checkpoint", "model"),
    "_get_train_sampler": ("self", "dataset"),
}

#: GRPOTrainer's private attributes (and transformers Trainer's ``_save``) that pepo reads or calls
TRL_ATTRIBUTES = ("_metrics", "_step", "_tokenizer", "_save")

_warned: set[str] = set()


def parameters(fn: Callable) -> tuple[str, ...]:
    """``fn``'s parameter names in order, ``*args`` / ``**kwargs`` marked with their stars."""
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return tuple(stars.get(p.kind, "") + name for name, p in inspect.signature(fn).parameters.items())


def _mismatch(fn: Callable, expected: tuple[str, ...], exact: bool = True) -> str | None:
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        found = parameters(fn)
    except (TypeError, ValueError):
        return f"{name} has no signature to check"
    if exact and found != tuple(expected):
        return f"{name}({', '.join(found)}) is not ({', '.join(expected)})"
    missing = [p for p in expected if p not in found]
    return f"{name} no longer takes {', '.join(missing)}" if missing else None


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> str:
    return ", ".join(f"{name} {_installed(name)}" for name in TESTED_RANGES)


def _written_for() -> str:
    return f"pepo was written for {', '.join(f'{k} {v}' for k, v in TESTED_RANGES.items())} (installed {_versions()})"


def warn_once(key: str, message: str) -> None:
    """One :class:`UpstreamChangedWarning` per ``key`` and process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UpstreamChangedWarning, stacklevel=3)


def signature_matches(patch: str, fn: Callable, expected: tuple[str, ...], exact: bool = True) -> bool:
    """Whether ``fn``'s parameters are still ``expected`` (``exact=False``: include them); if not, one
    warning that ``patch`` is left out."""
    problem = _mismatch(fn, expected, exact)
    if problem is not None:
        warn_once(patch, f"pepo: {patch} left out, the library's own code runs instead: {problem} "
                         f"(written for {', '.join(f'{k} {v}' for k, v in TESTED_RANGES.items())}; installed {_versions()})")
    return problem is None


def require_signature(patch: str, fn: Callable, expected: tuple[str, ...], exact: bool = True) -> None:
    """Raise :class:`UnsupportedUpstreamError` (one line) when ``fn``'s parameters are no longer ``expected``."""
    problem = _mismatch(fn, expected, exact)
    if problem is not None:
        raise UnsupportedUpstreamError(f"{patch}: {problem}; {_written_for()}: install a tested version (docs/patches.md)")


def argparse_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions: argparse keeps them in the private ``_actions`` (no public accessor)."""
    actions = getattr(parser, "_actions", None)
    if not isinstance(actions, list) or not all(isinstance(a, argparse.Action) for a in actions):
        raise UnsupportedUpstreamError("argparse._actions: ArgumentParser no longer lists its actions in _actions "
                                       "(pepo reads them to check recipe fields); docs/patches.md")
    return actions


def untested_versions() -> dict[str, str]:
    """``{package: installed version}`` for each package of :data:`TESTED_RANGES` outside its range."""
    out = {}
    for package, spec in TESTED_RANGES.items():
        installed = _installed(package)
        if installed == "not installed" or Version(installed) not in SpecifierSet(spec):
            out[package] = installed
    return out


def warn_if_untested_versions() -> None:
    """One warning naming the tested ranges when an installed trl / transformers / accelerate is outside them."""
    outside = untested_versions()
    if outside:
        found = ", ".join(f"{name} {version} (tested {TESTED_RANGES[name]})" for name, version in outside.items())
        warn_once("versions", f"pepo: untested library versions: {found}; pepo overrides private TRL methods and "
                              "patches transformers/accelerate internals that change between releases "
                              "(docs/patches.md lists them)")


@contextmanager
def upstream_checked(trainer) -> Iterator[None]:
    """Around ``GRPOTrainer.__init__`` (``PEPOTrainer.__init__``), the one check of the upstream libraries
    when a trainer is built. Before it, when no model work has been done: one warning for untested
    versions, and one line refusing a TRL in which a method of :data:`TRL_OVERRIDES` is gone or has other
    parameters. After it: one line refusing a trainer without an attribute of :data:`TRL_ATTRIBUTES`
    (set by ``GRPOTrainer.__init__``, so not there before)."""
    warn_if_untested_versions()
    _check_trl_overrides()
    yield
    missing = [name for name in TRL_ATTRIBUTES if not hasattr(trainer, name)]
    if missing:
        raise UnsupportedUpstreamError(f"GRPOTrainer no longer sets {', '.join(missing)}, which pepo reads; "
                                       f"{_written_for()}: install a tested trl (docs/patches.md)")


def _check_trl_overrides() -> None:
    from trl import GRPOTrainer

    for name, expected in TRL_OVERRIDES.items():
        method = getattr(GRPOTrainer, name, None)
        if not callable(method):
            raise UnsupportedUpstreamError(f"GRPOTrainer.{name} is gone (pepo overrides it); {_written_for()}: "
                                           "install a tested trl (docs/patches.md)")
        try:
            found = parameters(method)
        except (TypeError, ValueError):
            found = ("?",)  # no signature to read
        if found != expected:
            raise UnsupportedUpstreamError(
                f"GRPOTrainer.{name} takes ({', '.join(found)}), pepo overrides it as "
                f"({', '.join(expected)}); {_written_for()}: install a tested trl (docs/patches.md)")
