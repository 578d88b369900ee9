"""One evaluation/training example, its images, and the errors that name where bad data is.

Every reader in :mod:`pepo.data` turns its format into :class:`Record` objects. Image files are
referenced, not copied: a record holds the resolved path (or the encoded bytes, for formats that
embed images, such as Hugging Face parquet exports) and :func:`open_image` decodes it when needed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = [
    "DataError",
    "ImageSource",
    "LoadedData",
    "Record",
    "check_image",
    "open_image",
    "resolve_image_path",
]

# A resolved file path, the encoded bytes of an image embedded in the data file, or (for records
# built in memory, e.g. by the demo) a PIL image.
ImageSource = str | bytes | Image.Image


class DataError(ValueError):
    """Bad input data, located: ``path:line: field: message``."""

    def __init__(self, path: str | Path, line: int | str | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass
class Record:
    """One question.

    Attributes:
        id: unique within its benchmark (``pid``, ``sample_index``, or ``file:line``).
        prompt: the conversation in TRL's form, with ``{"type": "image"}`` placeholders where the
            images go: ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", ...}]}]``.
        images: one :data:`ImageSource` per placeholder.
        solution: the reference answer (a string; a ``[x1, y1, x2, y2]`` list for grounding).
        task: how answers are scored: ``"math"`` (mathruler), ``"choice"`` (option letter or
            text), ``"grounding"`` (IoU >= 0.5).
        choices: option texts of a multiple-choice question.
        categories: breakdown keys for the report, e.g. ``{"skills": ["algebraic reasoning"]}``.
        source: ``file:line`` it came from.
        meta: format-specific scoring hints (MathVista's ``answer_type`` / ``precision``).
        reference: a worked solution, when the data has one (the embedded task's chain of thought,
            the warm start's supervised target); not part of the question.
    """

    id: str
    prompt: list[dict[str, Any]]
    images: list[ImageSource]
    solution: Any
    task: str = "math"
    choices: list[str] | None = None
    categories: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None


@dataclass
class LoadedData:
    """Records that passed validation, and the errors of those skipped (``skip_invalid=True``)."""

    records: list[Record]
    skipped: list[DataError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # the data files read, in order

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, index):
        return self.records[index]


def resolve_image_path(
    raw: Any, image_root: str | Path, *, allow_absolute_paths: bool, path: str | Path, line: int | str | None, field: str
) -> str:
    """The file an annotation's image path names, resolved under ``image_root`` at load time.

    A relative path that climbs out of the root (``../../etc/passwd``) is an error, and so is an
    absolute path unless ``allow_absolute_paths``: annotations from elsewhere must not read files
    the user did not point at.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise DataError(path, line, field, f"expected an image path string, got {raw!r}")
    if os.path.isabs(raw):
        if not allow_absolute_paths:
            raise DataError(path, line, field, f"absolute image path {raw!r} (pass allow_absolute_paths=True / --allow-absolute-paths to accept)")
        return os.path.normpath(raw)
    root = os.path.normpath(os.path.abspath(image_root))
    resolved = os.path.normpath(os.path.join(root, raw))
    if os.path.commonpath([root, resolved]) != root:
        raise DataError(path, line, field, f"image path {raw!r} points outside the image root {root!r}")
    return resolved


def open_image(source: ImageSource) -> Image.Image:
    """Decode an image source to an RGB PIL image."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    return image.convert("RGB")


def check_image(
    source: ImageSource, *, path: str | Path, line: int | str | None, field: str,
    accept_size: Callable[[int, int], str | None] | None = None,
) -> None:
    """Raise :class:`DataError` unless the image exists, decodes completely, has a nonzero size and,
    with ``accept_size`` (``(width, height) -> None``, or why the model's processor refuses that
    size), is a size the model takes."""
    name = "embedded image" if isinstance(source, bytes) else f"image {source!r}"
    if isinstance(source, str):
        if not os.path.exists(source):
            raise DataError(path, line, field, f"{name}: file not found (check --image-root)")
        if os.path.getsize(source) == 0:
            raise DataError(path, line, field, f"{name}: empty file (0 bytes)")
    elif len(source) == 0:
        raise DataError(path, line, field, f"{name}: empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()  # decode fully: a truncated or corrupt file fails here, not mid-training
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, line, field, f"{name}: unreadable or corrupt ({type(exc).__name__}: {exc})") from None
    if width == 0 or height == 0:
        raise DataError(path, line, field, f"{name}: zero size ({width}x{height})")
    refusal = accept_size(width, height) if accept_size is not None else None
    if refusal:
        raise DataError(path, line, field, f"{name}: {width}x{height} is refused by the model's image processor ({refusal})")
