"""pepo.train's embedded warm-start cache: one build per settings, seed and code; never another's."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import pepo
import pepo.demo
import pepo.train
from pepo.demo import QUICK


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
