"""Resuming an evaluation from rows that the same run produced, and from nothing else.

A results file (``<out>.questions.jsonl``) is a header line, then one row per finished question.
The header records everything that produced the rows: the settings (n, temperature, top_p,
max_new_tokens, blank_images, backend, seed) and the provenance (model path and fingerprint of its
files, data path and fingerprint of its questions, benchmark, image root, dtype). A later run reuses
the rows only if every one of those equals its own; otherwise :class:`ResumeMismatch` names the
first field that differs and both values. Each row also carries its question's content hash
(prompt, solution, choices, image bytes): a row is reused only for the question it answered, so a
reordered or edited data file never lends a row to another question.

The file is created with the first finished row (header and row together): a run that fails before
finishing a question leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pepo.data.records import Record

__all__ = [
    "ResumeMismatch",
    "RowWriter",
    "check_resumable",
    "data_fingerprint",
    "file_fingerprint",
    "loaded_model_fingerprint",
    "model_fingerprint",
    "question_sha256",
    "read_rows",
    "row_key",
    "run_provenance",
]

logger = logging.getLogger(__name__)

# Files of a checkpoint folder that do not change what the model generates (training bookkeeping).
_NOT_MODEL_FILES = {"training_args.bin", "trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
_MODEL_SUFFIXES = {".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".tiktoken", ".py"}


class ResumeMismatch(ValueError):
    """A results file holds rows of another run: ``field`` is ``old`` there and ``new`` here."""

    def __init__(self, path: Path, field: str, old: Any, new: Any):
        self.path, self.field, self.old, self.new = path, field, old, new
        super().__init__(f"{path} holds rows of another run: {field} is {old!r} there, {new!r} here; "
                         "use another results file, or delete it to start over")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, sorted)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{_sha256_file(file)}\n".encode())
    return digest.hexdigest()


def model_fingerprint(path: str | Path) -> str:
    """sha256 over a checkpoint folder's config, weight, tokenizer and processor files (name and
    bytes; subfolders such as ``checkpoint-N`` or ``eval/`` are not part of the model)."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix in _MODEL_SUFFIXES and file.name not in _NOT_MODEL_FILES:
            digest.update(f"{file.name}\0{_sha256_file(file)}\n".encode())
    return digest.hexdigest()


def loaded_model_fingerprint(model: Any) -> str:
    """sha256 of an in-memory transformers model: its config and every parameter and buffer."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _image_bytes(source: Any) -> bytes:
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def question_sha256(record: Record) -> str:
    """A question's content hash (first 16 hex digits of sha256): prompt, solution, task, choices,
    scoring hints and the bytes of its images. Not its id or location."""
    content = json.dumps(
        {"prompt": record.prompt, "solution": record.solution, "task": record.task, "choices": record.choices,
         "meta": record.meta}, sort_keys=True, ensure_ascii=False, default=str,
    )
    digest = hashlib.sha256(content.encode())
    for source in record.images:
        digest.update(hashlib.sha256(_image_bytes(source)).digest())
    return digest.hexdigest()[:16]


def data_fingerprint(hashes: list[str]) -> str:
    """sha256 over the content hashes of a data file's questions, in order."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def run_provenance(
    *, model: str | Path, data: str | Path, hashes: list[str], benchmark: str, image_root: str | Path | None,
    split: str | None, dtype: str | None,
) -> dict[str, Any]:
    """What produced a ``pepo eval`` / ``pepo analyze`` run's rows, for the results header:
    the model folder (path, :func:`model_fingerprint`), the data (path, :func:`data_fingerprint` of
    every question read, ``hashes``), the benchmark reader, the image root, the split and the dtype."""
    return {
        "model": {"path": str(Path(model).resolve()), "sha256": model_fingerprint(model)},
        "data": {"path": str(Path(data).resolve()), "sha256": data_fingerprint(hashes)},
        "benchmark": benchmark,
        "image_root": None if image_root is None else str(Path(image_root).resolve()),
        "split": split,
        "dtype": dtype or "float32",
    }


def row_key(question_id: str, sha256: str) -> str:
    """What a row is resumed by: the question's id and its content hash."""
    return f"{question_id}#{sha256}"


def _flatten(header: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in header.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _compared(flat: dict[str, Any]) -> dict[str, Any]:
    # A model or data file that moved but kept its bytes produced the same rows: compare the
    # fingerprints, not the paths (which are recorded for the reader).
    return {k: v for k, v in flat.items() if not (k.endswith(".path") and k[: -len("path")] + "sha256" in flat)}


def read_header(path: Path) -> dict[str, Any] | None:
    """The header of a results file, or ``None`` when there is no file (or an empty one)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or "config" not in header:
        raise ResumeMismatch(path, "header", first.strip()[:80], "a pepo results header")
    return header


def check_resumable(path: str | Path, header: dict[str, Any]) -> int:
    """Raise :class:`ResumeMismatch` unless ``path`` is absent or was written with ``header``;
    returns the number of rows it holds."""
    path = Path(path)
    old = read_header(path)
    if old is None:
        return 0
    old_flat, new_flat = _compared(_flatten(old)), _compared(_flatten(header))
    for field in dict.fromkeys([*new_flat, *old_flat]):
        if old_flat.get(field) != new_flat.get(field):
            raise ResumeMismatch(path, field, old_flat.get(field), new_flat.get(field))
    return max(0, sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) - 1)


def drop_partial_last_line(results_path: Path) -> None:
    """Cut a last line that a kill left without its newline, so that appended rows start on a
    line of their own (appending after it would glue two rows into one malformed line)."""
    if not results_path.exists():
        return
    with results_path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning("%s: incomplete last line (%d bytes) dropped; that question is redone",
                           results_path, len(data) - keep)
            handle.truncate(keep)


def read_rows(results_path: Path, header: dict[str, Any]) -> dict[str, dict]:
    """Rows of a results file written with ``header``, by :func:`row_key`."""
    check_resumable(results_path, header)
    done: dict[str, dict] = {}
    if not results_path.exists():
        return done
    lines = results_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a line cut short by the kill: redo that question
                logger.warning("%s:%d: incomplete last line ignored", results_path, number)
                continue
            raise ValueError(f"{results_path}:{number}: malformed results line; delete the file to start over") from None
        done[row_key(row["id"], row.get("sha256", ""))] = row
    return done


class RowWriter:
    """Appends finished rows to a results file, writing the header with the first row (so a run
    that finishes no question creates no file)."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path, self.header, self._handle = path, header, None

    def write(self, row: dict[str, Any]) -> None:
        if self._handle is None:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
            if fresh:
                self._handle.write(json.dumps(self.header, ensure_ascii=False) + "\n")
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
