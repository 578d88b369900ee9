"""A second model family end to end: a tiny InternVL3 (``build_tiny_vlm(family="internvl")``: built from
config, its own tokenizer and chat template, InternVL's processor without torchvision) trained 2 steps with
PEPO_G by ``pepo train``'s own code, its image token found without being named, and evaluated
with ``pepo eval``."""

from __future__ import annotations

import pytest

from tests.cli_runs import evaluate_and_check, train_and_check_pepo_g

from . import replay
from .test_multiprocess import ROOT


@pytest.fixture(scope="module")
def internvl_path(tmp_path_factory):
    from pepo.embedded import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_internvl"), seed=0, family="internvl", hidden_size=64)


@pytest.fixture
def length_reward_registered():
    """A reward with spread on a random model (accuracy and format are 0 for every completion, so no
    gradient): registered under a name, as a user's own reward would be."""
    from pepo.rewards import REWARD_FUNCTIONS, register_reward

    register_reward("test_length_mod_5", replay.length_reward)
    yield "test_length_mod_5"
    REWARD_FUNCTIONS.pop("test_length_mod_5")


@pytest.mark.slow
def test_tiny_internvl3_trains_with_pepo_g_and_is_evaluated(internvl_path, synthetic_data_dir, tmp_path,
                                                            length_reward_registered):
    from pepo.modeling import load_model_and_processor
    from pepo.trainer.cli import build_trainer, parse

    out = tmp_path / "run"
    # what `pepo train --config recipes/pepo_g_tiny.yaml --model_name_or_path DIR ...` does, keeping the trainer
    script_args, args, model_args = parse([
        "--config", str(ROOT / "recipes" / "pepo_g_tiny.yaml"), "--model_name_or_path", str(internvl_path),
        "--train_file", str(synthetic_data_dir / "train.jsonl"), "--output_dir", str(out), "--max_steps", "2",
        "--max_completion_length", "8", "--eval_after_train", "none",  # its own data: no synthetic held-out split
        "--per_device_train_batch_size", "64",  # 8 prompts x 8 samples: its 16 records hold two steps
        "--reward_funcs", "accuracy", "format", length_reward_registered])
    assert args.weighting == "pepo" and args.image_token is None  # PEPO_G, placeholder not named
    trainer = build_trainer(script_args, args, model_args)
    model = trainer.model
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    tokenizer = trainer.processing_class.tokenizer
    assert trainer.image_token_id == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>") != tokenizer.unk_token_id
    from pepo.families import family_of
    from pepo.prompt_sharing import sharing_backbone

    # pepo's Qwen speed-ups do not apply (its family registers none): TRL's and transformers' plain computation
    assert family_of(model).name == "InternVL" and sharing_backbone(model) is None
    assert trainer._shared_prompt_model(model, 8) is model
    assert not any(getattr(m, "_pepo_shares_images", False) for m in model.modules())
    train_and_check_pepo_g(trainer, out, steps=2)

    trained, processor = load_model_and_processor(out)  # the saved checkpoint reloads with its own processor
    assert type(processor).__name__ == "InternVLImageTextProcessor"
    evaluate_and_check(out, synthetic_data_dir, tmp_path)
