"""pepo.versions: the tested ranges, and the guard of every patch of transformers / accelerate / TRL /
argparse (a changed signature falls back with one warning or refuses with one line)."""

from __future__ import annotations

import argparse
import re
import tomllib
import warnings
from pathlib import Path

import pytest
from trl import GRPOTrainer

from pepo import versions
from pepo.versions import (
    PATCHES, TESTED_RANGES, TRL_ATTRIBUTES, TRL_OVERRIDES, UnsupportedUpstreamError, UpstreamChangedWarning,
    argparse_actions, parameters, upstream_checked,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees its own first warning (versions warns once per process and key)."""
    monkeypatch.setattr(versions, "_warned", set())


def upstream_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UpstreamChangedWarning)]


def changed(fn):
    """A stand-in for ``fn`` whose parameters differ (an upstream release renamed one)."""
    def renamed(self, renamed_input, *args, **kwargs):
        return fn(self, renamed_input, *args, **kwargs)
    return renamed


# ---- tested ranges -------------------------------------------------------------------------------

def test_pyproject_states_the_tested_ranges():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    stated = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement.strip())
        stated[match.group(1).lower()] = match.group(2).replace(" ", "")
    assert {name: stated[name] for name in TESTED_RANGES} == TESTED_RANGES
    assert all("<" in spec for spec in TESTED_RANGES.values()), "private APIs are used: each range needs an upper bound"


def test_installed_versions_are_tested():
    assert versions.untested_versions() == {}


def test_one_warning_naming_the_range_outside_it(monkeypatch):
    monkeypatch.setattr(versions, "_installed", lambda name: {"trl": "1.17.0"}.get(name, "5.24.0" if name ==
                        "transformers" else "1.15.0"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        versions.warn_if_untested_versions()
        versions.warn_if_untested_versions()
    found = upstream_warnings(record)
    assert len(found) == 1
    assert "trl 1.17.0 (tested >=1.16,<1.17)" in found[0] and "transformers 5.24" not in found[0]


# ---- the registry and docs/patches.md ------------------------------------------------------------

def test_docs_name_every_patch_and_trl_internal():
    doc = (ROOT / "docs" / "patches.md").read_text()
    missing = [name for name in [*PATCHES, *TRL_OVERRIDES, *TRL_ATTRIBUTES] if f"`{name}`" not in doc]
    assert not missing, f"docs/patches.md does not name: {missing}"


def test_registry_lists_every_trl_method_pepo_overrides():
    from pepo.trainer import PEPOTrainer

    overridden = {name for cls in PEPOTrainer.__mro__ if cls.__module__.startswith("pepo")
                  for name in vars(cls) if not name.startswith("__") and hasattr(GRPOTrainer, name)}
    assert overridden == set(TRL_OVERRIDES)


def test_recorded_signatures_are_the_installed_ones():
    """The tested versions raise no warning: every recorded signature is the installed library's."""
    from accelerate.state import AcceleratorState
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel, Qwen2_5_VLModel

    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5Model, Qwen3_5VisionModel
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel, Qwen3VLVisionModel

    from pepo import modeling
    from pepo.families import qwen2_vl, qwen3_vl
    from pepo.trainer import cpu_sharding

    assert {name: parameters(getattr(GRPOTrainer, name)) for name in TRL_OVERRIDES} == TRL_OVERRIDES
    for family, backbone, tower in ((qwen2_vl.QWEN2_5_VL, Qwen2_5_VLModel, Qwen2_5_VisionTransformerPretrainedModel),
                                    (qwen3_vl.QWEN3_VL, Qwen3VLModel, Qwen3VLVisionModel),
                                    (qwen3_vl.QWEN3_5, Qwen3_5Model, Qwen3_5VisionModel)):
        assert parameters(backbone.get_rope_index) == family.rope_index_parameters
        assert parameters(tower.forward) == family.tower_forward_parameters
    assert parameters(Qwen2VLModel.get_rope_index) == qwen2_vl.QWEN2_VL.rope_index_parameters
    assert parameters(AcceleratorState.__init__) == cpu_sharding.STATE_INIT_PARAMETERS
    for cls, methods in modeling._BYPASSED.items():
        assert {name: parameters(getattr(cls, name)) for name in methods} == methods
    assert {name: parameters(getattr(modeling.Qwen2_5_VLProcessor, name)) for name in modeling._CACHE_METHODS} \
        == modeling._CACHE_METHODS


# ---- simulated upstream changes: fallback with one warning --------------------------------------

def test_changed_get_rope_index_leaves_transformers_own(monkeypatch, tiny_vlm_path):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    from pepo.modeling import load_model_and_processor
    from pepo.mrope import vectorise_rope_index

    model, _ = load_model_and_processor(tiny_vlm_path)
    del model.model.get_rope_index  # the loader shadowed it: start from transformers' own
    monkeypatch.setattr(Qwen2_5_VLModel, "get_rope_index", changed(Qwen2_5_VLModel.get_rope_index))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert vectorise_rope_index(model) is False
        assert vectorise_rope_index(model) is False
    assert "get_rope_index" not in vars(model.model)
    found = upstream_warnings(record)
    assert len(found) == 1 and "mrope.get_rope_index left out" in found[0]


def test_changed_vision_tower_is_not_hooked(monkeypatch, tiny_vlm_path):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as Tower

    from pepo.image_sharing import share_image_encoding
    from pepo.modeling import load_model_and_processor

    model, _ = load_model_and_processor(tiny_vlm_path)
    monkeypatch.setattr(Tower, "forward", changed(Tower.forward))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert share_image_encoding(model) is False
    tower = next(m for m in model.modules() if isinstance(m, Tower))
    assert not tower._forward_pre_hooks and not getattr(tower, "_pepo_shares_images", False)
    assert len(upstream_warnings(record)) == 1


def test_changed_rope_index_turns_prompt_sharing_off(monkeypatch, tiny_vlm_path):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    from pepo.modeling import load_model_and_processor
    from pepo.prompt_sharing import share_prompt_prefill, sharing_backbone

    model, _ = load_model_and_processor(tiny_vlm_path)
    assert sharing_backbone(model) is model.model
    monkeypatch.setattr(Qwen2_5_VLModel, "get_rope_index", changed(Qwen2_5_VLModel.get_rope_index))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert sharing_backbone(model) is None
        assert share_prompt_prefill(model) is False
    assert "generate" not in vars(model)
    found = upstream_warnings(record)
    assert len(found) == 1 and "prompt_sharing left out" in found[0]


def test_vlm_forward_without_pixel_values_gets_no_pre_hook():
    from torch import nn

    from pepo.trainer.mixed_batches import ignore_empty_image_inputs

    class RenamedVLM(nn.Module):  # a release that calls the image input something else
        config = type("Config", (), {"vision_config": object()})()

        def forward(self, input_ids, images=None):
            return input_ids

    model = RenamedVLM()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ignore_empty_image_inputs(model)
    assert not model._forward_pre_hooks
    assert len(upstream_warnings(record)) == 1


def test_changed_processor_method_leaves_the_image_cache_out(monkeypatch):
    from PIL import Image

    from pepo import modeling
    from pepo.embedded.tiny import build_processor, build_tokenizer

    parent = modeling.Qwen2_5_VLProcessor
    processor = build_processor(build_tokenizer(["a red circle"]))
    calls = []
    process_images, token_types = parent._process_images, parent.create_mm_token_type_ids

    def renamed_process_images(self, pictures, **kwargs):  # a release renamed the parameter
        calls.append("_process_images")
        return process_images(self, pictures, **kwargs)

    def own_token_types(self, input_ids):
        calls.append("create_mm_token_type_ids")
        return token_types(self, input_ids)

    monkeypatch.setattr(parent, "_process_images", renamed_process_images)
    monkeypatch.setattr(parent, "create_mm_token_type_ids", own_token_types)
    modeling._cache_methods_match.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out = processor(text=[f"a {processor.image_token} red circle"], images=[Image.new("RGB", (56, 56))])
        assert len(upstream_warnings(record)) == 1
        assert calls == ["_process_images", "create_mm_token_type_ids"]  # transformers' own methods ran
        assert sum(map(int, out["mm_token_type_ids"][0])) == int(out["image_grid_thw"].prod()) // 4  # merge 2 x 2
    finally:
        modeling._cache_methods_match.cache_clear()


# ---- simulated upstream changes: refused with one line ------------------------------------------

def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["_compute_loss", "training_step"])
def test_changed_trl_method_is_refused_before_grpo_trainer_init(monkeypatch, name):
    monkeypatch.setattr(GRPOTrainer, name, changed(getattr(GRPOTrainer, name)))
    trainer = type("Built", (), dict.fromkeys(TRL_ATTRIBUTES))()
    with pytest.raises(UnsupportedUpstreamError) as error:
        with upstream_checked(trainer):
            raise AssertionError("GRPOTrainer.__init__ ran before the check")
    assert f"GRPOTrainer.{name} takes (self, renamed_input, *args, **kwargs)" in one_line(error)
    assert "installed trl" in one_line(error)


def test_missing_trl_attribute_is_refused():
    trainer = type("Built", (), {"_metrics": {}, "_step": 0, "_save": None})()
    with pytest.raises(UnsupportedUpstreamError) as error:
        with upstream_checked(trainer):
            pass
    assert "_tokenizer" in one_line(error)


def test_changed_accelerator_state_is_refused_when_sharding_is_asked(monkeypatch):
    from accelerate.state import AcceleratorState

    from pepo.trainer.cpu_sharding import allow_sharding_on_cpu

    original = AcceleratorState.__init__
    monkeypatch.setattr(AcceleratorState, "__init__", changed(original))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UnsupportedUpstreamError) as error:
        allow_sharding_on_cpu()
    assert "AcceleratorState.__init__" in one_line(error)
    assert AcceleratorState.__init__.__name__ == "renamed"  # not wrapped


def test_changed_processor_init_is_refused(monkeypatch):
    from pepo import modeling
    from pepo.embedded.tiny import build_processor, build_tokenizer

    tokenizer = build_tokenizer(["a red circle"])
    monkeypatch.setattr(modeling.Qwen2_5_VLProcessor, "__init__", changed(modeling.Qwen2_5_VLProcessor.__init__))
    with pytest.raises(UnsupportedUpstreamError) as error:
        build_processor(tokenizer)
    assert "Qwen2_5_VLProcessor.__init__" in one_line(error)


def test_argparse_without_actions_is_refused():
    parser = argparse.ArgumentParser()
    parser.add_argument("--x")
    assert [action.dest for action in argparse_actions(parser)] == ["help", "x"]
    del parser._actions
    with pytest.raises(UnsupportedUpstreamError) as error:
        argparse_actions(parser)
    assert "argparse._actions" in one_line(error)
