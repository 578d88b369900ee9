"""Datasets from local files: Geometry3K for training, the paper's benchmarks for evaluation.

>>> from pepo.data import load_geometry3k, to_grpo_dataset   # doctest: +SKIP
>>> train = to_grpo_dataset(load_geometry3k("train.jsonl", image_root="/data/geometry3k"))

Readers never download; every bad record is reported with file, line and field (or skipped and
counted with ``skip_invalid=True``). See :data:`BENCHMARKS` for the formats understood.
"""

from pepo.data.prompts import IMAGE_MARKER, PROMPT_SUFFIX, build_prompt, render_prompt
from pepo.data.readers import BENCHMARKS, SPLITS, data_files, load_benchmark, load_geometry3k, register_benchmark
from pepo.data.records import DataError, LoadedData, Record, check_image, open_image, resolve_image_path
from pepo.data.trl_dataset import to_grpo_dataset

__all__ = [
    "BENCHMARKS",
    "SPLITS",
    "IMAGE_MARKER",
    "PROMPT_SUFFIX",
    "DataError",
    "LoadedData",
    "Record",
    "build_prompt",
    "check_image",
    "data_files",
    "load_benchmark",
    "load_geometry3k",
    "open_image",
    "register_benchmark",
    "render_prompt",
    "resolve_image_path",
    "to_grpo_dataset",
]
