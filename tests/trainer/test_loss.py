"""Proof that PEPOTrainer's loss is TRL's loss with the multiplier on the clipped policy term.

All tests score one fixed rollout (generated once per test by TRL itself), so generation
randomness plays no part: only ``compute_loss`` and its backward are compared.
"""

from __future__ import annotations

import copy

import pytest
import torch
from trl import GRPOTrainer

import pepo.trainer.trainer as trainer_module
from pepo.core import loss_multiplier, perception_scores, token_entropy, token_weights
from pepo.trainer import PEPOTrainer
from pepo.trainer.capture import language_model_of
from pepo.trainer.device_metrics import PERCENTILES

from .conftest import rollout

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def loss_and_grads(trainer, inputs):
    """``compute_loss`` on a copy of ``inputs`` as in a training micro-step, and the gradients."""
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(model, copy.copy(inputs))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same(a, b, rtol=1e-5, atol=1e-7):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


def max_grad_difference(a, b) -> float:
    return max((a[1][n] - b[1][n]).abs().max().item() for n in a[1])


def uneven_masks(inputs):
    """Shorten some completions so that the four loss aggregations differ (the tiny model rarely
    stops before max_completion_length): row i keeps its first T - 2i tokens."""
    inputs = dict(inputs)
    mask = inputs["completion_mask"].clone()
    T = mask.size(1)
    for i in range(mask.size(0)):
        mask[i, max(T - 2 * i, 1):] = 0
    inputs["completion_mask"] = mask
    inputs["num_items_in_batch"] = mask.sum()
    return inputs


@pytest.fixture
def spy_weights(monkeypatch):
    """Record every call of token_weights made by the trainer, and the advantages it produced."""
    calls = []

    def spy(perception, entropy, completion_mask, *args, **kwargs):
        result = token_weights(perception, entropy, completion_mask, *args, **kwargs)
        calls.append({"perception": perception, "entropy": entropy, "mask": completion_mask,
                      "args": args, "kwargs": kwargs, "weights": result})
        return result

    original_apply = PEPOTrainer._apply_token_weights

    def apply_and_record(self, inputs, *args, **kwargs):
        original_apply(self, inputs, *args, **kwargs)
        calls[-1]["advantages"] = inputs["advantages"]

    monkeypatch.setattr(trainer_module, "token_weights", spy)
    monkeypatch.setattr(PEPOTrainer, "_apply_token_weights", apply_and_record)
    return calls


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_weighting_none_is_trl_grpo(make_trainer, loss_type):
    trl = make_trainer(cls=GRPOTrainer, loss_type=loss_type)
    # bit for bit needs the vision tower and the prompt run on every copy, as TRL does
    pepo = make_trainer(weighting="none", loss_type=loss_type, share_image_encoding=False, share_prompts=False)
    inputs = uneven_masks(rollout(trl))
    assert_same(loss_and_grads(trl, inputs), loss_and_grads(pepo, inputs), rtol=0, atol=0)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_pepo_with_unit_weights_is_trl_grpo_and_real_weights_are_not(make_trainer, monkeypatch, loss_type):
    trl = make_trainer(cls=GRPOTrainer, loss_type=loss_type)
    pepo = make_trainer(weighting="pepo", schedule="constant", loss_type=loss_type, share_image_encoding=False, share_prompts=False)
    inputs = uneven_masks(rollout(trl))
    reference = loss_and_grads(trl, inputs)

    weighted = loss_and_grads(pepo, inputs)  # control: the real weights do change the gradient
    assert max_grad_difference(weighted, reference) > 1e-6

    monkeypatch.setattr(trainer_module, "token_weights", lambda p, e, mask, *a, **k: mask.float())
    assert_same(loss_and_grads(pepo, inputs), reference)


def test_sharing_the_image_encoding_changes_nothing_but_float_rounding(make_trainer):
    shared = make_trainer(weighting="pepo", schedule="constant", share_prompts=False)
    every_copy = make_trainer(weighting="pepo", schedule="constant", share_image_encoding=False, share_prompts=False)
    inputs = uneven_masks(rollout(every_copy))
    encoded_rows = []
    tower = shared.model.model.visual
    tower.patch_embed.register_forward_hook(lambda module, args, out: encoded_rows.append(args[0].size(0)))
    assert_same(loss_and_grads(shared, inputs), loss_and_grads(every_copy, inputs), rtol=1e-5, atol=1e-7)
    rows_per_image = int(inputs["image_grid_thw"][0].prod())
    assert encoded_rows == [rows_per_image]  # one prompt's four copies of its image: encoded once


def test_sharing_prompts_changes_nothing_but_float_rounding(make_trainer, spy_weights):
    shared = make_trainer(weighting="pepo", schedule="constant")
    every_copy = make_trainer(weighting="pepo", schedule="constant", share_prompts=False)
    inputs = uneven_masks(rollout(every_copy))
    passes = []
    language_model_of(shared.model).register_forward_hook(
        lambda m, args, kwargs, out: passes.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    assert_same(loss_and_grads(shared, inputs), loss_and_grads(every_copy, inputs), rtol=1e-5, atol=1e-7)
    B, P = inputs["prompt_ids"].shape
    C = inputs["completion_ids"].size(1)
    assert passes == [(1, P - 1), (B, 1 + C)]  # one prompt, once; then every row's own tokens: no extra pass
    torch.testing.assert_close(spy_weights[0]["perception"], spy_weights[1]["perception"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(spy_weights[0]["weights"], spy_weights[1]["weights"], rtol=1e-5, atol=1e-6)


def test_progressive_schedule_starts_as_the_base_algorithm(make_trainer):
    trl = make_trainer(cls=GRPOTrainer)
    pepo = make_trainer(weighting="pepo", schedule="progressive", share_image_encoding=False, share_prompts=False)
    pepo.state.global_step, pepo.state.max_steps = 0, 10
    inputs = rollout(trl)
    assert_same(loss_and_grads(trl, inputs), loss_and_grads(pepo, inputs))
    pepo.state.global_step = 5
    assert pepo.pepo_lambda() == 0.5
    assert max_grad_difference(loss_and_grads(pepo, inputs), loss_and_grads(trl, inputs)) > 1e-6


def test_weights_are_token_weights_of_the_batchs_own_forward(make_trainer, spy_weights):
    # one plain forward (the shared-prompt forward's two passes: test_sharing_prompts_changes_nothing_but_float_rounding)
    trainer = make_trainer(weighting="pepo", schedule="constant", gate_alpha=0.5, gate_temperature=0.5, share_prompts=False)
    inputs = rollout(trainer)
    model = trainer.model
    forwards = []
    handle = language_model_of(model).register_forward_hook(lambda *a: forwards.append(1))
    loss_and_grads(trainer, inputs)
    handle.remove()
    assert len(forwards) == 1, "PEPO must not add a forward pass"
    assert len(spy_weights) == 1
    call = spy_weights[0]

    # Recompute everything independently with an ordinary forward (no fused head, no hooks).
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    T = inputs["completion_ids"].size(1)
    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            attention_mask=torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=inputs["mm_token_type_ids"], output_hidden_states=True,
        )
    vision_mask = input_ids == trainer.image_token_id
    assert vision_mask.sum(1).tolist() == [4] * input_ids.size(0)  # 4 image tokens per row (tiny model)
    expected_perception = perception_scores(out.hidden_states, vision_mask, T)
    expected_entropy = token_entropy(out.logits[:, -T - 1 : -1], temperature=trainer.temperature)
    torch.testing.assert_close(call["perception"], expected_perception, rtol=1e-5, atol=1e-6)
    mask = inputs["completion_mask"].bool()
    torch.testing.assert_close(call["entropy"][mask].float(), expected_entropy[mask], rtol=1e-4, atol=1e-5)
    assert call["args"] == (0.5, 0.5, "pepo")
    expected_weights = token_weights(expected_perception, expected_entropy, inputs["completion_mask"], 0.5, 0.5, "pepo")
    torch.testing.assert_close(call["weights"], expected_weights, rtol=1e-4, atol=1e-5)

    # The advantages the loss used: A_b * ((1 - lambda) + lambda * w), constants for autograd.
    expected_advantages = inputs["advantages"].unsqueeze(1) * loss_multiplier(call["weights"], 1.0)
    torch.testing.assert_close(call["advantages"], expected_advantages, rtol=0, atol=0)
    for tensor in (call["weights"], call["advantages"], call["perception"]):
        assert not tensor.requires_grad and tensor.grad_fn is None
    assert call["weights"].dtype == torch.float32 and call["perception"].dtype == torch.float32


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_multiplier_is_on_the_clipped_term_and_not_on_kl(make_trainer, spy_weights, loss_type):
    """Hand-worked loss at on-policy (ratio 1, so the clipped term is -A): with multiplier m and a
    k3 KL to perturbed reference log-probs (beta 0.5), per_token = -A * m + beta * kl, aggregated per loss type."""
    trainer = make_trainer(weighting="pepo", schedule="constant", loss_type=loss_type, gate_temperature=0.3)
    inputs = uneven_masks(rollout(trainer))
    trainer.beta = 0.5  # the reference log-probs are given below, so no reference model is needed
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            inputs["completion_ids"].size(1),
            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
            num_images=inputs["num_images"], mm_token_type_ids=inputs["mm_token_type_ids"],
        )
    generator = torch.Generator().manual_seed(0)
    inputs["ref_per_token_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=generator)
    loss, _ = loss_and_grads(trainer, inputs)

    m = loss_multiplier(spy_weights[-1]["weights"], 1.0)
    A = inputs["advantages"].unsqueeze(1)
    delta = inputs["ref_per_token_logps"] - logps
    kl = torch.exp(delta) - delta - 1
    mask = inputs["completion_mask"].float()

    def aggregate(per_token):
        if loss_type == "grpo":
            return ((per_token * mask).sum(1) / mask.sum(1)).mean()
        if loss_type == "bnpo":
            return (per_token * mask).sum() / mask.sum()
        if loss_type == "dr_grpo":
            return (per_token * mask).sum() / (mask.size(0) * trainer.max_completion_length)
        return (per_token * mask).sum() / inputs["num_items_in_batch"]  # dapo, one process, no accumulation

    torch.testing.assert_close(loss, aggregate(-A * m + 0.5 * kl), rtol=1e-5, atol=1e-6)
    wrong = aggregate(m * (-A + 0.5 * kl))  # weighting the KL too: outside the tolerance above
    assert not torch.allclose(wrong, loss, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_weights(make_trainer, spy_weights):
    plain = make_trainer(weighting="pepo", schedule="constant", share_prompts=False)
    checkpointed = make_trainer(weighting="pepo", schedule="constant")  # shares no prompt: checkpointing would re-write the cache
    checkpointed.model.activation_checkpointing_enable()
    assert checkpointed.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    inputs = rollout(plain)
    result_plain = loss_and_grads(plain, inputs)
    result_checkpointed = loss_and_grads(checkpointed, inputs)
    assert len(spy_weights) == 2
    torch.testing.assert_close(spy_weights[0]["weights"], spy_weights[1]["weights"], rtol=0, atol=0)
    assert_same(result_plain, result_checkpointed, rtol=1e-5, atol=1e-6)


def test_exploration_mode_needs_no_hidden_states(make_trainer, spy_weights, monkeypatch):
    trainer = make_trainer(weighting="exploration", schedule="constant")
    monkeypatch.setattr(trainer_module, "HiddenStateCapture", None)  # would raise if used
    inputs = rollout(trainer)
    loss_and_grads(trainer, inputs)
    call = spy_weights[0]
    assert call["args"][2] == "exploration" and call["kwargs"]["has_image"] is None
    assert torch.count_nonzero(call["perception"]) == 0


def test_text_only_rows_get_unit_weights(make_trainer, spy_weights):
    trainer = make_trainer(weighting="pepo", schedule="constant")
    inputs = rollout(trainer)
    trainer.image_token_id = -1  # no position matches: every row is text-only for PEPO
    loss_and_grads(trainer, inputs)
    weights, mask = spy_weights[0]["weights"], inputs["completion_mask"].bool()
    assert torch.equal(weights[mask], torch.ones_like(weights[mask]))


@pytest.mark.parametrize("loss_type", ("grpo", "dapo"))
def test_log_signals_logs_a_baselines_signals_and_leaves_its_loss_alone(make_trainer, loss_type):
    trl = make_trainer(cls=GRPOTrainer, loss_type=loss_type)
    baseline = make_trainer(weighting="none", log_signals=True, loss_type=loss_type, share_image_encoding=False, share_prompts=False)
    pepo = make_trainer(weighting="pepo", loss_type=loss_type, share_image_encoding=False, share_prompts=False)
    inputs = uneven_masks(rollout(trl))
    assert_same(loss_and_grads(trl, inputs), loss_and_grads(baseline, inputs), rtol=0, atol=0)
    loss_and_grads(pepo, inputs)
    for trainer in (baseline, pepo):
        trainer._flush_device_metrics("train")  # what TRL's log does: the metrics wait on the device until then
    logged, reference = baseline._metrics["train"], pepo._metrics["train"]
    # the same forward of the same weights: the same similarity and entropy PEPO reads (Figure 6)
    assert logged["pepo/visual_similarity"] == reference["pepo/visual_similarity"] != []
    for p in PERCENTILES:  # every entropy percentile, each logged by both (not [] == [] when neither logs it)
        key = f"pepo/entropy/p{p}"
        assert key in logged and key in reference, key
        assert logged[key] == reference[key] and len(logged[key]) == 1, key
    # nothing is weighted: no lambda, no weight percentiles
    assert "pepo/lambda" not in logged and "pepo/weight/p0" not in logged
