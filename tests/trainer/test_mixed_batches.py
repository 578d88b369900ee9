"""Real mixed batches: some rows with an image, some without, one with two images, through TRL's
own collation (``_generate_and_score_completions``, the processor, the generation-batch split) and
the tiny Qwen2.5-VL forward, for every weighting mode.

docs/method.md, Token weights: an image-less row has no perception prior, so the perception modes
(``pepo``, ``perception``) give it weight 1 (the base algorithm); ``exploration`` uses the entropy
alone and weights every row, with or without an image (``pepo.core.token_weights``: the trainer
passes ``has_image`` only to the perception modes). A row's image-token set ``V_b`` is every
placeholder of every image in it.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl.trainer.grpo_trainer import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

import pepo.trainer.trainer as trainer_module
from pepo.core import token_weights
from pepo.trainer.config import weighting_choices

from .conftest import length_reward
from .test_loss import loss_and_grads

QUESTION = {"type": "text", "text": "What colour is the circle ?"}
NUM_IMAGES = [1, 0, 2, 0]  # per prompt
G = 2


def mixed_dataset() -> Dataset:
    def image(colour):
        return Image.new("RGB", (56, 56), colour)

    images = [[image((200, 0, 0))], [], [image((0, 0, 200)), image((0, 200, 0))], []]
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": [{"type": "image"}] * len(row) + [QUESTION]}], "images": row}
        for row in images
    ])


@pytest.fixture
def spies(monkeypatch):
    """Every ``token_weights`` call of the trainer (with its ``has_image``) and every image-token mask."""
    calls = {"weights": [], "masks": []}
    image_token_mask = trainer_module.image_token_mask

    def weights_spy(*args, **kwargs):
        result = token_weights(*args, **kwargs)
        calls["weights"].append({"weights": result, "mask": args[2].bool(), "has_image": kwargs.get("has_image")})
        return result

    def mask_spy(input_ids, image_token_id):
        mask = image_token_mask(input_ids, image_token_id)
        calls["masks"].append(mask)
        return mask

    monkeypatch.setattr(trainer_module, "token_weights", weights_spy)
    monkeypatch.setattr(trainer_module, "image_token_mask", mask_spy)
    return calls


def mixed_rollout(make_trainer, weighting):
    dataset = mixed_dataset()
    trainer = make_trainer(weighting=weighting, schedule="constant", dataset=dataset, num_generations=G,
                           per_device_train_batch_size=4, steps_per_generation=2, beta=0.02)
    trainer.model.train()
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions([dataset[i // G] for i in range(len(dataset) * G)])
    return trainer, batch


def rows_of(batch, rows: list[int]) -> dict:
    """The micro-batch of ``rows``, cut the way TRL cuts a generation batch (pixel values per row)."""
    split = split_pixel_values_by_grid(batch)
    n = split["prompt_ids"].size(0)
    out = {}
    for key, value in split.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == n:
            out[key] = value[rows]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return unsplit_pixel_values_by_grid(out)


@pytest.mark.parametrize("weighting", [w for w in weighting_choices() if w != "none"])
def test_mixed_batch_weights_per_mode(make_trainer, spies, weighting):
    trainer, batch = mixed_rollout(make_trainer, weighting)
    assert batch["num_images"] == [n for n in NUM_IMAGES for _ in range(G)]
    loss, grads = loss_and_grads(trainer, batch)
    assert torch.isfinite(loss) and grads
    call = spies["weights"][-1]
    weights, valid = call["weights"], call["mask"]
    has_image = torch.tensor([n > 0 for n in NUM_IMAGES for _ in range(G)])
    text_rows, image_rows = (~has_image).nonzero().flatten(), has_image.nonzero().flatten()
    unit = [bool(torch.all(weights[r][valid[r]] == 1)) for r in range(weights.size(0))]
    if weighting == "exploration":  # the entropy alone: every row is re-weighted, image or not
        assert call["has_image"] is None
        assert not any(unit[r] for r in text_rows) and not any(unit[r] for r in image_rows)
    else:
        assert torch.equal(call["has_image"].cpu(), has_image)
        assert all(unit[r] for r in text_rows) and not any(unit[r] for r in image_rows)
    # every row's weights still average 1 over its valid tokens
    means = (weights * valid).sum(1) / valid.sum(1)
    torch.testing.assert_close(means, torch.ones_like(means), rtol=0, atol=1e-5)


@pytest.mark.parametrize("weighting", [w if w == "pepo" else pytest.param(w, marks=pytest.mark.slow)
                                       for w in weighting_choices()])
def test_a_text_only_micro_batch_of_a_mixed_generation_batch_trains(make_trainer, spies, weighting):
    trainer, batch = mixed_rollout(make_trainer, weighting)
    text_only = rows_of(batch, [i for i, n in enumerate(batch["num_images"]) if n == 0])
    assert text_only["pixel_values"].size(0) == 0 and text_only["num_images"] == [0] * 4  # what TRL hands over
    loss, grads = loss_and_grads(trainer, text_only)
    assert torch.isfinite(loss) and grads
    if weighting in ("pepo", "perception"):
        call = spies["weights"][-1]
        assert torch.all(call["weights"][call["mask"]] == 1)


def test_both_images_of_a_two_image_row_count(make_trainer, spies):
    trainer, batch = mixed_rollout(make_trainer, "pepo")
    loss_and_grads(trainer, batch)
    mask = spies["masks"][-1]  # (B, S): the image-token positions PEPO used in the loss forward
    merge = trainer.model.config.vision_config.spatial_merge_size
    tokens_per_image = (batch["image_grid_thw"].prod(-1) // merge**2).tolist()
    expected, i = [], 0
    for n in batch["num_images"]:
        expected.append(sum(tokens_per_image[i : i + n]))
        i += n
    assert mask.sum(1).tolist() == expected
    two = batch["num_images"].index(2)
    assert expected[two] == 2 * expected[batch["num_images"].index(1)] > 0


@pytest.mark.slow
@pytest.mark.parametrize("weighting", weighting_choices())
def test_training_on_a_mixed_dataset(make_trainer, weighting):
    """The whole loop: TRL's sampler and shuffle decide which rows meet in which micro-batch."""
    trainer = make_trainer(weighting=weighting, dataset=mixed_dataset(), num_generations=G, per_device_train_batch_size=4,
                           steps_per_generation=2, beta=0.02, max_steps=2, reward_funcs=[length_reward])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
