"""pepo.train's embedded warm-start cache: one build per settings, seed and code; never another's. The end lines
of `pepo train` name where its test split and TensorBoard files are."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import pepo
import pepo.demo
import pepo.train
from pepo.demo import QUICK

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def builds(monkeypatch) -> list:
    """pepo.demo.prepare replaced by a stand-in writing only the checkpoint's config.json."""
    built = []

    def prepare(out: Path, settings, seed: int = 0):
        built.append((settings, seed))
        (out / "warm_start" / "checkpoint").mkdir(parents=True)
        (out / "warm_start" / "checkpoint" / "config.json").write_text("{}")

    monkeypatch.setattr(pepo.demo, "prepare", prepare)
    return built


def test_the_same_settings_seed_and_code_reuse_one_build(tmp_path, builds):
    first = pepo.train.embedded_warm_start(tmp_path, QUICK, seed=0, label="quick")
    assert pepo.train.embedded_warm_start(tmp_path, QUICK, seed=0, label="quick") == first
    assert len(builds) == 1 and (first / "config.json").is_file()
    assert not list(tmp_path.glob("*.partial-*"))


@pytest.mark.parametrize("change", ["settings", "seed", "code"])
def test_other_settings_seed_or_code_build_anew(tmp_path, builds, monkeypatch, change):
    first = pepo.train.embedded_warm_start(tmp_path, QUICK, seed=0, label="quick")
    settings, seed = QUICK, 0
    if change == "settings":
        settings = replace(QUICK, sft_max_steps=QUICK.sft_max_steps + 1)
    elif change == "seed":
        seed = 1
    else:
        monkeypatch.setattr(pepo.train, "code_fingerprint", lambda: "another version of pepo")
    second = pepo.train.embedded_warm_start(tmp_path, settings, seed=seed, label="quick")
    assert second != first and len(builds) == 2


def test_code_fingerprint_follows_every_source_file(tmp_path, monkeypatch):
    copy = tmp_path / "pepo"
    shutil.copytree(Path(pepo.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pepo, "__file__", str(copy / "__init__.py"))
    before = pepo.train.code_fingerprint()
    assert pepo.train.code_fingerprint() == before
    module = copy / "embedded" / "synthetic.py"
    module.write_text(module.read_text() + "\n# a comment changes the code's bytes\n")
    assert pepo.train.code_fingerprint() != before


def _finished(output_dir: Path, callbacks=()) -> SimpleNamespace:
    """What `pepo train`'s end lines read from a trainer that has finished."""
    return SimpleNamespace(args=SimpleNamespace(output_dir=str(output_dir), seed=0),
                           callback_handler=SimpleNamespace(callbacks=list(callbacks)))


def test_the_end_line_names_the_warm_start_s_own_test_split(tmp_path, monkeypatch):
    from pepo.trainer.cli import _end_lines, parse

    def prepare(out: Path, settings, seed: int = 0):  # the warm start's data and checkpoint, in miniature
        (out / "warm_start" / "checkpoint").mkdir(parents=True)
        (out / "warm_start" / "checkpoint" / "config.json").write_text("{}")
        (out / "data").mkdir()
        (out / "data" / "test.jsonl").write_text("{}\n")

    monkeypatch.setattr(pepo.demo, "prepare", prepare)
    cache, out = tmp_path / "cache", tmp_path / "out"
    script_args, training_args, model_args = parse([
        "--config", str(RECIPES / "pepo_g_tiny.yaml"), "--embedded_cache", str(cache), "--output_dir", str(out)])
    checkpoint = pepo.train.embedded_warm_start(cache, pepo.train.warm_start_settings()["demo"], 0, "demo")
    test_split = checkpoint.parents[1] / "data" / "test.jsonl"
    assert test_split.is_file()
    lines = _end_lines(_finished(out), script_args, model_args).splitlines()
    assert lines[-1].startswith(f"  next: pepo eval --model {out.resolve()} --data {test_split}; ")


def test_the_end_line_names_a_test_split_beside_the_embedded_training_data(tmp_path):
    from pepo.data import load_geometry3k
    from pepo.trainer.cli import _end_lines, parse

    out = tmp_path / "out"
    script_args, training_args, model_args = parse([
        "--config", str(RECIPES / "pepo_g_tiny.yaml"), "--model_name_or_path", "embedded", "--output_dir", str(out)])
    lines = _end_lines(_finished(out), script_args, model_args).splitlines()
    test_split = out / "embedded_data" / "test.jsonl"
    assert lines[-1].startswith(f"  next: pepo eval --model {out.resolve()} --data {test_split}; ")
    assert len(load_geometry3k(test_split, image_root=test_split.parent).records) == pepo.demo.DemoSettings().n_test


def test_the_end_lines_name_tensorboard_s_folder(tmp_path):
    from transformers.integrations import TensorBoardCallback

    from pepo.trainer.cli import _end_lines, parse

    out = tmp_path / "out"
    script_args, training_args, model_args = parse([
        "--model_name_or_path", "embedded", "--output_dir", str(out), "--train_file", str(tmp_path)])
    callback = TensorBoardCallback()
    callback.on_train_begin(training_args, SimpleNamespace(is_world_process_zero=True, is_hyper_param_search=False),
                            None)
    callback.on_train_end(training_args, None, None)
    folder = Path(callback.logging_dir).resolve()
    assert any(folder.glob("events.out.tfevents.*"))  # where transformers wrote them
    lines = _end_lines(_finished(out, [callback]), script_args, model_args).splitlines()
    assert lines[1] == f"  TensorBoard event files in {folder} (tensorboard --logdir {folder})"
    assert lines[2].startswith(f"  next: pepo eval --model {out.resolve()} --data <test.jsonl>; ")
