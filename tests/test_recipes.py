"""Every recipe under recipes/ loads through `pepo train`'s parser and means what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pepo.trainer.cli import parse

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
# Fields whose TRL defaults surprise (bf16=True, checkpointing on, loss_type="dapo", beta=0): every
# recipe sets them itself so it means the same under any TRL version.
EXPLICIT = ("bf16", "use_cpu", "activation_checkpointing", "loss_type", "beta", "weighting")


def test_there_are_recipes_for_every_method_and_both_targets():
    names = {p.stem for p in RECIPES}
    for method in ("pepo_g", "pepo_d", "grpo", "dapo", "high_entropy", "perception_only", "exploration_only",
                   "papo_g", "papo_d", "vppo"):
        assert {f"{method}_tiny", f"{method}_qwen2_5_vl_3b_geometry3k"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_is_explicit(path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# ") and "pepo train --config" in first and f"recipes/{path.name}" in first
    raw = yaml.safe_load(text)
    missing = [f for f in EXPLICIT if f not in raw]
    assert not missing, f"{path.name}: set {missing} explicitly"

    # TrainingArguments refuses bf16 on a machine without a bf16 device: check it from the YAML there
    cpu_only = raw["bf16"] and not torch.cuda.is_available()
    script_args, args, model_args = parse(["--config", str(path)] + (["--bf16", "false", "--use_cpu", "true"] if cpu_only else []))
    assert model_args.model_name_or_path == raw["model_name_or_path"]
    assert args.loss_type == raw["loss_type"] and args.beta == raw["beta"]
    assert args.bf16 == raw["bf16"] or cpu_only
    assert args.gradient_checkpointing == raw["activation_checkpointing"]

    method = path.stem.split("_tiny")[0].split("_qwen2_5")[0]
    expected_weighting = {"pepo_g": "pepo", "pepo_d": "pepo", "perception_only": "perception",
                          "exploration_only": "exploration"}.get(method, "none")
    assert args.weighting == expected_weighting
    assert args.top_entropy_quantile == (0.2 if method == "high_entropy" else 1.0)
    if args.weighting != "none":
        assert (args.gate_alpha, args.gate_temperature, args.schedule) == (0.05, 1.8, "progressive")
    # PAPO (arXiv 2507.06448) and VPPO (arXiv 2510.09285) with their released settings, on the base recipe
    expected_perception_aware = {"papo_g": "papo", "papo_d": "papo", "vppo": "vppo"}.get(method, "none")
    assert args.perception_aware == expected_perception_aware
    if not path.stem.endswith("_tiny"):
        # a full-size recipe mirrors a released launch script: its values are checked against
        # recipes/paper/released_values.yaml by tests/scale/test_paper_recipes_match_releases.py
        assert "# Mirrors: " in text
        return
    dapo_like = method in ("dapo", "pepo_d", "papo_d", "vppo")
    assert args.dynamic_sampling == dapo_like and args.mask_truncated_completions == dapo_like
    assert args.epsilon == 0.2 and args.epsilon_high == (0.28 if dapo_like else 0.2)
    if args.perception_aware == "papo":
        coefficients = (0.02, 0.05, 0.05) if method == "papo_g" else (0.01, 0.03, 0.03)
        assert (args.papo_gamma, args.papo_eta_ori, args.papo_eta_aug, args.mask_prob) == (*coefficients, 0.6)
    if args.perception_aware == "vppo":
        assert (args.vppo_k, args.vppo_beta_min, args.vppo_entropy_coef, args.mask_prob) == (0.2, 0.8, 0.06, 0.5)


def test_command_line_overrides_the_recipe(tmp_path):
    path = next(p for p in RECIPES if p.stem == "pepo_g_tiny")
    _, args, _ = parse(["--config", str(path), "--gate_alpha", "0.1", "--output_dir", str(tmp_path)])
    assert args.gate_alpha == 0.1 and args.output_dir == str(tmp_path)


def test_unknown_recipe_field_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("weighting: pepo\ngate_alpah: 0.1\noutput_dir: x\nuse_cpu: true\nbf16: false\n")
    with pytest.raises(ValueError, match="gate_alpah"):
        parse(["--config", str(bad)])
