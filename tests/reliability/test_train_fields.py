"""`pepo train` through every numeric field a shipped recipe sets, with 0, -1, NaN, inf and a value of
the wrong type: each is refused in one line naming the recipe file, the field and the value (exit 2,
before any model is built or loaded), or accepted for the reason :data:`ACCEPTED` gives
(docs/reliability.md, "`pepo train` fields")."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pepo.cli import main as pepo_main
from tests.reliability.conftest import Built

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
BASE = RECIPES / "pepo_g_tiny.yaml"


def _numeric_fields() -> list[str]:
    """Every field some recipe (recipes/*.yaml, recipes/paper/*.yaml) sets to an int or a float."""
    names = set()
    for path in [*RECIPES.glob("*.yaml"), *RECIPES.glob("paper/*.yaml")]:
        for name, value in yaml.safe_load(path.read_text()).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                names.add(name)
    return sorted(names)


FIELDS = _numeric_fields()
INT_FIELDS = {name for name in FIELDS if name in {
    "dynamic_sampling_max_rounds", "gradient_accumulation_steps", "max_completion_length", "max_steps",
    "max_train_samples", "num_generations", "per_device_train_batch_size", "seed", "vllm_max_model_length"}}
# (field, value) -> why the value is accepted; every other (field, value) below must be refused
ACCEPTED = {
    ("beta", 0): "no KL term to the reference model (TRL's default)",
    ("max_steps", -1): "num_train_epochs sets the length (transformers' default)",
    ("seed", 0): "a seed like any other",
    ("dynamic_sampling_max_rounds", 0): "no extra generation round: dropped groups are refilled with dropped ones",
    ("gate_alpha", 0): "no entropy gate: the perception prior alone (weighting 'perception')",
    ("top_entropy_quantile", 0): "TRL: keep only the highest-entropy token of each completion",
    ("mask_prob", 0): "PAPO / VPPO with no patch blackened (their terms vanish); the range is [0, 1]",
    ("papo_gamma", 0): "PAPO without the implicit perception loss",
    ("papo_eta_ori", 0): "PAPO without the entropy penalty on the policy",
    ("papo_eta_aug", 0): "PAPO without the masked-image entropy term",
    ("vppo_beta_min", 0): "VPPO may scale a trajectory's advantage down to 0",
    ("vppo_entropy_coef", 0): "VPPO without the entropy penalty",
    ("top_k", 0): "no top-k filtering (transformers' and TRL's 'off')",
    ("weight_decay", 0): "no weight decay (transformers' default)",
    ("adam_beta2", 0): "Adam without a second-moment average: odd but well defined (PyTorch accepts [0, 1))",
}
VALUES = {"0": 0, "-1": -1, "nan": math.nan, "inf": math.inf, "text": "abc"}
CASES = [(name, label) for name in FIELDS for label in VALUES] + [(name, "fraction") for name in sorted(INT_FIELDS)]


def test_the_fields_are_collected_and_every_acceptance_is_used():
    assert {"learning_rate", "num_generations", "gate_alpha", "top_p", "vppo_k", "max_train_samples"} <= set(FIELDS)
    assert INT_FIELDS <= set(FIELDS) and len(FIELDS) >= 25
    assert {(name, value) for name, value in ACCEPTED} <= {(n, VALUES[v]) for n, v in CASES if v in VALUES}


@pytest.mark.parametrize(("name", "label"), CASES)
def test_every_numeric_recipe_field(tmp_path, capsys, train_stops_before_the_model, name, label):
    value = 16.5 if label == "fraction" else VALUES[label]
    recipe = yaml.safe_load(BASE.read_text())
    recipe.update({name: value, "output_dir": str(tmp_path / "out")})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    accepted = (name, value) in ACCEPTED and label in ("0", "-1")
    try:
        code = pepo_main(["train", "--config", str(path)])
    except Built as built:
        assert accepted, f"{name}: {value!r} reached the trainer; refuse it or list it in ACCEPTED with a reason"
        _, training_args, _ = built.args
        if hasattr(training_args, name):
            assert getattr(training_args, name) == value
        return
    err = capsys.readouterr().err
    assert not accepted, f"{name}: {value!r} is listed as accepted but was refused: {err}"
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    shown = {"nan": "nan", "inf": "inf", "text": "'abc'", "fraction": "16.5"}.get(label, str(value))
    assert lines[0].startswith(f"pepo train: {path}: {name}"), lines[0]
    assert f"got {shown}" in lines[0] or f"value: {shown}" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "line"), [
    (["--learning_rate", "-1"], "pepo train: --learning_rate must be > 0, got -1.0"),
    (["--top-p", "2"], "pepo train: --top_p must be in (0, 1], got 2.0"),
    (["--gate_alpha", "inf"], "pepo train: --gate_alpha must be a finite number, got inf"),
    (["--gate_temperature=nan"], "pepo train: --gate_temperature must be a finite number, got nan"),
    (["--max_completion_length", "16.5"], "pepo train: --max_completion_length: invalid int value: '16.5'"),
    (["--max_completion_length", "0"], "pepo train: --max_completion_length must be >= 1, got 0 (0 is no work at all)"),
    (["--max_train_samples", "0"], "pepo train: --max_train_samples must be >= 1, got 0 (0 used to mean every record, "
                                   "a negative count dropped records; leave it out for every record)"),
    (["--max_steps", "0"], "pepo train: --max_steps must be -1 (num_train_epochs decides) or >= 1, got 0"),
    (["--num_generations", "1"], "pepo train: --num_generations must be >= 2, got 1 (GRPO compares the completions of "
                                 "a prompt: one has no advantage)"),
])
def test_command_line_values_are_named_as_options(tmp_path, capsys, train_stops_before_the_model, extra, line):
    code = pepo_main(["train", "--config", str(BASE), "--output_dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == line


@pytest.mark.parametrize(("text", "line"), [
    ("seed:\n", "{path}: seed is empty; give it a value or leave the field out for its default"),
    ("reward_funcs: accuracy\n", "{path}: reward_funcs must be a list, e.g. reward_funcs: [accuracy], got 'accuracy'"),
    ("reward_weights: [1.0, .nan]\n", "{path}: reward_weights items must be a finite number, got nan"),
    ("output_dir: {file}\n", "{path}: output_dir {file}: is a file; give a folder"),
])
def test_empty_values_lists_and_an_output_dir_that_is_a_file(tmp_path, capsys, train_stops_before_the_model, text,
                                                              line):
    file = tmp_path / "file"
    file.write_text("x")
    recipe = {k: v for k, v in yaml.safe_load(BASE.read_text()).items() if k not in ("seed", "reward_funcs")}
    path = tmp_path / "recipe.yaml"
    given = yaml.safe_load(text.format(file=file))
    path.write_text(yaml.safe_dump({**recipe, "output_dir": str(tmp_path / "out"), **given}))
    code = pepo_main(["train", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "pepo train: " + line.format(path=path, file=file)


def test_report_to_names_a_backend_that_is_installed(tmp_path, capsys, train_stops_before_the_model, monkeypatch):
    from transformers.integrations import integration_utils

    base = ["train", "--config", str(BASE), "--output_dir", str(tmp_path / "out")]
    assert pepo_main([*base, "--report_to", "tensorbord"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        "pepo train: report_to tensorbord: not a metric backend; choose from none, ")
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: [])
    assert pepo_main([*base, "--report_to", "tensorboard"]) == 2
    assert capsys.readouterr().err.strip() == (
        "pepo train: report_to tensorboard: tensorboard is not installed (pip install tensorboard), or report_to: none")


def test_fewer_records_than_one_generation_batch_are_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """TRL's sampler drops an incomplete batch of prompts: 4 records under the recipe's 8 prompts x 8 samples
    trained 0 steps and exited 0."""
    import pepo.modeling

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the record count was checked")

    monkeypatch.setattr(pepo.modeling, "load_model_and_processor", refuse)
    recipe = yaml.safe_load(BASE.read_text())
    prompts = recipe["per_device_train_batch_size"] // recipe["num_generations"]
    assert prompts > 4, "the recipe's generation batch must take more than 4 prompts for this test"
    argv = ["train", "--config", str(BASE), "--model_name_or_path", "embedded", "--output_dir", str(tmp_path / "out"),
            "--max_train_samples", "4", "--eval_after_train", "none"]
    assert pepo_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4 training record(s)" in err and f"takes {prompts} prompts" in err
