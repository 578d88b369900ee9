"""Session fixtures every test package uses: the tiny VLM checkpoint and the synthetic data set."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vlm_path(tmp_path_factory) -> Path:
    """A freshly built tiny Qwen2.5-VL checkpoint directory (random weights, seed 0), built once
    per test session (~0.2 s). Load it with ``pepo.modeling.load_model_and_processor(path)``.
    Tests must not write into it (save a copy elsewhere)."""
    from pepo.embedded import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"), seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3_vl_path(tmp_path_factory) -> Path:
    """A tiny Qwen3-VL checkpoint (``build_tiny_vlm(family="qwen3_vl")``, seed 0), built once per session."""
    from pepo.embedded import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen3_vl"), seed=0, family="qwen3_vl")


@pytest.fixture(scope="session")
def tiny_qwen3_5_path(tmp_path_factory) -> Path:
    """A tiny Qwen3.5 checkpoint (``build_tiny_vlm(family="qwen3_5")``, seed 0), built once per session."""
    from pepo.embedded import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen3_5"), seed=0, family="qwen3_5")


@pytest.fixture(scope="session", params=["qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def sharing_vlm_path(request) -> Path:
    """The tiny checkpoint of each family whose speed-ups (image and prompt sharing, the vectorised
    M-RoPE index) pepo runs: the tests of those run once per family."""
    return request.getfixturevalue(TINY_PATHS[request.param])


@pytest.fixture(scope="session", params=["qwen2_5_vl", "qwen3_vl"])
def prompt_sharing_vlm_path(request) -> Path:
    """The tiny checkpoint of each family that shares prompts (``pepo.families``: not Qwen3.5)."""
    return request.getfixturevalue(TINY_PATHS[request.param])


TINY_PATHS = {"qwen2_5_vl": "tiny_vlm_path", "qwen3_vl": "tiny_qwen3_vl_path", "qwen3_5": "tiny_qwen3_5_path"}


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A folder with ``train.jsonl`` (16), ``val.jsonl`` (8), ``test.jsonl`` (8) synthetic records
    in the Geometry3K layout and their PNGs under ``images/``; image paths are relative to it."""
    from pepo.embedded import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(out, n_train=16, n_val=8, n_test=8, seed=0)
    return out
