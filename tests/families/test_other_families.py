"""The other tiny families of ``build_tiny_vlm`` train one PEPO_G step through ``pepo train``'s own code,
the perception prior computed on their image tokens, with TRL's and transformers' plain computation
where pepo's Qwen speed-ups do not apply, stated by the test rather than assumed: Qwen3.5 gets image
sharing and the vectorised position index (pepo.families; equal to the plain computation:
tests/test_image_sharing.py, tests/test_mrope.py) but not prompt sharing; the others none of them
(registered for PAPO / VPPO's patch layout only: tests/families/test_perception_aware_families.py)."""

from __future__ import annotations

import pytest
import torch

from .test_qwen3_vl import train


# family -> (image sharing, vectorised M-RoPE index, prompt sharing)
SPEED_UPS = {"qwen3_5": (True, True, False), "gemma3": (False, False, False), "idefics3": (False, False, False),
             "smolvlm": (False, False, False), "llava_onevision": (False, False, False)}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SPEED_UPS))
def test_a_tiny_family_trains_a_pepo_g_step_with_the_plain_computation(family, synthetic_data_dir, tmp_path,
                                                                       length_reward_registered):
    from pepo.embedded import build_tiny_vlm
    from pepo.families import family_of
    from pepo.prompt_sharing import sharing_backbone

    path = build_tiny_vlm(tmp_path / family, seed=0, family=family)
    trainer = train(path, synthetic_data_dir, tmp_path / "run", length_reward_registered, "--max_steps", "1")
    model = trainer.model
    image_sharing, rope_index, prompt_sharing = SPEED_UPS[family]
    assert family_of(model) is not None and family_of(model).patch_layout is not None
    assert any(getattr(m, "_pepo_shares_images", False) for m in model.modules()) == image_sharing
    assert any("get_rope_index" in vars(m) for m in model.modules()) == rope_index
    assert (sharing_backbone(model) is not None) == prompt_sharing
    assert (trainer._shared_prompt_model(model, 8) is model) == (not prompt_sharing)
    assert trainer.image_token_id is not None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    [log] = [e for e in trainer.state.log_history if "loss" in e]
    # a non-zero perception prior (a mean cosine) on this family's image tokens, the weights spread around 1
    assert log["pepo/visual_similarity"] != 0 and -1 <= log["pepo/visual_similarity"] <= 1
    assert log["pepo/weight/p0"] < 1 < log["pepo/weight/p100"]
    assert log["grad_norm"] > 0 and any(not torch.equal(before[n], p) for n, p in model.named_parameters())
