"""The recipes ship with pepo: `pepo recipes` lists them, `pepo recipes cp` copies one, `pepo train
--config NAME` runs one by name, from the source checkout and from an installed wheel."""

from __future__ import annotations

import json

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from pepo.cli import main as pepo_main
from pepo.shipped_recipes import find_recipe, recipe_names, recipes_dir
from pepo.trainer.cli import parse

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def test_the_source_checkout_finds_the_repositorys_recipes():
    assert recipes_dir() == RECIPES
    assert {"pepo_g_tiny", "paper/pepo_g_qwen2_5_vl_3b_puzzles", "accelerate/ddp"} <= set(recipe_names())
    assert len(recipe_names()) == len(list(RECIPES.rglob("*.yaml")))
    for name in ("pepo_g_tiny", "pepo_g_tiny.yaml", "recipes/pepo_g_tiny.yaml"):
        assert find_recipe(name) == RECIPES / "pepo_g_tiny.yaml"
    assert find_recipe("paper/grpo_qwen2_5_vl_3b_puzzles") == RECIPES / "paper/grpo_qwen2_5_vl_3b_puzzles.yaml"
    assert find_recipe("no_such_recipe") is None


def test_pyproject_ships_every_package_and_every_recipe_file():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src/pepo").rglob("__init__.py")}
    assert set(config["packages"]) == packages | {"pepo.recipes"}, "update [tool.setuptools] packages"
    assert config["package-dir"]["pepo.recipes"] == "recipes"
    globs = config["package-data"]["pepo.recipes"]
    shipped = {p for g in globs for p in RECIPES.glob(g)}
    unshipped = [str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*") if p.is_file() and p not in shipped]
    assert not unshipped, f"add to [tool.setuptools.package-data]: {unshipped}"


def test_pepo_recipes_lists_every_recipe_by_name(capsys):
    assert pepo_main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}\n" in out for name in recipe_names())
    assert pepo_main(["recipes", "ls"]) == 0 and capsys.readouterr().out == out


def test_pepo_recipes_cp_copies_and_never_overwrites(tmp_path, capsys):
    target = tmp_path / "mine.yaml"
    assert pepo_main(["recipes", "cp", "grpo_tiny", str(target)]) == 0
    assert target.read_bytes() == (RECIPES / "grpo_tiny.yaml").read_bytes()
    assert f"pepo train --config {target}" in capsys.readouterr().out
    target.write_text("edited")
    for argv, words in ((["cp", "grpo_tiny", str(target)], "exists"), (["cp", "nope", str(tmp_path / "x.yaml")], "nope"),
                        (["cp", "grpo_tiny", str(tmp_path / "no/dir/x.yaml")], "not a folder"), (["rm", "x"], "usage")):
        assert pepo_main(["recipes", *argv]) == 2
        captured = capsys.readouterr()
        assert words in captured.err and captured.out == ""
    assert target.read_text() == "edited"
    assert pepo_main(["recipes", "cp", "paper/pepo_g_qwen2_5_vl_3b_puzzles", str(tmp_path)]) == 0  # into a folder
    assert (tmp_path / "pepo_g_qwen2_5_vl_3b_puzzles.yaml").is_file()


def test_train_config_takes_a_shipped_recipes_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the name, not a relative path, finds the file
    script_args, args, model_args = parse(["--config", "grpo_tiny", "--output_dir", "out"])
    assert args.weighting == "none" and model_args.model_name_or_path == "embedded_warm_start"
    _, args, _ = parse(["--config", "paper/pepo_g_qwen2_5_vl_3b_puzzles", "--bf16", "false", "--use_cpu", "true"])
    assert args.weighting == "pepo"


def test_an_unknown_config_name_is_one_line(capsys):
    assert pepo_main(["train", "--config", "pepo_g_tinny"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pepo_g_tinny" in err and "pepo recipes" in err


def _wheel_venv(tmp_path: Path) -> Path:
    """A fresh virtual environment with pepo installed from a wheel built from this checkout; its
    dependencies come from the test's own environment (a .pth line to its site-packages), so nothing is
    downloaded and the checkout's src/ and recipes/ are not on its path."""
    source, wheels, venv = tmp_path / "source", tmp_path / "wheels", tmp_path / "venv"
    for folder in ("src", "recipes"):  # built from a copy: the build writes build/ and an egg-info where it runs
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / file, source / file)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # PYTHONPATH=src would make pepo 'installed'
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)], check=True,
                   cwd=tmp_path, env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env, timeout=120)
    subprocess.run([*pip, "--python", str(venv / "bin/python"), "install", "--no-deps", "--no-index",
                    *map(str, wheels.glob("pepo-*.whl"))], check=True, env=env, timeout=300)
    purelib = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.slow
def test_an_installed_wheel_ships_the_recipes_and_trains_from_one_by_name(tmp_path):
    venv = _wheel_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    work = tmp_path / "work"
    work.mkdir()

    def pepo(*argv):
        return subprocess.run([str(venv / "bin/pepo"), *argv], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)

    where = subprocess.run([str(venv / "bin/python"), "-c", "import pepo.shipped_recipes as r; print(r.recipes_dir())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv) and Path(where).name == "recipes", where
    listing = pepo("recipes")
    assert listing.returncode == 0 and "  pepo_g_tiny\n" in listing.stdout and "paper/pepo_g_qwen2_5_vl_3b_puzzles" in listing.stdout
    assert "pepo_g_tiny" in pepo("train", "--help").stdout
    assert pepo("recipes", "cp", "pepo_g_tiny", "mine.yaml").returncode == 0
    assert (work / "mine.yaml").read_bytes() == (RECIPES / "pepo_g_tiny.yaml").read_bytes()
    trained = pepo("train", "--config", "pepo_g_tiny", "--model_name_or_path", "embedded", "--output_dir", "run",
                   "--max_steps", "1", "--max_train_samples", "4", "--max_completion_length", "4",
                   "--per_device_train_batch_size", "4", "--num_generations", "4", "--eval_after_train", "none",
                   "--activation_checkpointing", "false", "--disable_tqdm", "true")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (work / "run/trainer_state.json").is_file() and (work / "run/model.safetensors").is_file()
    assert json.loads((work / "run/trainer_state.json").read_text())["global_step"] == 1
