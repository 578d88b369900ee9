"""Every paper recipe holds the values of the released launch script it names (issue 28).

A recipe's header names the rows of ``recipes/paper/released_values.yaml`` it mirrors
(``# Mirrors: <row> = <repository> <path> @ <commit>``) and every field where it differs
(``# Differs: <field>: <reason>``). For every field of a mirrored row, the recipe's parsed value (after
`pepo train`'s parser fills in TRL's defaults) must equal the row's, unless the field is declared; a
declared field must really differ from one of the rows (a stale declaration fails too). So a recipe
cannot drift from its script unnoticed, and every difference carries its reason where the user reads it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from pepo.trainer.cli import parse

ROOT = Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "recipes" / "paper" / "released_values.yaml"
TABLE = yaml.safe_load(TABLE_PATH.read_text())
# every recipe that claims to be a paper's configuration
RECIPES = sorted((ROOT / "recipes" / "paper").glob("*_*.yaml")) + sorted((ROOT / "recipes").glob("*_qwen2_5_vl_3b_geometry3k*.yaml"))
RECIPES = [p for p in RECIPES if p != TABLE_PATH]
MIRRORS = re.compile(r"^# Mirrors: (\w+) = (\S+) (\S+) @ ([0-9a-f]{12})$")
DIFFERS = re.compile(r"^# Differs: (\w+): (\S.*)$")
LAUNCH = re.compile(r"^# accelerate launch --config_file (recipes/accelerate/\S+\.yaml) ")
# PEPO's weight fields do nothing when the recipe runs without PEPO weights
INERT_WITHOUT_WEIGHTS = ("gate_alpha", "gate_temperature", "perception_measure", "schedule")


def header(path: Path) -> tuple[list[str], dict[str, str]]:
    """``(mirrored row keys, {declared field: reason})`` from the recipe's leading comment block."""
    rows, differs = [], {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if match := MIRRORS.match(line):
            key, repository, script, commit = match.groups()
            row = TABLE.get(key)
            assert row is not None, f"{path.name}: mirrors {key!r}, not a row of {TABLE_PATH.name}"
            assert (repository, script) == (row["repository"], row["path"].split(" ")[0]), f"{path.name}: {key} names another script"
            assert row["commit"].startswith(commit), f"{path.name}: {key} at {commit}, the table has {row['commit']}"
            rows.append(key)
        elif match := DIFFERS.match(line):
            differs[match.group(1)] = match.group(2)
    return rows, differs


def parsed_values(path: Path) -> dict:
    raw = yaml.safe_load(path.read_text())
    cpu_only = raw.get("bf16") and not torch.cuda.is_available()
    extra = ["--bf16", "false", "--use_cpu", "true"] if cpu_only else []
    script_args, args, model_args = parse(["--config", str(path), *extra])
    values = {**vars(model_args), **vars(script_args), **vars(args)}
    if cpu_only:
        values["bf16"] = raw["bf16"]  # overridden above only because this machine has no bf16 device
    return values


def same(recipe_value, released_value) -> bool:
    if isinstance(released_value, list):
        return sorted(recipe_value or []) == sorted(released_value)
    if isinstance(released_value, float) or isinstance(recipe_value, float):
        return recipe_value is not None and float(recipe_value) == float(released_value)
    return recipe_value == released_value


def mismatches(path: Path) -> list[str]:
    """Every way the recipe disagrees with the rows it mirrors, as one line each (empty: it agrees)."""
    rows, differs = header(path)
    values = parsed_values(path)
    problems = [f"{path.name}: declares no `# Mirrors:` row"] if not rows else []
    really_differs = set()
    for key in rows:
        row = TABLE[key]
        for field, released in {**row.get("defaults", {}), **row["values"]}.items():
            if field in INERT_WITHOUT_WEIGHTS and values["weighting"] == "none":
                continue
            assert field in values, f"{TABLE_PATH.name}: {key}.{field} is no field of pepo train"
            if same(values[field], released):
                continue
            really_differs.add(field)
            if field not in differs:
                problems.append(f"{path.name}: {field} = {values[field]!r}, {key} ({row['path']}) has {released!r}; "
                                "match it or declare `# Differs: {field}: <reason>`".replace("{field}", field))
    problems += [f"{path.name}: declares `# Differs: {f}` but matches every mirrored row" for f in differs if f not in really_differs]
    return problems


def launch_problems(path: Path) -> list[str]:
    """The GPUs and ZeRO stage of the accelerate config on the recipe's first line, against the rows."""
    rows, _ = header(path)
    launch = LAUNCH.match(path.read_text().splitlines()[0])
    if launch is None:
        return [f"{path.name}: the first line is not an `accelerate launch --config_file ...` command"]
    config = yaml.safe_load((ROOT / launch.group(1)).read_text())
    stage = (config.get("deepspeed_config") or {}).get("zero_stage")
    problems = []
    for key in rows:
        expected = TABLE[key].get("launch")
        if expected and (config.get("num_processes"), stage) != (expected["num_processes"], expected["zero_stage"]):
            problems.append(f"{path.name}: launches {config.get('num_processes')} processes with ZeRO {stage}, "
                            f"{key} ran {expected['num_processes']} with ZeRO {expected['zero_stage']}")
    return problems


def test_every_row_cites_its_source():
    for key, row in TABLE.items():
        assert {"repository", "path", "commit", "values"} <= row.keys(), key
        assert re.fullmatch(r"[0-9a-f]{40}", row["commit"]), key


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_matches_the_released_script(path):
    problems = mismatches(path) + launch_problems(path)
    assert not problems, "\n".join(problems)


def test_a_drifted_value_is_caught(tmp_path):
    """What the test above guards against: one value changed in a recipe, without a declaration."""
    source = ROOT / "recipes" / "pepo_d_qwen2_5_vl_3b_geometry3k.yaml"
    text = source.read_text()
    drifted = tmp_path / source.name
    drifted.write_text(text.replace("epsilon_high: 0.2\n", "epsilon_high: 0.28\n"))
    assert any("epsilon_high" in p for p in mismatches(drifted))
    # declared, the same value passes; a declaration that matches the script is refused as stale
    declared = tmp_path / "declared.yaml"
    declared.write_text(drifted.read_text().replace("# No field differs.", "# Differs: epsilon_high: a test"))
    assert mismatches(declared) == []
    stale = tmp_path / "stale.yaml"
    stale.write_text(text.replace("# No field differs.", "# Differs: epsilon_high: a test"))
    assert any("matches every mirrored row" in p for p in mismatches(stale))


def test_pepo_d_internvl3_as_released_is_the_dapo_recipe():
    """The released InternVL3-2B PEPO_D script runs with --use_vision_weights false: it is pepo's DAPO recipe,
    which mirrors that script with no difference, while the PEPO_D recipe declares the weights it turns on."""
    dapo_rows, dapo_differs = header(ROOT / "recipes" / "paper" / "dapo_internvl3_2b_geometry3k.yaml")
    pepo_d_rows, pepo_d_differs = header(ROOT / "recipes" / "paper" / "pepo_d_internvl3_2b_geometry3k.yaml")
    assert dapo_rows == pepo_d_rows == ["pepo_d_internvl3_2b_geometry3k"] and dapo_differs == {}
    assert set(pepo_d_differs) == {"weighting"}
