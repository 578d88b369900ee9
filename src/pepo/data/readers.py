"""Readers for Geometry3K and the paper's evaluation benchmarks, from local files only.

Each reader accepts the format its dataset is published in (JSONL, JSON -- a list or a dict keyed by
id -- or a Hugging Face parquet export with embedded image bytes) and images as paths relative to an
image root (default: the folder of the data file), absolute paths (only with
``allow_absolute_paths``), or embedded bytes. Nothing is ever downloaded.

Validation is at load time, with the file, line (or record) and field in every error: a malformed
JSON line, a missing field, an image that is missing, empty, corrupt or of zero size. With
``skip_invalid=True`` such records are skipped and returned in ``LoadedData.skipped`` instead.

Prompts follow the paper's release (``evaluation/evaluate_*.py``): the benchmark's question, a
newline, and the training suffix asking for ``<think>`` and ``<answer>`` tags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pepo.data.prompts import PROMPT_SUFFIX, build_prompt
from pepo.data.records import DataError, ImageSource, LoadedData, Record, check_image, resolve_image_path

__all__ = ["BENCHMARKS", "SPLITS", "data_files", "load_benchmark", "load_geometry3k", "register_benchmark"]

_TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def _jsonl_rows(file: Path) -> Iterator[tuple[Path, int | str, dict | DataError]]:
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield file, number, DataError(file, number, None, f"malformed JSON line ({exc.msg} at column {exc.colno})")
                continue
            yield file, number, row if isinstance(row, dict) else DataError(file, number, None, f"expected a JSON object, got {type(row).__name__}")


# Split names as they appear in published file names (``test.jsonl``, ``testmini-00000-of-00001.parquet``,
# ``val/annotations.json``): a folder holding several of them is refused unless one is named.
SPLITS = ("train", "val", "validation", "dev", "test", "testmini")


def _split_of(file: Path, root: Path) -> str | None:
    """The split a data file belongs to, from the words of its path under ``root``."""
    parts = [*file.relative_to(root).parent.parts, file.stem]
    words = [word for part in parts for word in re.split(r"[^a-z0-9]+", part.lower())]
    return next((word for word in reversed(words) if word in SPLITS), None)


def data_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The data files ``path`` names: itself, or the ``.jsonl`` / ``.json`` / ``.parquet`` files of a
    folder (searched recursively). A folder holding several splits (train / val / test ...) is refused
    unless ``split`` names the one to read: merging them would evaluate on training data.

    Raises:
        FileNotFoundError: nothing to read.
        DataError: several splits and no ``split``, or ``split`` not among them.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix not in _TABLE_SUFFIXES:
            raise DataError(path, None, None, f"not a data file pepo reads ({', '.join(_TABLE_SUFFIXES)}); "
                            "convert it, or pass a folder of such files")
        if split is not None and _split_of(path, path.parent) != split:
            raise DataError(path, None, None, f"split {split!r} named, but this file is not of that split; "
                            "pass the folder with the split, or the file without it")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in _TABLE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no .jsonl / .json / .parquet data file found")
    splits = {file: _split_of(file, path) for file in files}
    found = sorted({s for s in splits.values() if s is not None})
    if split is not None:
        files = [file for file in files if splits[file] == split]
        if not files:
            raise DataError(path, None, None, f"no data file of split {split!r} (splits found: {', '.join(found) or 'none'})")
    elif len(found) > 1:
        example = "test" if "test" in found else found[0]
        raise DataError(path, None, None, f"this folder holds the splits {', '.join(found)}; name one "
                        f"(--split {example}) or pass its file")
    return files


def _iter_rows(files: list[Path]) -> Iterator[tuple[Path, int | str, dict | DataError]]:
    """``(file, line-or-record, row)`` for every record; a malformed one yields a DataError."""
    for file in files:
        if file.suffix == ".jsonl":
            yield from _jsonl_rows(file)
        elif file.suffix == ".json":
            text = file.read_text(encoding="utf-8")
            try:
                payload = json.loads(text)
            except json.JSONDecodeError as exc:
                if exc.msg == "Extra data":  # JSON Lines saved as .json (PuzzleVQA does this)
                    yield from _jsonl_rows(file)
                    continue
                raise DataError(file, exc.lineno, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
            # a list of records, or a dict keyed by id (MathVista's testmini.json, LogicVista's dataset.json)
            if isinstance(payload, dict) and payload and all(isinstance(v, dict) for v in payload.values()):
                items = payload.items()
            else:
                items = enumerate(payload if isinstance(payload, list) else [payload], start=1)
            for key, row in items:
                where = f"record {key}"
                yield file, where, row if isinstance(row, dict) else DataError(file, where, None, f"expected a JSON object, got {type(row).__name__}")
        else:
            import pyarrow
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(file)
            except (pyarrow.ArrowException, OSError) as exc:
                raise DataError(file, None, None, f"not a readable parquet file ({str(exc).splitlines()[0]})") from None
            for number, row in enumerate(table.to_pylist(), start=1):
                yield file, f"row {number}", row


class _Row:
    """One raw record with its location, and field access that raises located errors."""

    def __init__(self, data: dict, file: Path, line: int | str, image_root: Path, allow_absolute_paths: bool):
        self.data, self.file, self.line = data, file, line
        self.image_root, self.allow_absolute_paths = image_root, allow_absolute_paths

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(self.file, self.line, field, message)

    def get(self, *names: str, default: Any = None) -> Any:
        """The first of ``names`` present and not None (dotted names look into sub-dicts)."""
        for name in names:
            value: Any = self.data
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                return value
        return default

    def require(self, *names: str) -> Any:
        value = self.get(*names)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise self.error(names[0], f"missing or empty (looked for {', '.join(names)})")
        return value

    def image(self, value: Any, field: str) -> ImageSource:
        """A path (resolved under the image root), or bytes of an image embedded in the file."""
        if isinstance(value, dict):  # Hugging Face Image feature: {"bytes": ..., "path": ...}
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        return resolve_image_path(
            value, self.image_root, allow_absolute_paths=self.allow_absolute_paths,
            path=self.file, line=self.line, field=field,
        )


def _letters(n: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n]


def _with_options(question: str, choices: list[str]) -> str:
    options = "\n".join(f"({letter}) {choice}" for letter, choice in zip(_letters(len(choices)), choices))
    return f"{question}\nOptions:\n{options}"


def _record(row: _Row, text: str, images: list[ImageSource], solution: Any, **fields: Any) -> Record:
    record_id = str(fields.pop("id", None) or f"{row.file.name}:{row.line}")
    return Record(id=record_id, prompt=build_prompt(text, len(images)), images=images, solution=solution, source=row.where, **fields)


# ---------------------------------------------------------------------------------------------
# One parser per published format
# ---------------------------------------------------------------------------------------------


def parse_geometry3k(row: _Row) -> Record:
    """``{"images": [...], "messages": [{"role": "user", "content": "<image>\\n..."}], "solution": "15"}``."""
    messages = row.require("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "content" in m for m in messages):
        raise row.error("messages", "expected a list of {'role', 'content'} messages")
    user = [m for m in messages if m.get("role") == "user"]
    if not user or not isinstance(user[0]["content"], str):
        raise row.error("messages", "no user message with string content")
    solution = row.require("solution")
    raw_images = row.get("images", "image", default=[])
    raw_images = raw_images if isinstance(raw_images, list) else [raw_images]
    images = [row.image(value, f"images[{i}]") for i, value in enumerate(raw_images)]
    try:
        prompt_text = user[0]["content"]
        record = _record(row, prompt_text, images, str(solution), task="math", id=row.get("id", "pid"))
    except ValueError as exc:
        raise row.error("messages", str(exc)) from None
    record.categories = {key: row.data[key] for key in ("category", "qtype") if isinstance(row.data.get(key), str)}
    if isinstance(row.data.get("reference"), str):
        record.reference = row.data["reference"]
    return record


def parse_mathvista(row: _Row) -> Record:
    """MathVista (``AI4Math/MathVista`` parquet, or the GitHub ``testmini.json``)."""
    question = row.require("query", "question")
    image = row.image(row.require("decoded_image", "image"), "image") if row.get("decoded_image") else row.image(row.require("image"), "image")
    choices = row.get("choices") or None
    question_type = row.get("question_type", default="free_form")
    metadata = row.get("metadata", default={}) or {}
    categories = {key: metadata[key] for key in ("skills", "task", "context", "grade", "category", "source", "language") if metadata.get(key)}
    categories["question_type"] = question_type
    return _record(
        row, f"{question}\n{PROMPT_SUFFIX}", [image], str(row.require("answer")), id=row.get("pid"),
        task="choice" if question_type == "multi_choice" else "math", choices=list(choices) if choices else None,
        categories=categories,
        meta={"answer_type": row.get("answer_type"), "precision": row.get("precision"), "nearest_choice": True},
    )


def _parse_mathverse(row: _Row, only_choice: bool) -> Record | None:
    """MathVerse (``AI4Math/MathVerse`` testmini parquet, or ``testmini.json``)."""
    question_type = str(row.get("question_type", default="free-form")).replace("_", "-")
    is_choice = question_type == "multi-choice"
    if only_choice and not is_choice:
        return None
    question = row.require("question", "query_wo")
    suffix = PROMPT_SUFFIX + (" Answer with the option's letter from the given choices directly." if is_choice else "")
    metadata = row.get("metadata", default={}) or {}
    categories = {"problem_version": row.get("problem_version", default="unknown")}
    categories |= {key: metadata[key] for key in ("subject", "subfield") if metadata.get(key)}
    return _record(
        row, f"{question}\n{suffix}", [row.image(row.require("image"), "image")], str(row.require("answer")),
        id=row.get("sample_index", "pid"), task="choice" if is_choice else "math", categories=categories,
    )


def parse_logicvista(row: _Row) -> Record:
    """LogicVista (``lscpku/LogicVista`` parquet, or the GitHub ``dataset.json`` + ``images/``)."""
    image = row.get("image", "imagename", "image_path")
    if image is None:
        raise row.error("image", "missing (looked for image, imagename, image_path)")
    categories = {key: row.data[key] for key in ("skill", "broad_capability", "specific_capability") if row.data.get(key)}
    return _record(
        row, f"{row.require('question')}\n{PROMPT_SUFFIX}", [row.image(image, "image")], str(row.require("answer")).strip(),
        id=row.get("id", "pid"), task="choice", categories=categories,
    )


def parse_grounding(row: _Row) -> Record:
    """Referring-expression grounding: RefCOCO/+/g and LISA-Grounding, as VLM-R1's JSON
    (``{"image", "problem", "solution": [x1, y1, x2, y2]}``) or as an ``lmms-lab/RefCOCO`` parquet
    (``question`` / ``answer`` captions, ``bbox`` in COCO ``[x, y, w, h]``)."""
    image = row.image(row.require("image", "image_path", "file_name"), "image")
    if row.get("solution") is not None:
        box = row.get("solution")
        if isinstance(box, str):
            try:
                box = json.loads(box)
            except json.JSONDecodeError:
                pass  # reported below with the value
    elif row.get("bbox") is not None:
        x, y, w, h = row.get("bbox")
        box = [x, y, x + w, y + h]
    else:
        raise row.error("solution", "missing box (looked for solution [x1, y1, x2, y2], bbox [x, y, w, h])")
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise row.error("solution", f"expected a box [x1, y1, x2, y2], got {box!r}")
    caption = row.get("normal_caption", "sentence", "caption", "answer")
    question = row.get("problem", default=None)
    if question is None:
        if caption is None:
            raise row.error("problem", "missing (looked for problem, normal_caption, sentence, caption)")
        caption = caption[0] if isinstance(caption, list) else caption
        question = f"Please provide the bounding box coordinate of the region this sentence describes: {caption}."
    return _record(
        row, f"{question}\n{PROMPT_SUFFIX}", [image], [float(v) for v in box], id=row.get("id", "question_id"),
        task="grounding",
    )


def parse_classification(row: _Row) -> Record:
    """Few-shot classification (FGVC-Aircraft, Flower102) as Visual-RFT publishes it: ``image``,
    ``problem`` and ``solution`` (``"<answer>Boeing 707-320</answer>"`` or plain), or ``label``."""
    solution = str(row.require("solution", "label", "answer"))
    solution = solution.replace("<answer>", "").replace("</answer>", "").strip()
    question = row.get("problem", "question", default="What is the category of the object in this image?")
    choices = row.get("choices", "options") or None
    text = _with_options(question, list(choices)) if choices else question
    return _record(
        row, f"{text}\n{PROMPT_SUFFIX}", [row.image(row.require("image", "image_path"), "image")], solution,
        id=row.get("id"), task="choice", choices=list(choices) if choices else None,
    )


def parse_puzzle(row: _Row) -> Record:
    """PuzzleVQA / AlgoPuzzleVQA (``data/<puzzle>.json``, one JSON object a line: ``question``,
    ``options``, ``answer``, ``image``); the category is the puzzle (file name)."""
    options = list(row.require("options"))
    return _record(
        row, f"{_with_options(row.require('question'), options)}\n{PROMPT_SUFFIX}",
        [row.image(row.require("image"), "image")], str(row.require("answer")),
        task="choice", choices=[str(o) for o in options], categories={"puzzle": row.file.stem},
    )


# ---------------------------------------------------------------------------------------------
# Registry and loading
# ---------------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[_Row], Record | None]] = {}


def register_benchmark(name: str, parse: Callable[[_Row], Record | None]) -> None:
    """Add a reader: ``parse(row) -> Record`` (or ``None`` to leave the row out)."""
    BENCHMARKS[name] = parse


for _name, _parse in {
    "geometry3k": parse_geometry3k,
    "mathvista": parse_mathvista,
    "mathverse": lambda row: _parse_mathverse(row, only_choice=True),  # the release's default
    "mathverse_all": lambda row: _parse_mathverse(row, only_choice=False),
    "logicvista": parse_logicvista,
    "refcoco": parse_grounding,
    "lisa_grounding": parse_grounding,
    "fgvc_aircraft": parse_classification,
    "flower102": parse_classification,
    "puzzlevqa": parse_puzzle,
    "algopuzzlevqa": parse_puzzle,
}.items():
    register_benchmark(_name, _parse)


def _check_images(record: Record, file: Path, line: int, accept_size: Callable[[int, int], str | None] | None) -> None:
    for index, image in enumerate(record.images):
        check_image(image, path=file, line=line, field=f"images[{index}]", accept_size=accept_size)


def load_benchmark(
    name: str,
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    skip_invalid: bool = False,
    allow_absolute_paths: bool = False,
    check_images: bool = True,
    split: str | None = None,
    accept_image_size: Callable[[int, int], str | None] | None = None,
) -> LoadedData:
    """Read a local benchmark copy.

    Args:
        name: a key of :data:`BENCHMARKS` (``geometry3k``, ``mathvista``, ``mathverse``, ...).
        path: the data file, or a folder searched for ``.jsonl`` / ``.json`` / ``.parquet`` files.
        image_root: what relative image paths are relative to; default the data file's folder.
        skip_invalid: skip bad records (returned in ``.skipped``) instead of raising.
        allow_absolute_paths: accept absolute image paths in the annotations.
        check_images: decode every image once at load time (catches corrupt files early).
        split: with a folder holding several splits (``train.jsonl``, ``test.jsonl``, ...), the one
            to read; without it such a folder is refused (see :func:`data_files`).
        accept_image_size: ``(width, height) -> None`` if the model's processor takes an image of
            that size, else why not (:func:`pepo.modeling.image_size_check`); such an image is a
            bad record (``file:line: images[0]: ...``), found here rather than mid-run.

    Raises:
        KeyError: unknown benchmark name (the message lists the known ones).
        FileNotFoundError: ``path`` does not exist or holds no data file.
        DataError: a bad record, located by file, line and field (unless ``skip_invalid``); a folder
            of several splits and no ``split``.
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(sorted(BENCHMARKS))}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (pepo reads local copies only; nothing is downloaded)")
    root = Path(image_root) if image_root is not None else (path if path.is_dir() else path.parent)
    parse = BENCHMARKS[name]
    files = data_files(path, split)
    loaded = LoadedData(records=[], files=files)
    seen: set[str] = set()
    for file, line, data in _iter_rows(files):
        try:
            if isinstance(data, DataError):
                raise data
            record = parse(_Row(data, file, line, root, allow_absolute_paths))
            if record is None:
                continue
            if check_images:
                _check_images(record, file, line, accept_image_size)
            if record.id in seen:  # ids key resumable evaluation: keep them unique
                record.id = f"{record.id}@{file.name}:{line}"
            seen.add(record.id)
            loaded.records.append(record)
        except DataError as error:
            if not skip_invalid:
                raise
            loaded.skipped.append(error)
    return loaded


def load_geometry3k(path: str | Path, image_root: str | Path | None = None, **kwargs: Any) -> LoadedData:
    """Geometry3K JSONL (the paper's training and Geometry3K val/test data); see :func:`load_benchmark`."""
    return load_benchmark("geometry3k", path, image_root=image_root, **kwargs)
