"""Argument checks shared by the ``pepo`` subcommands, run before anything expensive is loaded.

Every check raises :class:`ArgumentError` with one line that names the argument, its value and the
way out; :class:`OneLineParser` makes argparse's own errors one line too. A subcommand's ``main``
catches :class:`ArgumentError` (and :class:`pepo.data.DataError`), prints ``pepo <command>: <message>``
and returns 2, with no traceback. ``KeyboardInterrupt`` is reported in one line by :func:`interrupted`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

__all__ = [
    "ArgumentError",
    "OneLineParser",
    "check_at_least",
    "check_device",
    "check_dtype",
    "check_model_dir",
    "check_out_dir",
    "check_out_file",
    "check_sampling",
    "finite_float",
    "interrupted",
]

DTYPES = ("auto", "bfloat16", "float16", "float32")


class ArgumentError(ValueError):
    """A bad command-line argument; the message is the one line shown to the user."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: message (see --help)``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def finite_float(text: str) -> float:
    """argparse ``type``: a float, refusing ``nan`` and ``inf`` (which ``float`` accepts and every range
    check lets through or past): ``argument --x: must be a finite number, got 'nan'``, exit 2."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def check_at_least(name: str, value: int | float | None, minimum: int | float) -> None:
    """``--name`` must be >= ``minimum`` (``None``: not given, nothing to check); NaN is refused too."""
    if value is not None and not value >= minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {value}")


def check_sampling(n: int, temperature: float, top_p: float) -> None:
    """``--temperature`` >= 0 (0 means greedy, which gives one answer: ``--n 1``), 0 < ``--top-p`` <= 1."""
    check_at_least("--n", n, 1)
    if temperature < 0:
        raise ArgumentError(f"--temperature must be >= 0, got {temperature}")
    if temperature == 0 and n != 1:
        raise ArgumentError(f"--temperature 0 means greedy decoding, which gives one answer per question: use --n 1 "
                            f"(got --n {n}), or a temperature > 0 to sample {n}")
    if not 0 < top_p <= 1:
        raise ArgumentError(f"--top-p must be in (0, 1], got {top_p}")


def check_model_dir(path: str | Path, option: str = "--model") -> Path:
    """A local ``save_pretrained`` folder: it exists and holds ``config.json``."""
    path = Path(path)
    if not path.exists():
        raise ArgumentError(f"{option} {path}: no such folder (pepo loads local checkpoints only)")
    if not path.is_dir():
        raise ArgumentError(f"{option} {path}: is a file; pass the checkpoint folder (the one holding config.json)")
    if not (path / "config.json").is_file():
        inner = sorted(p.parent for p in path.glob("*/config.json"))
        hint = f"; did you mean {option} {inner[0]}?" if inner else "; pass a save_pretrained folder"
        raise ArgumentError(f"{option} {path}: no config.json in this folder{hint}")
    return path


def _check_writable_parent(path: Path, option: str) -> None:
    parent = path.absolute().parent
    while not parent.exists():  # the folders that do not exist yet will be created under this one
        parent = parent.parent
    if not parent.is_dir():
        raise ArgumentError(f"{option} {path}: {parent} is a file, not a folder; choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArgumentError(f"{option} {path}: cannot write under {parent} (permission denied); choose another {option}")
    try:  # os.access says yes to root everywhere, /proc and read-only mounts included: try it
        with tempfile.TemporaryFile(dir=parent, prefix=".pepo-write-check-"):
            pass
    except OSError as error:
        raise ArgumentError(f"{option} {path}: cannot create files under {parent} ({error.strerror}); "
                            f"choose another {option}") from None


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """An output file: a regular file or a new name (not a folder, nor a device such as /dev/null),
    and its folder can be created and written."""
    path = Path(path)
    if path.is_dir():
        raise ArgumentError(f"{option} {path}: is a folder; give a file name, e.g. {option} {path / 'results.json'}")
    if path.exists() and not path.is_file():
        raise ArgumentError(f"{option} {path}: not a regular file (a device or a pipe); results go to a file and a "
                            f"<name>.questions.jsonl beside it: give a file name, e.g. {option} results.json")
    _check_writable_parent(path, option)
    return path


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """An output folder: not an existing file, and it can be created and written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"{option} {path}: is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ArgumentError(f"{option} {path}: cannot write in this folder (permission denied); choose another {option}")
    else:
        _check_writable_parent(path, option)
    return path


def check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise ArgumentError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")


def check_device(device: str | None) -> None:
    """``--device`` parses as a torch device that exists on this machine."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ArgumentError(f"--device {device}: not a device name; use e.g. cpu, cuda, cuda:0, mps") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ArgumentError(f"--device {device}: no CUDA GPU on this machine (torch {torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ArgumentError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ArgumentError(f"--device {device}: MPS is not available on this machine; use --device cpu")
        return
    raise ArgumentError(f"--device {device}: pepo runs on cpu, cuda or mps")


def interrupted(command: str, how_to_resume: str) -> int:
    """One line for Ctrl-C (no traceback); exit code 130 like a shell."""
    print(f"\n{command}: interrupted; {how_to_resume}", file=sys.stderr)
    return 130
