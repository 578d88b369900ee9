"""The bad-input catalogue (docs/reliability.md) at the trainer and `pepo train` level.

Data-file rows (missing / corrupt / zero-size images, malformed JSONL, missing fields, image paths
outside the root) are tested where the readers live, tests/data/test_geometry3k.py; config
ranges in tests/trainer/test_config.py. This file covers what only shows up while training.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

import pepo.trainer.trainer as trainer_module
from pepo.core import WEIGHTING_MODES
from pepo.rewards import get_reward
from pepo.trainer import PEPOTrainer
from pepo.trainer.capture import language_model_of
from pepo.train import main as train_main
from tests.trainer.conftest import rollout
from tests.trainer.test_loss import LOSS_TYPES, loss_and_grads
from tests.trainer.test_mixed_batches import mixed_rollout


def _train_argv(model_path, tmp_path, *extra):
    return ["--model_name_or_path", str(model_path), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true",
            "--bf16", "false", "--report_to", "none", "--max_steps", "1", "--per_device_train_batch_size", "4",
            "--num_generations", "4", "--max_completion_length", "4", "--disable_tqdm", "true", *extra]


# ---- `pepo train` on bad data, config and YAML: exit code 2 and one line saying what to fix --------------


def test_pepo_train_bad_data_names_file_line_and_field(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys):
    lines = (synthetic_data_dir / "train.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    del record["solution"]
    lines[2] = json.dumps(record)
    lines[4] = lines[4][:-3]  # a line cut short
    bad = tmp_path / "bad_train.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    argv = _train_argv(tiny_vlm_path, tmp_path, "--train_file", str(bad), "--image_root", str(synthetic_data_dir))
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"pepo train: {bad}:3: solution: missing or empty (looked for solution)"
    assert "Traceback" not in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--gate_alpha", "-0.5"], "--gate_alpha must be >= 0, got -0.5"),
    (["--gate_temperature", "0"], "--gate_temperature must be > 0, got 0.0"),
    (["--perception_measure", "cos"], "perception_measure='cos': choose one of"),
    (["--weighting", "pepo_x"], "weighting='pepo_x': choose one of"),
    (["--on_nonfinite", "ignore"], "on_nonfinite='ignore': choose one of ('error', 'skip')"),
    (["--reward_funcs", "accurracy"], "unknown reward 'accurracy'; known rewards:"),
])
def test_pepo_train_out_of_range_values(tiny_vlm_path, tmp_path, capsys, extra, message):
    assert train_main(_train_argv(tiny_vlm_path, tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("pepo train: ") and message in err and "Traceback" not in err


def test_pepo_train_refuses_python_tags_in_yaml(tmp_path, capsys):
    # TrlParser reads recipes with yaml.safe_load: a !!python tag is an error, never executed
    marker = tmp_path / "executed"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"output_dir: !!python/object/apply:os.system ['touch {marker}']\nuse_cpu: true\nbf16: false\n")
    assert train_main(["--config", str(recipe)]) == 2
    assert "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'" in (
        capsys.readouterr().err)
    assert not marker.exists()


# ---- the model's image token --------------------------------------------------------------------


def test_image_token_missing_from_the_vocabulary_is_an_error(make_trainer):
    with pytest.raises(ValueError, match=r"image_token='<IMG_CONTEXT>' is not a token of the tokenizer"):
        make_trainer(image_token="<IMG_CONTEXT>")


PERCEPTION_MODES = ["pepo", "perception"]  # the built-in modes that declare needs_perception
NO_PERCEPTION = ["exploration", "none"]


@pytest.mark.parametrize("weighting", [*PERCEPTION_MODES, *NO_PERCEPTION])
def test_a_perception_mode_refuses_a_model_without_an_image_token(make_trainer, monkeypatch, weighting):
    # before: a warning, then every row text-only with weight 1, i.e. the base algorithm under the mode's name
    monkeypatch.setattr(trainer_module, "resolve_image_token_id", lambda *a, **k: None)
    if weighting in NO_PERCEPTION:  # nothing of theirs needs the image token
        make_trainer(weighting=weighting)
        return
    with pytest.raises(ValueError, match=rf"^weighting='{weighting}' needs the perception prior at the image tokens, "
                       r"but no image token id was found for Qwen2_5_VLForConditionalGeneration \(.*\): set image_token "
                       r"to the placeholder token its processor puts for each image, or use weighting exploration "
                       r"\(entropy only\) or none for a text-only model$"):
        make_trainer(weighting=weighting)


def test_the_perception_modes_here_are_the_built_in_ones():
    built_in = {"pepo", "perception", "exploration"}
    assert PERCEPTION_MODES == [name for name in WEIGHTING_MODES if name in built_in and WEIGHTING_MODES[name].needs_perception]


def _text_only_rows(image_column: str | None) -> Dataset:
    prompt = [{"role": "user", "content": [{"type": "text", "text": "What colour is the circle ?"}]}]
    empty = {None: {}, "image": {"image": None}, "images": {"images": []}}[image_column]
    return Dataset.from_list([{"prompt": prompt, **empty} for _ in range(4)])


@pytest.mark.parametrize("image_column", [None, "image", "images"], ids=["no_image_column", "image_none", "images_empty"])
def test_a_perception_mode_refuses_training_data_without_any_image(make_trainer, image_column):
    text_only = _text_only_rows(image_column)
    for weighting in NO_PERCEPTION:
        make_trainer(weighting=weighting, dataset=text_only)
    for weighting in PERCEPTION_MODES:
        with pytest.raises(ValueError, match=rf"^weighting='{weighting}' needs the perception prior at the image "
                           r"tokens, but no row of train_dataset has an image .*: every token weight would be 1, the "
                           r"base algorithm; give training data with images, or use weighting exploration"):
            make_trainer(weighting=weighting, dataset=text_only)


@pytest.mark.parametrize("weighting", PERCEPTION_MODES)
def test_text_only_rows_beside_image_rows_are_trained_not_refused(make_trainer, weighting):
    # text-only rows of a perception mode get weight 1 by design (docs/method.md; their weights:
    # tests/trainer/test_mixed_batches.py): only data with no image at all, or an image row without its token, is refused
    trainer, batch = mixed_rollout(make_trainer, weighting)
    assert batch["num_images"] == [1, 1, 0, 0, 2, 2, 0, 0]


def _stream(rows: Dataset, examples: int = 4):
    """The rows as a stream (``IterableDataset``), and the first ``examples`` of them as TRL's sampler would give them."""
    return rows.to_iterable_dataset(), [rows[i % len(rows)] for i in range(examples)]


def test_a_perception_mode_refuses_a_stream_without_an_image_column(make_trainer):
    text_stream, _ = _stream(_text_only_rows(None))
    make_trainer(weighting="exploration", dataset=text_stream)
    with pytest.raises(ValueError, match=r"^weighting='pepo' needs the perception prior at the image tokens, but no "
                       r"row of train_dataset has an image"):
        make_trainer(weighting="pepo", dataset=text_stream)


@pytest.mark.parametrize("image_column", ["image", "images"])
def test_a_stream_whose_first_generation_batch_has_no_image_is_refused_before_its_loss(make_trainer, image_column):
    # a stream cannot be read ahead: its image column may be empty in every row; before, every weight was 1
    stream, examples = _stream(_text_only_rows(image_column))
    make_trainer(weighting="exploration", dataset=stream)
    trainer = make_trainer(weighting="pepo", dataset=stream)
    with pytest.raises(ValueError, match=r"^weighting='pepo' needs the perception prior at the image tokens, but the "
                       r"first generation batch of the streamed train_dataset has no image row .*: if the stream has "
                       r"image rows, put one among its first"):
        trainer._generate_and_score_completions(examples)


def test_a_stream_of_image_rows_trains_under_a_perception_mode(make_trainer):
    from tests.trainer.conftest import image_dataset

    stream, examples = _stream(image_dataset())
    batch = make_trainer(weighting="pepo", dataset=stream)._generate_and_score_completions(examples)
    assert batch["num_images"] == [1, 1, 1, 1]


def test_pepo_train_refuses_a_perception_mode_on_text_only_data(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys,
                                                                 monkeypatch):
    records = [json.loads(line) for line in (synthetic_data_dir / "train.jsonl").read_text().splitlines()]
    for record in records:  # the same questions without their images
        del record["images"]
        for message in record["messages"]:
            message["content"] = message["content"].replace("<image>", "")
    text_only = tmp_path / "text_only.jsonl"
    text_only.write_text("".join(json.dumps(record) + "\n" for record in records))
    argv = _train_argv(tiny_vlm_path, tmp_path, "--train_file", str(text_only), "--eval_after_train", "none",
                       "--weighting", "pepo")
    import pepo.modeling

    loaded = []
    load = pepo.modeling.load_model_and_processor
    monkeypatch.setattr(pepo.modeling, "load_model_and_processor", lambda *a, **k: loaded.append(a) or load(*a, **k))
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("pepo train: weighting='pepo' needs the perception prior at the image tokens, "
                                           "but no row of train_dataset has an image") and "Traceback" not in err
    assert loaded == []  # refused before the weights were loaded
    exploration = _train_argv(tiny_vlm_path, tmp_path / "exploration", "--train_file", str(text_only),
                              "--eval_after_train", "none", "--weighting", "exploration")
    assert train_main(exploration) == 0  # a mode without the perception prior trains the same file
    assert len(loaded) == 1


def test_pepo_train_refuses_a_model_without_an_image_token_before_loading_it(tiny_vlm_path, synthetic_data_dir,
                                                                            tmp_path, capsys, monkeypatch):
    import pepo.image_tokens
    import pepo.modeling

    monkeypatch.setattr(pepo.image_tokens, "resolve_image_token_id", lambda *a, **k: None)
    monkeypatch.setattr(pepo.modeling, "load_model_and_processor", lambda *a, **k: pytest.fail("weights loaded"))
    argv = _train_argv(tiny_vlm_path, tmp_path, "--train_file", str(synthetic_data_dir / "train.jsonl"),
                       "--eval_after_train", "none", "--weighting", "perception")
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("pepo train: weighting='perception' needs the perception prior at the image "
                                           "tokens, but no image token id was found for Qwen2_5_VLForConditionalGeneration") \
        and "Traceback" not in err


def test_an_image_row_without_the_image_token_is_refused_before_its_loss(make_trainer):
    # image_token names a token of the vocabulary that the processor never puts for an image: the model's forward
    # (which reads its config's image_token_id) works, but pepo would find no image token and give weight 1
    for weighting in NO_PERCEPTION:
        rollout(make_trainer(weighting=weighting, image_token="<|video_pad|>"))
    trainer = make_trainer(weighting="pepo", image_token="<|video_pad|>")
    with pytest.raises(ValueError, match=r"^step 0, generation batch row 0: 1 image\(s\) but no image token \(id \d+\) "
                       r"in its tokenised prompt: weighting='pepo' reads the perception prior at the image tokens and "
                       r"would give this row weight 1 \(the base algorithm\)\. .*: set image_token to that token"):
        rollout(trainer)


# ---- prompts and completions --------------------------------------------------------------------


def test_prompt_longer_than_the_model_positions_is_refused(make_trainer, fresh_model):
    model = fresh_model()
    model.config.text_config.max_position_embeddings = 30  # the tiny prompt is 26 tokens (system turn included), + 8 to generate
    trainer = make_trainer(model=model, max_completion_length=8)
    with pytest.raises(ValueError, match=r"step 0, generation batch row 0: the prompt has 26 tokens \(images "
                                         r"expanded\) \+ max_completion_length 8 > the model's max_position_embeddings 30"):
        rollout(trainer)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_zero_token_and_fully_truncated_completions_give_a_finite_loss(make_trainer, loss_type):
    """A completion with no loss token (empty, or masked out as truncated by mask_truncated_completions)
    gets weight 0 everywhere; when every completion is like that the loss is 0, not NaN."""
    trainer = make_trainer(weighting="pepo", schedule="constant", loss_type=loss_type)
    inputs = rollout(trainer)
    some = dict(inputs, completion_mask=inputs["completion_mask"].clone())
    some["completion_mask"][1] = 0
    some["num_items_in_batch"] = some["completion_mask"].sum()
    loss, grads = loss_and_grads(trainer, some)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())

    none = dict(inputs, completion_mask=torch.zeros_like(inputs["completion_mask"]))
    none["num_items_in_batch"] = torch.tensor(0)
    loss, grads = loss_and_grads(trainer, none)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in grads.values())


def test_empty_completion_scores_zero():
    for name in ("format", "accuracy", "choice"):
        assert get_reward(name)([""], solution=["15"], choices=[["a", "b"]]) == [0.0]


def test_groups_whose_rewards_all_equal_give_no_gradient_and_no_nan(make_trainer):
    # Without dynamic sampling such a group has advantage 0 (TRL divides by std + 1e-4, never 0); with
    # it the group is dropped: tests/trainer/test_dynamic_sampling.py.
    trainer = make_trainer(weighting="pepo", schedule="constant", beta=0.0,
                           reward_funcs=[lambda completions, **k: [1.0] * len(completions)])
    inputs = rollout(trainer)
    assert torch.equal(inputs["advantages"], torch.zeros_like(inputs["advantages"]))
    loss, grads = loss_and_grads(trainer, inputs)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in grads.values())


# ---- NaN / inf in the policy's hidden states or logits ------------------------------------------------


@pytest.fixture
def nan_hidden_states_in_row_1():
    """A decoder layer whose output for row 1 is NaN (what an overflow in bf16 looks like)."""
    handles = []

    def install(trainer):
        layer = language_model_of(trainer.model).layers[0]

        def poison(module, args, output):
            hidden = (output[0] if isinstance(output, tuple) else output).clone()
            if hidden.size(0) < 2:  # a shared-prompt pass (one distinct prompt): row 1 is in the rows' own pass
                return output
            hidden[1] = float("nan")
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handles.append(layer.register_forward_hook(poison))

    yield install
    for handle in handles:
        handle.remove()


def test_nonfinite_hidden_states_fail_loudly_with_step_and_row(make_trainer, nan_hidden_states_in_row_1):
    trainer = make_trainer(weighting="pepo", schedule="constant")  # on_nonfinite="error" is the default
    inputs = rollout(trainer)
    trainer.state.global_step = 7
    nan_hidden_states_in_row_1(trainer)
    loss_and_grads(trainer, inputs)  # nothing read back during the micro-step: checked before the optimiser step
    with pytest.raises(FloatingPointError, match=r"step 7: NaN/inf perception score or token entropy .* in rows \[1\] "
                                                 r"of the micro-batch on process 0; row 1 completion: "):
        trainer._raise_on_nonfinite()  # what training_step does after an optimiser step's last micro-step


def test_nonfinite_hidden_states_stop_training_before_the_optimiser_step(make_trainer, monkeypatch):
    trainer = make_trainer(weighting="pepo", schedule="constant", max_steps=1, gradient_accumulation_steps=2)
    layer = language_model_of(trainer.model).layers[0]

    def poison_loss_forward(module, args, output):  # generation (no grad) stays finite
        if not torch.is_grad_enabled():
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = torch.cat([hidden[:1], torch.full_like(hidden[1:2], float("nan")), hidden[2:]])
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    layer.register_forward_hook(poison_loss_forward)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"step 0: .* in rows \[1[^]]*\] of the micro-batch \(micro-step 1 of 2\)"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())  # no update applied


def _weights_of(trainer, inputs, monkeypatch):
    seen = []
    original = trainer_module.loss_multiplier
    monkeypatch.setattr(trainer_module, "loss_multiplier", lambda w, lam: seen.append(w) or original(w, lam))
    loss_and_grads(trainer, inputs)
    return seen[-1]


def test_nonfinite_rows_can_be_skipped_with_a_count(make_trainer, nan_hidden_states_in_row_1, monkeypatch):
    trainer = make_trainer(weighting="pepo", schedule="constant", on_nonfinite="skip")
    inputs = rollout(trainer)
    clean = _weights_of(trainer, inputs, monkeypatch)
    trainer._flush_device_metrics("train")  # what TRL's log does
    assert trainer._metrics["train"]["pepo/nonfinite_rows"] == [0]
    nan_hidden_states_in_row_1(trainer)
    skipped = _weights_of(trainer, inputs, monkeypatch)
    mask = inputs["completion_mask"].bool()
    assert torch.equal(skipped[1][mask[1]], torch.ones(int(mask[1].sum())))  # row 1: the base algorithm
    assert not torch.equal(clean[1][mask[1]], torch.ones(int(mask[1].sum())))
    others = [0, 2, 3]
    assert torch.equal(skipped[others], clean[others])  # other rows untouched
    trainer._flush_device_metrics("train")
    assert trainer._metrics["train"]["pepo/nonfinite_rows"] == [0, 1]
    assert all(math.isfinite(v) for v in trainer._metrics["train"]["pepo/weight/p100"])  # bad rows left out


def test_infinite_entropy_from_the_logits_fails_loudly(make_trainer, monkeypatch):
    trainer = make_trainer(weighting="exploration", schedule="constant")
    inputs = rollout(trainer)
    original = GRPOTrainer._get_per_token_logps_and_entropies

    def inf_entropy(self, *args, **kwargs):
        logps, entropies, *rest = original(self, *args, **kwargs)
        if entropies is not None:
            entropies = entropies.clone()
            entropies[2, 0] = float("inf")
        return (logps, entropies, *rest)

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", inf_entropy)
    loss_and_grads(trainer, inputs)
    with pytest.raises(FloatingPointError, match=r"step 0: .* in rows \[2\]"):
        trainer._raise_on_nonfinite()
