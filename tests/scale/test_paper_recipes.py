"""The paper's recipes (recipes/paper/ and the Qwen2.5-VL-3B Geometry3K ones in recipes/) and the
accelerate configs (recipes/accelerate/) validate without a GPU and without weights:

* every recipe parses through `pepo train`'s own parser (TRL's ``TrlParser`` into ``PEPOConfig``)
  and says what docs/method.md (Training setup) says for its method and task;
* the model family it names resolves to a transformers model class, built on the meta device from
  the family's config (the published parameter count comes out), and to the image token docs/method.md (Notation)
  names for it (``<|image_pad|>`` for Qwen2.5-VL, ``<IMG_CONTEXT>`` for InternVL3);
* every accelerate config loads with accelerate's own loader, and every DeepSpeed / FSDP key in it
  is an option accelerate's launcher knows (it would otherwise be dropped silently).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
import yaml

from pepo.rewards import REWARD_FUNCTIONS
from pepo.trainer.cli import parse
from pepo.image_tokens import resolve_image_token_id

from .families import PAPER_FAMILIES, FamilyVocabulary, family_of

ROOT = Path(__file__).resolve().parents[2]
# recipes/paper/released_values.yaml is the table of the released scripts' values, not a recipe
PAPER = sorted(p for p in (ROOT / "recipes" / "paper").glob("*.yaml") if p.name != "released_values.yaml")
# The paper's Qwen2.5-VL-3B Geometry3K rows live in recipes/ (trainer issue); recipes/paper/ does not repeat them.
QWEN_GEOMETRY = [ROOT / "recipes" / f"{m}_qwen2_5_vl_3b_geometry3k.yaml" for m in ("grpo", "pepo_g", "dapo", "pepo_d")]
ACCELERATE = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))

METHODS = ("pepo_g", "pepo_d", "grpo", "dapo", "high_entropy")
# docs/method.md, "Training setup": max completion 1024 for geometry and scaling, 512 for grounding, few-shot,
# puzzles; beta 0.001 for tasks 1-4, 0.01 for the scaling run.
TASK_MAX_LENGTH = {"geometry3k": 1024, "virl39k": 1024, "grounding_refcoco": 512, "fewshot_fgvc_aircraft": 512,
                   "fewshot_flower102": 512, "puzzles": 512}
TASK_BETA = {"virl39k": 0.01}
TASK_REWARD = {"grounding_refcoco": "grounding_iou", "fewshot_fgvc_aircraft": "choice", "fewshot_flower102": "choice",
               "puzzles": "choice"}
TASK_TRAIN_FORMAT = {"grounding_refcoco": "refcoco", "fewshot_fgvc_aircraft": "fgvc_aircraft",
                     "fewshot_flower102": "flower102", "puzzles": "puzzlevqa"}
LAUNCH = re.compile(r"^# accelerate launch --config_file (recipes/accelerate/\S+\.yaml) -m pepo train --config (\S+\.yaml)$")


def split_name(path: Path) -> tuple[str, str]:
    """``pepo_g_internvl3_2b_geometry3k`` -> (``pepo_g``, ``geometry3k``)."""
    method = next(m for m in METHODS if path.stem.startswith(m + "_"))
    task = next(t for t in TASK_MAX_LENGTH if path.stem.endswith("_" + t))
    return method, task


def parse_recipe(path: Path):
    raw = yaml.safe_load(path.read_text())
    # TrainingArguments refuses bf16 on a machine without a bf16 device: check that field from the YAML there.
    cpu_only = raw.get("bf16") and not torch.cuda.is_available()
    extra = ["--bf16", "false", "--use_cpu", "true"] if cpu_only else []
    return raw, parse(["--config", str(path), *extra])


@functools.cache
def meta_model(family: str):
    """The family's model class and parameter count, built on the meta device (no memory, no weights)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    fields = dict(PAPER_FAMILIES[family].config)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    model_class = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)]
    with torch.device("meta"):
        model = model_class(config)
    return config, model_class, sum(p.numel() for p in model.parameters())


def test_the_paper_rows_are_all_there():
    names = {p.stem for p in PAPER}
    expected = {f"{m}_internvl3_2b_geometry3k" for m in ("grpo", "pepo_g", "dapo", "pepo_d")}
    expected |= {f"{m}_qwen2_5_vl_3b_puzzles" for m in ("grpo", "pepo_g", "dapo", "pepo_d")}
    expected |= {f"{m}_qwen2_5_vl_3b_{t}" for m in ("grpo", "pepo_g")
                 for t in ("grounding_refcoco", "fewshot_fgvc_aircraft", "fewshot_flower102", "virl39k")}
    assert expected <= names, sorted(expected - names)
    assert all(p.is_file() for p in QWEN_GEOMETRY)
    assert not any("qwen2_5_vl_3b_geometry3k" in n for n in names), "Qwen2.5-VL-3B Geometry3K lives in recipes/"
    index = (ROOT / "recipes" / "paper" / "README.md").read_text()
    for path in PAPER + QWEN_GEOMETRY:
        assert str(path.relative_to(ROOT)) in index, f"recipes/paper/README.md does not list {path.name}"


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_recipe_means_what_the_spec_says(path):
    text = path.read_text()
    launch = LAUNCH.match(text.splitlines()[0])
    assert launch, f"{path.name}: the first line must be its `accelerate launch ... -m pepo train --config` command"
    assert (ROOT / launch.group(1)).is_file() and launch.group(2) == str(path.relative_to(ROOT))
    assert "# Expected hardware:" in text

    raw, (script_args, args, model_args) = parse_recipe(path)
    method, task = split_name(path)
    dapo_like = method in ("dapo", "pepo_d")
    assert args.learning_rate == 1e-6 and args.num_train_epochs == 1 and args.gradient_checkpointing
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.num_generations) == (2, 4, 8)
    assert (args.temperature, args.top_p) == (1.0, 1.0)
    assert args.max_completion_length == TASK_MAX_LENGTH[task]
    assert args.beta == TASK_BETA.get(task, 0.001)
    assert raw["bf16"] is True and raw["use_cpu"] is False and model_args.dtype == "bfloat16"
    assert args.bf16 or not torch.cuda.is_available()  # overridden on CPU by parse_recipe
    assert args.loss_type == ("bnpo" if dapo_like else "grpo")
    # the release never sets epsilon_high: ms-swift's symmetric 0.2 (recipes/paper/released_values.yaml)
    assert (args.epsilon, args.epsilon_high) == (0.2, 0.2)
    assert args.dynamic_sampling == dapo_like and args.mask_truncated_completions == dapo_like
    assert args.weighting == ("pepo" if method.startswith("pepo") else "none")
    assert args.top_entropy_quantile == (0.2 if method == "high_entropy" else 1.0)
    if args.weighting == "pepo":
        assert (args.gate_alpha, args.gate_temperature, args.schedule, args.perception_measure) == (
            0.05, 1.8, "progressive", "cosine")
    # vLLM rollouts are TRL's own GRPOConfig fields, passed through PEPOConfig unchanged
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.6
    assert set(script_args.reward_funcs) <= set(REWARD_FUNCTIONS) and "format" in script_args.reward_funcs
    assert TASK_REWARD.get(task, "accuracy") in script_args.reward_funcs
    # the training data's reader is the task's own published format (pepo.data.BENCHMARKS)
    assert script_args.train_format == TASK_TRAIN_FORMAT.get(task, "geometry3k")


@pytest.mark.parametrize("path", PAPER + QWEN_GEOMETRY, ids=lambda p: p.stem)
def test_model_class_and_image_token_resolve_without_weights(path):
    _, (_, args, model_args) = parse_recipe(path)
    family = family_of(model_args.model_name_or_path)
    _, class_name, placeholder, token_ids, (low, high) = PAPER_FAMILIES[family]
    config, model_class, n_params = meta_model(family)
    assert model_class.__name__ == class_name
    assert low < n_params / 1e9 < high, f"{family}: {n_params / 1e9:.3f} B parameters, published {low}-{high} B"
    # the token PEPO will treat as image positions: from the config by default, or the recipe's image_token
    vocabulary = FamilyVocabulary(token_ids)
    resolved = resolve_image_token_id(config, vocabulary, override=args.image_token)
    assert resolved == resolve_image_token_id(config, vocabulary) == token_ids[placeholder]
    if args.image_token is not None:
        assert args.image_token == placeholder


def test_a_wrong_image_token_for_the_family_is_caught():
    """What the test above guards against: an InternVL3 recipe carrying Qwen's placeholder."""
    config, _, _ = meta_model("InternVL3-2B")
    with pytest.raises(ValueError, match="not a token"):
        resolve_image_token_id(config, FamilyVocabulary(PAPER_FAMILIES["InternVL3-2B"].token_ids), override="<|image_pad|>")


# ---- accelerate configs ------------------------------------------------------------------------------

EXPECTED_ACCELERATE = {
    "ddp": ("MULTI_GPU", {}),
    "deepspeed_zero2": ("DEEPSPEED", {"zero_stage": 2}),
    "deepspeed_zero3": ("DEEPSPEED", {"zero_stage": 3, "zero3_init_flag": True, "zero3_save_16bit_model": True}),
    "fsdp": ("FSDP", {"fsdp_version": 2, "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_activation_checkpointing": False}),
    # accelerate's MULTI_CPU launcher needs mpirun; MULTI_GPU is torchrun, which falls back to gloo on CPU
    "cpu_2proc_gloo": ("MULTI_GPU", {}),
    # run by tests/scale/test_sharded.py (pepo.trainer.cpu_sharding keeps accelerate from falling back to DDP)
    "fsdp2_cpu_2proc": ("FSDP", {"fsdp_version": 2, "fsdp_state_dict_type": "SHARDED_STATE_DICT"}),
    "deepspeed_zero2_cpu_2proc": ("DEEPSPEED", {"zero_stage": 2}),
    "fsdp2_2nodes": ("FSDP", {"fsdp_version": 2, "fsdp_state_dict_type": "SHARDED_STATE_DICT"}),
}
# the launch command may carry launcher flags (a multi-node config names machine rank and address)
ACCELERATE_LAUNCH = re.compile(
    r"^# accelerate launch --config_file (recipes/accelerate/\S+\.yaml)((?: --\w+ \S+)*) -m pepo train --config (\S+\.yaml)$")


def launcher_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.stem)
def test_accelerate_config_loads_and_every_key_is_known(path):
    from accelerate.commands.config.config_args import load_config_from_file

    first = path.read_text().splitlines()[0]
    launch = ACCELERATE_LAUNCH.match(first)
    assert launch and launch.group(1) == str(path.relative_to(ROOT)), f"{path.name}: first line {first!r}"
    assert (ROOT / launch.group(3)).is_file()
    flags = launch.group(2).split()[::2]
    assert not [f for f in flags if f[2:] not in launcher_options()], f"{path.name}: unknown launcher flag in {flags}"

    config = load_config_from_file(str(path))  # a dataclass: an unknown top-level key is a TypeError
    distributed_type, expected = EXPECTED_ACCELERATE[path.stem]
    assert config.distributed_type.name == distributed_type
    options = launcher_options()
    plugin = {**config.deepspeed_config, **config.fsdp_config}
    unknown = [k for k in plugin if k not in options]
    assert not unknown, f"{path.name}: accelerate launch has no option {unknown}"
    assert expected.items() <= plugin.items()
    if path.stem.endswith("cpu_2proc") or path.stem == "cpu_2proc_gloo":
        assert config.num_processes == 2 and config.mixed_precision == "no" and not config.use_cpu
    elif path.stem == "fsdp2_2nodes":
        assert (config.num_machines, config.num_processes, config.mixed_precision) == (2, 16, "bf16")
        assert {"--machine_rank", "--main_process_ip", "--main_process_port"} <= set(flags)
    else:
        assert config.num_processes == 8 and config.mixed_precision == "bf16" and not config.use_cpu
