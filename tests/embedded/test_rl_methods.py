"""Every method `pepo demo --methods` accepts is a valid trainer configuration; PAPO and VPPO train
through the demo's own RL code path (which also logs the baselines' PEPO signals)."""

from __future__ import annotations

import pytest

from pepo.embedded.recipe import RL_METHODS, load_rows, rl_train
from pepo.trainer import PEPOConfig


@pytest.mark.parametrize("method", sorted(RL_METHODS))
def test_every_demo_method_is_a_valid_config(method, tmp_path):
    args = PEPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], log_signals=True,
                      **RL_METHODS[method])
    expected = {"papo_g": "papo", "papo_d": "papo", "vppo": "vppo"}.get(method, "none")
    assert args.perception_aware == expected


def test_demo_refuses_an_unknown_method(capsys):
    from pepo.demo import main

    with pytest.raises(SystemExit) as raised:
        main(["--quick", "--methods", "grpo,papo"])
    assert raised.value.code == 2 and "unknown method(s) ['papo']" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["papo_g", "papo_d", "vppo"])
def test_perception_aware_methods_train_in_the_demo(method, tiny_vlm_path, synthetic_data_dir, tmp_path, monkeypatch):
    # the random tiny model never stops within 8 tokens: overlong filtering would mask every completion
    monkeypatch.setitem(RL_METHODS, method, {**RL_METHODS[method], "mask_truncated_completions": False})
    rows = load_rows(synthetic_data_dir / "train.jsonl", limit=4)
    result = rl_train(tiny_vlm_path, rows, tmp_path, method, max_steps=1, prompts_per_step=2, num_generations=2,
                      max_completion_length=8)
    logged = set(result.log[0])
    assert "perception_aware/forward_s" in logged and "pepo/entropy/p0" in logged  # log_signals still works
    assert ("papo/kl_prcp" if method.startswith("papo") else "vppo/adv_scale/mean") in logged
