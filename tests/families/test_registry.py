"""pepo.families: a model's family found by its config's model_type; an unregistered family gets the
plain computation; docs/families.md's worked example registers a family whose speed-ups then equal
transformers' own computation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pepo.families import FAMILIES, Family, family_of, register_family
from pepo.image_sharing import share_image_encoding
from pepo.mrope import rope_index, vectorise_rope_index
from pepo.prompt_sharing import sharing_backbone

DOC = Path(__file__).resolve().parents[2] / "docs" / "families.md"


def test_each_tiny_family_is_found_by_its_model_type(sharing_vlm_path):
    from pepo.modeling import load_model_and_processor

    model, _ = load_model_and_processor(sharing_vlm_path)
    assert family_of(model) is FAMILIES[model.config.model_type]
    assert family_of(torch.nn.Sequential(model)) is family_of(model)  # found inside a wrapper too
    assert family_of(torch.nn.Linear(2, 2)) is None


def test_a_model_type_is_registered_to_one_family():
    taken = Family(name="other", model_types=("qwen3_vl",), backbone=lambda: torch.nn.Module,
                   rope_index_parameters=())
    with pytest.raises(ValueError, match="already registered to 'Qwen3-VL'"):
        register_family(taken)
    assert FAMILIES["qwen3_vl"].name == "Qwen3-VL"


def tiny_qwen3_vl_moe():
    from transformers.models.qwen3_vl_moe import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen3VLMoeConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_experts=2,
                         num_experts_per_tok=1, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                       "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           num_position_embeddings=16, deepstack_visual_indexes=[0]),
        image_token_id=7, video_token_id=8, vision_start_token_id=5, vision_end_token_id=6,
    )
    return Qwen3VLMoeForConditionalGeneration(config).eval()


@pytest.fixture
def doc_example():
    """Runs the worked example of docs/families.md; unregisters its family afterwards."""
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace: dict = {}
    yield lambda: exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 (our own documentation)
    FAMILIES.pop("qwen3_vl_moe", None)


def test_the_docs_worked_example_turns_the_speed_ups_on_for_its_family(doc_example):
    plain = tiny_qwen3_vl_moe()
    model = tiny_qwen3_vl_moe()
    # not registered: transformers' own tower, position index and forward
    assert family_of(model) is None
    assert not share_image_encoding(model) and not vectorise_rope_index(model) and sharing_backbone(model) is None
    doc_example()
    assert family_of(model).name == "Qwen3-VL-MoE"
    assert share_image_encoding(model) and vectorise_rope_index(model)
    assert sharing_backbone(model) is None  # prompt sharing stays off until tested for the family
    # the same tower output (with the DeepStack features) when copies of an image are encoded once
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(16, 3 * 2 * 16 * 16, generator=generator) for _ in range(2)]
    pixel_values, grid = torch.cat([images[0], images[1], images[0]]), torch.tensor([[1, 4, 4]] * 3)
    with torch.no_grad():
        expected, got = plain.model.visual(pixel_values, grid_thw=grid), model.model.visual(pixel_values, grid_thw=grid)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output)
    for got_layer, expected_layer in zip(got.deepstack_features, expected.deepstack_features, strict=True):
        torch.testing.assert_close(got_layer, expected_layer)
    # the same positions as transformers' index
    input_ids = torch.tensor([[1, 5, 7, 7, 7, 7, 6, 2, 3], [0, 0, 5, 7, 7, 7, 7, 6, 2]])
    types = (input_ids == 7).int()
    mask = (input_ids != 0).long()
    assert model.model.get_rope_index.func is rope_index
    expected = type(plain.model).get_rope_index(plain.model, input_ids, types, image_grid_thw=grid[:2],
                                                attention_mask=mask)
    got = model.model.get_rope_index(input_ids, types, image_grid_thw=grid[:2], attention_mask=mask)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
