"""Property tests of the trainer's weight pipeline, end to end through the functions the trainer calls:
``image_token_mask`` -> ``perception_scores`` -> ``PEPOTrainer._apply_token_weights`` (``token_weights``,
the non-finite check, ``loss_multiplier``), with random masks, left / right padding and dtypes.
(The fusion alone is property-tested in tests/core/test_weights.py.)"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pepo.core import perception_scores
from pepo.image_tokens import image_token_mask

IMAGE = 7  # the image placeholder id of these synthetic batches


@st.composite
def batches(draw):
    """A batch laid out as TRL lays it out: prompt (with image tokens, or none) padded on the left
    or right, then the completion; hidden states of L + 1 layers."""
    B, P, T, D, L = draw(st.integers(1, 4)), draw(st.integers(3, 8)), draw(st.integers(1, 7)), draw(
        st.sampled_from([4, 8])), draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    input_ids = torch.randint(10, 50, (B, P + T), generator=g)
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    left = draw(st.booleans())
    for b in range(B):
        n = int(torch.randint(1, P + 1, (1,), generator=g))
        span = slice(P - n, P) if left else slice(0, n)
        prompt_mask[b, span] = 1
        input_ids[b, :P][prompt_mask[b] == 0] = 0  # padding id
        if draw(st.booleans()):  # this row has an image: 1..n of its prompt tokens are placeholders
            positions = torch.nonzero(prompt_mask[b]).flatten()
            k = int(torch.randint(1, len(positions) + 1, (1,), generator=g))
            input_ids[b, positions[torch.randperm(len(positions), generator=g)[:k]]] = IMAGE
    lengths = torch.randint(0, T + 1, (B,), generator=g)  # 0: an empty / fully masked completion
    completion_mask = (torch.arange(T) < lengths.unsqueeze(1)).long()
    if draw(st.booleans()):
        completion_mask = completion_mask.flip(1)  # padding on the other side
    hidden = [torch.randn(B, P + T, D, generator=g) * draw(st.sampled_from([1e-2, 1.0, 50.0])) for _ in range(L + 1)]
    return input_ids, completion_mask, hidden, torch.randn(B, generator=g), torch.rand(B, T, generator=g) * 5


def _advantages(trainer, batch, dtype=torch.float32, lam_step=None):
    input_ids, completion_mask, hidden, advantages, entropies = batch
    T = completion_mask.size(1)
    vision_mask = image_token_mask(input_ids, IMAGE)
    perception = perception_scores([h.to(dtype) for h in hidden], vision_mask, T, trainer.args.perception_measure)
    inputs = {"completion_mask": completion_mask, "advantages": advantages.clone(), "completion_ids": input_ids[:, -T:]}
    trainer._apply_token_weights(inputs, perception, entropies, vision_mask.any(1))
    return inputs["advantages"], vision_mask.any(1)


@pytest.fixture(scope="module")
def trainers(tiny_vlm_path, tmp_path_factory):
    from pepo.modeling import load_model_and_processor
    from pepo.trainer import PEPOTrainer
    from tests.trainer.conftest import config, image_dataset, length_reward

    model, processor = load_model_and_processor(tiny_vlm_path)
    out = {}
    for mode in ("pepo", "perception", "exploration"):
        args = config(tmp_path_factory.mktemp(mode), weighting=mode, schedule="constant", gate_alpha=0.3,
                      gate_temperature=0.7, on_nonfinite="skip")
        out[mode] = PEPOTrainer(model=model, reward_funcs=[length_reward], args=args, train_dataset=image_dataset(),
                                processing_class=processor)
    model.train()  # metrics go to the "train" bucket, as in a training step
    return out


@pytest.mark.parametrize("mode", ["pepo", "perception", "exploration"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches(), lam=st.sampled_from([0.0, 0.3, 1.0]))
def test_multiplier_is_finite_unit_mean_and_padding_blind(trainers, mode, batch, lam):
    trainer = trainers[mode]
    trainer.pepo_lambda = lambda: lam
    input_ids, completion_mask, hidden, advantages, entropies = batch
    out, has_image = _advantages(trainer, batch)
    valid = completion_mask.bool()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    multiplier = out / torch.where(advantages == 0, 1.0, advantages).unsqueeze(1)
    for b in range(out.size(0)):
        m = multiplier[b][valid[b]]
        if advantages[b] == 0 or m.numel() == 0:
            continue
        assert (m >= 0).all()
        torch.testing.assert_close(m.mean(), torch.tensor(1.0), rtol=0, atol=1e-5)
        if not has_image[b] and mode != "exploration":
            torch.testing.assert_close(m, torch.ones_like(m), rtol=0, atol=1e-6)  # text-only row: base algorithm

    # junk in the padding (prompt padding and masked completion positions) changes nothing
    P = input_ids.size(1) - completion_mask.size(1)
    pad = torch.cat([input_ids[:, :P] == 0, ~valid], 1).unsqueeze(-1)
    junk = [torch.where(pad, torch.full_like(h, 1e4), h) for h in hidden]
    junk_entropy = torch.where(valid, entropies, 1e4)
    again, _ = _advantages(trainer, (input_ids, completion_mask, junk, advantages, junk_entropy))
    torch.testing.assert_close(again[valid], out[valid], rtol=1e-5, atol=1e-6)

    # rows do not see each other: a row's result is the same alone
    alone, _ = _advantages(trainer, (input_ids[-1:], completion_mask[-1:], [h[-1:] for h in hidden],
                                     advantages[-1:], entropies[-1:]))
    torch.testing.assert_close(alone, out[-1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["pepo", "perception"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_bfloat16_hidden_states_are_upcast_exactly(trainers, mode, batch):
    """bf16 hidden states give the float32 result of the same (bf16-rounded) values: the pipeline
    accumulates in float32 and loses nothing beyond the model's own rounding."""
    trainer = trainers[mode]
    trainer.pepo_lambda = lambda: 1.0
    input_ids, completion_mask, hidden, advantages, entropies = batch
    rounded = [h.bfloat16().float() for h in hidden]
    from_bf16, _ = _advantages(trainer, (input_ids, completion_mask, hidden, advantages, entropies), torch.bfloat16)
    from_f32, _ = _advantages(trainer, (input_ids, completion_mask, rounded, advantages, entropies))
    assert from_bf16.dtype == torch.float32
    torch.testing.assert_close(from_bf16, from_f32, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches(), row=st.integers(0, 3), bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_a_nonfinite_row_is_skipped_alone(trainers, batch, row, bad):
    trainer = trainers["pepo"]
    trainer.pepo_lambda = lambda: 1.0
    input_ids, completion_mask, hidden, advantages, entropies = batch
    row = row % input_ids.size(0)
    valid = completion_mask.bool()
    if not valid[row].any():
        return
    clean, _ = _advantages(trainer, batch)
    poisoned = entropies.clone()
    poisoned[row, valid[row].nonzero()[0]] = bad
    out, _ = _advantages(trainer, (input_ids, completion_mask, hidden, advantages, poisoned))
    others = [b for b in range(input_ids.size(0)) if b != row]
    assert torch.equal(out[others], clean[others])
    expected = torch.where(valid[row], advantages[row], 0.0)  # multiplier 1: the base algorithm
    assert torch.equal(out[row], expected)
    trainer._flush_device_metrics("train")  # what TRL's log does
    assert trainer._metrics["train"]["pepo/nonfinite_rows"][-1] == 1
