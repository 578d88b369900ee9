"""One run per `output_dir` (docs/reliability.md, "Faults and resume"): a folder holding another run's
model or checkpoints is refused in one line unless the run resumes it (`--resume_from_checkpoint`) or
starts over (`--overwrite_output_dir true`, which removes the old run first); the model is never
loaded before the refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from pepo.cli import main as pepo_main
from tests.reliability.conftest import Built

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pepo_g_tiny.yaml"


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """The output_dir of a finished 4-step run (what transformers leaves), plus pepo's embedded data."""
    out = tmp_path / "out"
    for step in (2, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    for name in ("model.safetensors", "config.json", "trainer_state.json"):
        (out / name).write_text("x")
    (out / "runs" / "Dec04_host").mkdir(parents=True)
    (out / "embedded_data").mkdir()
    (out / "embedded_data" / "train.jsonl").write_text("{}\n")
    return out


def _train(capsys, out: Path, *extra: str):
    """``(exit code or the Built sentinel, stderr)`` of ``pepo train`` on the tiny recipe into ``out``."""
    try:
        code = pepo_main(["train", "--config", str(RECIPE), "--output_dir", str(out), "--max_steps", "8", *extra])
    except Built as built:
        code = built
    return code, capsys.readouterr().err


def test_a_folder_holding_another_run_is_refused_and_left_alone(finished_run, capsys, train_stops_before_the_model):
    before = sorted(p.relative_to(finished_run) for p in finished_run.rglob("*"))
    code, err = _train(capsys, finished_run)
    assert code == 2 and err.strip() == (
        f"pepo train: output_dir {finished_run} holds another run (checkpoint-2, checkpoint-4, trainer_state.json, "
        "model.safetensors, ...); continue it with --resume_from_checkpoint true, start over with "
        "--overwrite_output_dir true (removes them), or choose another output_dir")
    assert sorted(p.relative_to(finished_run) for p in finished_run.rglob("*")) == before


def test_overwrite_removes_the_old_run_first(finished_run, capsys, train_stops_before_the_model):
    code, err = _train(capsys, finished_run, "--overwrite_output_dir", "true")
    assert isinstance(code, Built), err
    left = sorted(p.name for p in finished_run.iterdir())
    assert left == ["config.json", "embedded_data"]  # config.json is rewritten by the new run's save
    assert (finished_run / "embedded_data" / "train.jsonl").is_file()


def test_resume_continues_the_run_in_the_folder(finished_run, capsys, train_stops_before_the_model):
    code, err = _train(capsys, finished_run, "--resume_from_checkpoint", "true")
    assert isinstance(code, Built), err
    assert (finished_run / "checkpoint-4").is_dir() and (finished_run / "model.safetensors").is_file()


def test_resume_and_overwrite_together_are_refused(finished_run, capsys, train_stops_before_the_model):
    code, err = _train(capsys, finished_run, "--resume_from_checkpoint", "true", "--overwrite_output_dir", "true")
    assert code == 2 and err.strip() == (
        "pepo train: --resume_from_checkpoint continues the run in output_dir and --overwrite_output_dir removes it: "
        "choose one")
    assert (finished_run / "checkpoint-4").is_dir()


@pytest.mark.parametrize("contents", ["nothing", "embedded_only"])
def test_an_empty_folder_or_one_with_only_the_embedded_data_is_used(tmp_path, capsys, train_stops_before_the_model,
                                                                   contents):
    out = tmp_path / "out"
    if contents == "embedded_only":
        (out / "embedded_data").mkdir(parents=True)
        (out / "embedded_model").mkdir()
    code, err = _train(capsys, out)
    assert isinstance(code, Built), err


def test_the_resume_command_drops_the_run_s_own_choice():
    from pepo.trainer.cli import _resume_command

    argv = ["--config", "r.yaml", "--overwrite_output_dir", "true", "--max_steps", "9"]
    assert _resume_command(argv, overwrite=True) == "--config r.yaml --max_steps 9 --resume_from_checkpoint true"
    argv = ["--config", "r.yaml", "--resume_from_checkpoint=runs/x/checkpoint-2"]
    assert _resume_command(argv, overwrite=False) == "--config r.yaml --resume_from_checkpoint true"
    # the recipe itself says overwrite_output_dir: true, so the command line must turn it off to resume
    assert _resume_command(["--config", "r.yaml"], overwrite=True) == (
        "--config r.yaml --resume_from_checkpoint true --overwrite_output_dir false")
