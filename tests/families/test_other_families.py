"""The other tiny families of ``build_tiny_vlm`` train one PEPO_G step through ``pepo train``'s own code,
the perception prior computed on their image tokens, with TRL's and transformers' plain computation
where pepo's Qwen speed-ups do not apply, stated by the test rather than assumed: Qwen3.5 gets image
sharing and the vectorised position index (pepo.families; equal to the plain computation:
tests/test_image_sharing.py, tests/test_mrope.py) but not prompt sharing; the others none of them
(registered for PAPO / VPPO's patch layout only: tests/families/test_perception_aware_families.py).
A saved tiny checkpoint of each goes through ``pepo eval`` and ``pepo analyze``."""

from __future__ import annotations

import pytest
import torch

from tests.cli_runs import analyse_and_check, evaluate_and_check

from .test_qwen3_vl import train


# family -> (image sharing, vectorised M-RoPE index, prompt sharing)
SPEED_UPS = {"qwen3_5": (True, True, False), "gemma3": (False, False, False), "idefics3": (False, False, False),
             "smolvlm": (False, False, False), "llava_onevision": (False, False, False)}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SPEED_UPS))
def test_a_tiny_family_trains_two_pepo_g_steps_with_the_plain_computation(family, synthetic_data_dir, tmp_path,
                                                                       length_reward_registered):
    from pepo.embedded import build_tiny_vlm
    from pepo.families import family_of
    from pepo.prompt_sharing import sharing_backbone

    path = build_tiny_vlm(tmp_path / family, seed=0, family=family)
    trainer = train(path, synthetic_data_dir, tmp_path / "run", length_reward_registered, "--max_steps", "2")
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
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [log["step"] for log in logs] == [1, 2]
    for log in logs:  # each step: a non-zero perception prior (a mean cosine) on the image tokens, weights around 1
        assert log["pepo/visual_similarity"] != 0 and -1 <= log["pepo/visual_similarity"] <= 1
        assert log["pepo/weight/p0"] < 1 < log["pepo/weight/p100"] and log["grad_norm"] > 0
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """``saved_tiny(family)``: one saved tiny checkpoint per family (random weights, seed 0), built on first use."""
    from pepo.embedded import build_tiny_vlm

    built = {}

    def checkpoint(family):
        if family not in built:
            built[family] = build_tiny_vlm(tmp_path_factory.mktemp(f"tiny_{family}"), seed=0, family=family)
        return built[family]

    return checkpoint


# InternVL's pepo eval runs on its trained checkpoint in tests/scale/test_second_family.py; Qwen3-VL's eval and
# analyze in tests/families/test_qwen3_vl.py
@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SPEED_UPS))
def test_a_saved_tiny_family_is_evaluated_by_pepo_eval(family, saved_tiny, synthetic_data_dir, tmp_path):
    evaluate_and_check(saved_tiny(family), synthetic_data_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted([*SPEED_UPS, "internvl"]))
def test_a_saved_tiny_family_is_analysed_by_pepo_analyze(family, saved_tiny, synthetic_data_dir, tmp_path):
    analyse_and_check(saved_tiny(family), synthetic_data_dir, tmp_path)
