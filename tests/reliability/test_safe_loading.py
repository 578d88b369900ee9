"""Safe loading: no pickle from files a user did not write (a pickle planted in a checkpoint never
runs), no remote code unless asked, YAML through a safe loader. (Checkpoint weights in safetensors and weights_only=True on resume:
test_resume.py::test_resume_restores_the_weights_and_loads_no_pickle; YAML python tags:
test_bad_input.py::test_pepo_train_refuses_python_tags_in_yaml; image paths outside the image root:
tests/data/test_geometry3k.py::test_bad_input_names_file_line_and_field[outside_root / absolute_path].)"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import pepo.modeling as modeling
import pepo.train  # noqa: F401  (registers train_file: embedded, which the tiny recipe names)
from pepo.trainer.cli import build_trainer, parse

SRC = Path(__file__).resolve().parents[2] / "src" / "pepo"


class Planted:
    """Unpickling this creates ``marker``: a pickle that runs code, as a hostile checkpoint file would."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(folder: Path, names: list[str], marker: Path) -> None:
    for name in names:
        torch.save(Planted(marker), folder / name)  # torch's format, as the checkpoint files are


def test_loading_a_checkpoint_runs_no_planted_pickle(tiny_vlm_path, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_vlm_path, checkpoint)
    marker = tmp_path / "pickle_ran"
    plant(checkpoint, ["pytorch_model.bin", "training_args.bin"], marker)
    modeling.load_model_and_processor(checkpoint)  # safetensors: the planted .bin files are never read
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # a safe load refuses the planted file
        torch.load(checkpoint / "training_args.bin", weights_only=True)
    assert not marker.exists()
    torch.load(checkpoint / "training_args.bin", weights_only=False)
    assert marker.exists()  # the planted file does run when unpickled: the checks above can fail


def test_resuming_runs_no_planted_pickle(make_trainer, tmp_path):
    trainer = make_trainer(max_steps=1, save_strategy="steps", save_steps=1, weighting="pepo")
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-1"
    marker = tmp_path / "pickle_ran"
    plant(checkpoint, ["rng_state.pth", "scheduler.pt", "training_args.bin"], marker)
    resumed = make_trainer(max_steps=2, save_strategy="no", weighting="pepo")
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            resumed.train(resume_from_checkpoint=str(checkpoint))
        except Exception as exc:  # noqa: BLE001 (checked below)
            error = exc
    assert not marker.exists(), "resuming ran a pickle planted in the checkpoint"
    assert isinstance(error, pickle.UnpicklingError), error  # refused: torch.load(weights_only=True)


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
