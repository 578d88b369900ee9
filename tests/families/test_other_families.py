"""The other tiny families of ``build_tiny_vlm`` train one PEPO_G step through ``pepo train``'s own code,
the perception prior computed on their image tokens, with TRL's and transformers' plain computation
where pepo's Qwen speed-ups do not apply (no family registered in pepo.families: no image sharing, no
prompt sharing, transformers' own position index), stated by the test rather than assumed."""

from __future__ import annotations

import pytest
import torch

from .test_qwen3_vl import train


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3_5", "gemma3", "idefics3", "smolvlm", "llava_onevision"])
def test_a_tiny_family_trains_a_pepo_g_step_with_the_plain_computation(family, synthetic_data_dir, tmp_path,
                                                                       length_reward_registered):
    from pepo.embedded import build_tiny_vlm
    from pepo.families import family_of
    from pepo.prompt_sharing import sharing_backbone

    path = build_tiny_vlm(tmp_path / family, seed=0, family=family)
    trainer = train(path, synthetic_data_dir, tmp_path / "run", length_reward_registered, "--max_steps", "1")
    model = trainer.model
    # no family registered: every speed-up off, explicitly
    assert family_of(model) is None and sharing_backbone(model) is None
    assert trainer._shared_prompt_model(model, 8) is model
    assert not any(getattr(m, "_pepo_shares_images", False) for m in model.modules())
    assert not any("get_rope_index" in vars(m) for m in model.modules())
    assert trainer.image_token_id is not None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    [log] = [e for e in trainer.state.log_history if "loss" in e]
    # a non-zero perception prior (a mean cosine) on this family's image tokens, the weights spread around 1
    assert log["pepo/visual_similarity"] != 0 and -1 <= log["pepo/visual_similarity"] <= 1
    assert log["pepo/weight/p0"] < 1 < log["pepo/weight/p100"]
    assert log["grad_norm"] > 0 and any(not torch.equal(before[n], p) for n, p in model.named_parameters())
