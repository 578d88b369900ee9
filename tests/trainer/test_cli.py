"""`pepo train` as a new user meets it: short help, one-line errors that name the recipe file and field,
CPU by default without a GPU, every input checked before a model is loaded, Ctrl-C says how to resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import pepo.train
import pepo.trainer.cli as train_cli
from pepo.cli import main as pepo_main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def run(argv, capsys):
    code = pepo_main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_short_and_names_config_recipes_examples_and_fields(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) < 60 and "--config" in lines[0]
    for recipe in [*RECIPES.glob("*.yaml"), *RECIPES.glob("paper/*.yaml")]:
        assert recipe.relative_to(RECIPES).with_suffix("").as_posix() in out
    assert out.count("pepo train --config ") >= 2  # two examples
    assert "--help-all" in out
    dests = {action.dest for action in train_cli._parser()._actions}
    for name in train_cli.COMMON_FIELDS:
        assert f"--{name} " in out and name in dests  # a listed field that the parser lacks would mislead


def test_help_after_a_recipe_is_the_short_help_too(capsys):
    code, out, _ = run(["--config", str(RECIPES / "grpo_tiny.yaml"), "--help"], capsys)
    assert code == 0 and len(out.splitlines()) < 60 and "--help-all" in out


def test_help_all_lists_every_field(capsys):
    code, out, _ = run(["--help-all"], capsys)
    assert code == 0 and len(out.splitlines()) > 500
    for name in ("--gate_alpha", "--warm_start", "--lora_r", "--adam_beta2", "--dynamic_sampling"):
        assert name in out


def test_no_arguments_is_one_line_naming_config_and_the_recipes(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--config" in err and str(RECIPES) in err


def test_cpu_is_the_default_without_a_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(train_cli, "_has_bf16_device", lambda: False)
    _, args, _ = train_cli.parse(["--output_dir", str(tmp_path)])
    assert args.bf16 is False
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text(f"bf16: true\noutput_dir: {tmp_path}\n")
    with pytest.raises(train_cli.UsageError, match=rf"^{recipe}: bf16=True: needs a GPU .* set bf16: false"):
        train_cli.parse(["--config", str(recipe)])


@pytest.mark.parametrize(("text", "message"), [
    ("max_steps: four\n", "{path}: max_steps: invalid int value: 'four'"),
    ("max_steps: 4.5\n", "{path}: max_steps must be a whole number, got 4.5"),
    ("learning_rate: [1, 2]\n", "{path}: learning_rate must be a number, got [1, 2]"),
    ("learning_rate: fast\n", "{path}: learning_rate: invalid float value: 'fast'"),
    ("bf16: 1\n", "{path}: bf16 must be true or false, got 1"),
    ("freeze_vision_tower: [true]\n", "{path}: freeze_vision_tower must be true or false, got [True]"),
    ("bf16: maybe\n", "{path}: bf16: Truthy value expected: got maybe"),
    ("gate_alpha: -1\n", "{path}: gate_alpha must be >= 0, got -1"),
    ("gate_alpah: 0.1\n", "{path}: unknown field(s) gate_alpah: pepo train --help-all lists every field"),
    ("- a list\n", "{path}: a recipe is a YAML mapping of field: value, got list"),
    ("max_steps: [1\n", "{path}: not valid YAML: while parsing a flow sequence in"),
])
def test_recipe_type_errors_name_the_file_and_field_in_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    code, _, err = run(["--config", str(path), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no argparse usage, no traceback
    assert lines[0].startswith("pepo train: ") and not lines[0].startswith("pepo train: pepo train")
    assert message.format(path=path) in lines[0]


def test_a_command_line_value_is_named_as_an_option(tmp_path, capsys):
    code, _, err = run(["--config", str(RECIPES / "grpo_tiny.yaml"), "--max_steps", "five"], capsys)
    assert code == 2 and err.strip() == "pepo train: --max_steps: invalid int value: 'five'"
    code, _, err = run(["--config", str(RECIPES / "grpo_tiny.yaml"), "--gate_alpah", "1"], capsys)
    assert code == 2 and err.strip() == (
        "pepo train: unknown arguments ['--gate_alpah', '1']: every field is listed by pepo train --help-all")


def test_every_input_is_checked_before_a_model_is_loaded(tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(pepo.train, "_embedded_model", no_model)
    monkeypatch.setattr(pepo.train, "embedded_warm_start", no_model)
    monkeypatch.setattr("pepo.modeling.load_model_and_processor", no_model)
    base = ["--config", str(RECIPES / "pepo_g_tiny.yaml"), "--output_dir", str(tmp_path / "out")]
    own_data = tmp_path / "own.jsonl"
    own_data.write_text("{}\n")
    cases = [
        (["--train_file", str(tmp_path / "missing.jsonl")], f"train_file {tmp_path / 'missing.jsonl'}: no such file"),
        (["--reward_funcs", "acuracy"], "unknown reward 'acuracy'"),
        (["--model_name_or_path", str(tmp_path)], f"model_name_or_path {tmp_path}: no config.json there"),
        (["--warm_start", "full"], "warm_start='full': choose one of ('demo', 'quick')"),
        (["--resume_from_checkpoint", "true"], "no complete checkpoint-N folder"),
        (["--eval_after_train", "tests"], "eval_after_train='tests': choose one of ('none', 'val', 'test')"),
        (["--train_file", str(own_data)], "eval_after_train='test': names a split of the synthetic task"),
    ]
    for extra, message in cases:
        code, _, err = run([*base, *extra], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert err.startswith("pepo train: ") and "pepo train: pepo train" not in err


def test_missing_model_has_one_prefix(tmp_path, capsys):
    code, _, err = run(["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"], capsys)
    assert code == 2 and err.strip().startswith("pepo train: set model_name_or_path") and err.count("pepo train:") == 1


def test_ctrl_c_prints_one_line_naming_the_newest_complete_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    saves = []  # what the interrupted run had saved: (checkpoint-N, its trainer_state.json or None)

    class Interrupted:
        args = SimpleNamespace(output_dir=str(out))
        state = SimpleNamespace(global_step=7, max_steps=20)

        def train(self, resume_from_checkpoint=None):
            for name, state in saves:
                (out / name).mkdir(parents=True)
                if state is not None:
                    (out / name / "trainer_state.json").write_text(state)
            raise KeyboardInterrupt

        def is_world_process_zero(self):
            return True

    monkeypatch.setattr(train_cli, "build_trainer", lambda *args: Interrupted())
    argv = ["--config", str(RECIPES / "grpo_tiny.yaml"), "--output_dir", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "interrupted at step 7/20; no complete checkpoint saved yet" in err

    # checkpoint-6 was being written when Ctrl-C came (no trainer_state.json, which transformers writes last)
    saves[:] = [("checkpoint-5", '{"global_step": 5}'), ("checkpoint-6", None)]
    again = [*argv, "--overwrite_output_dir", "true"]
    code, _, err = run(again, capsys)
    assert code == 130 and len(err.strip().splitlines()) == 1
    assert err.strip().endswith(f"resume from checkpoint-5 with: pepo train {' '.join(argv)} --resume_from_checkpoint true")
