"""freeze_vision finds each tiny family's vision tower and projector where its pepo.families entry says:
the frozen parameters are exactly the tower's (a projector inside it excepted) and / or the projector's."""

from __future__ import annotations

import pytest

from pepo.embedded import TINY_FAMILIES

# family -> (the tower's parameter prefix, the projectors' prefixes), read off the transformers 5.24 models
VISION_PARTS = {
    "qwen2_5_vl": ("model.visual.", ("model.visual.merger.",)),
    # DeepStack's mergers project tower features into the language model, as merger does
    "qwen3_vl": ("model.visual.", ("model.visual.merger.", "model.visual.deepstack_merger_list.")),
    "qwen3_5": ("model.visual.", ("model.visual.merger.",)),
    "internvl": ("model.vision_tower.", ("model.multi_modal_projector.",)),
    "gemma3": ("model.vision_tower.", ("model.multi_modal_projector.",)),
    "idefics3": ("model.vision_model.", ("model.connector.",)),
    "smolvlm": ("model.vision_model.", ("model.connector.",)),
    "llava_onevision": ("model.vision_tower.", ("model.multi_modal_projector.",)),
}


def test_every_tiny_family_is_covered():
    assert sorted(VISION_PARTS) == sorted(TINY_FAMILIES)


@pytest.mark.parametrize("family", sorted(VISION_PARTS))
def test_freeze_vision_freezes_exactly_the_tower_and_the_projector(family, tmp_path):
    from pepo.embedded import build_tiny_vlm
    from pepo.families import family_of
    from pepo.modeling import freeze_vision, load_model_and_processor

    model, _ = load_model_and_processor(build_tiny_vlm(tmp_path, seed=0, family=family))
    assert family_of(model).vision_tower is not None  # found through the registry, not the fallback names
    tower, projectors = VISION_PARTS[family]
    names = {name for name, _ in model.named_parameters()}
    in_projector = {name for name in names if name.startswith(projectors)}
    in_tower = {name for name in names if name.startswith(tower)} - in_projector
    assert in_tower and in_projector
    for freeze_tower, freeze_projector, expected in [(True, False, in_tower), (False, True, in_projector),
                                                     (True, True, in_tower | in_projector)]:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        count = freeze_vision(model, freeze_tower, freeze_projector)
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        assert frozen == expected, (freeze_tower, freeze_projector, sorted(frozen ^ expected)[:5])
        assert count == sum(p.numel() for name, p in model.named_parameters() if name in expected)
