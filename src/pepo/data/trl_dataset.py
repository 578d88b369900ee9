"""Records -> the ``datasets.Dataset`` that TRL's ``GRPOTrainer`` consumes.

Columns: ``prompt`` (conversational, with ``{"type": "image"}`` placeholders that TRL's
``prepare_multimodal_messages`` fills in order), ``images`` (a list of images per row, decoded to
PIL lazily by ``datasets``' ``Image`` feature), ``solution`` (what the rewards grade against), and
``choices`` / ``task`` when present. TRL hands every column but the prompt to the reward functions
as keyword arguments, so ``pepo.rewards`` find ``solution`` (and ``choices``) there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import datasets
from PIL import Image

from pepo.data.records import ImageSource, Record

__all__ = ["to_grpo_dataset"]


def _image_cell(source: ImageSource) -> dict | Image.Image:
    """What ``datasets.Image`` encodes: a path or encoded bytes as such, a PIL image itself (it
    writes it as PNG, or in the image's own format); a PIL image in a ``bytes`` field cannot be encoded."""
    if isinstance(source, str):
        return {"path": source, "bytes": None}
    if isinstance(source, bytes):
        return {"path": None, "bytes": source}
    return source


def to_grpo_dataset(records: Iterable[Record]) -> datasets.Dataset:
    """A TRL-ready dataset of ``records`` (e.g. ``load_geometry3k(path).records``)."""
    records = list(records)
    if not records:
        raise ValueError("no records to build a dataset from")
    columns: dict[str, list] = {
        "id": [r.id for r in records],
        "prompt": [r.prompt for r in records],
        "images": [[_image_cell(source) for source in r.images] for r in records],
        # a grounding box travels as its JSON text: one column type for every task
        "solution": [r.solution if isinstance(r.solution, str) else json.dumps(r.solution) for r in records],
        "task": [r.task for r in records],
    }
    features = {
        "id": datasets.Value("string"),
        "prompt": [{"role": datasets.Value("string"), "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}]}],
        "images": datasets.Sequence(datasets.Image()),
        "solution": datasets.Value("string"),
        "task": datasets.Value("string"),
    }
    if any(r.choices for r in records):
        columns["choices"] = [r.choices or [] for r in records]
        features["choices"] = datasets.Sequence(datasets.Value("string"))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
