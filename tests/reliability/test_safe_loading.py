"""Safe loading: no pickle from files a user did not write, no remote code unless asked, YAML through
a safe loader. (Checkpoint weights in safetensors and weights_only=True on resume:
test_resume.py::test_resume_restores_the_weights_and_loads_no_pickle; YAML python tags:
test_bad_input.py::test_pepo_train_refuses_python_tags_in_yaml; image paths outside the image root:
tests/data/test_geometry3k.py::test_bad_input_names_file_line_and_field[outside_root / absolute_path].)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import pepo.modeling as modeling
import pepo.train  # noqa: F401  (registers train_file: embedded, which the tiny recipe names)
from pepo.trainer.cli import build_trainer, parse

SRC = Path(__file__).resolve().parents[2] / "src" / "pepo"


def test_no_unsafe_deserialisation_in_the_library():
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path}: {match.group(0)}")
        for pattern in (r"^\s*import pickle", r"^\s*from pickle", r"yaml\.load\(", r"yaml\.unsafe_load", r"(?<![.\w])eval\(",
                        r"trust_remote_code\s*=\s*True"):
            offenders += [f"{path}: {pattern}" for _ in re.finditer(pattern, text, re.M)]
    assert offenders == []


def test_trust_remote_code_is_off_unless_the_user_passes_it(tiny_vlm_path, tmp_path, monkeypatch):
    # a checkpoint whose config asks for its own modeling code: loading must refuse, not import it
    evil = tmp_path / "evil"
    shutil.copytree(tiny_vlm_path, evil)
    marker = tmp_path / "imported"
    (evil / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForImageTextToText": "modeling_evil.Evil"}
    config["model_type"] = "evil_vlm"
    (evil / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        modeling.load_model_and_processor(evil)
    assert not marker.exists()

    # pepo train: off by default, on only when the user says so
    seen = []

    class Stop(Exception):
        pass

    def spy(path, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        raise Stop

    monkeypatch.setattr(modeling, "load_model_and_processor", spy)
    monkeypatch.setattr(modeling, "load_processor", spy)  # pepo train reads the processor first (image checks)
    argv = ["--config", str(SRC.parents[1] / "recipes/pepo_g_tiny.yaml"), "--model_name_or_path", str(evil), "--output_dir", str(tmp_path)]
    for extra in ([], ["--trust_remote_code", "true"]):
        with pytest.raises(Stop):
            build_trainer(*parse(argv + extra))
    assert seen == [False, True]
