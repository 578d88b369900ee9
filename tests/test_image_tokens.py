"""The image-token mask lands exactly on the positions where each family's model writes its
vision features (tiny random models built from configs, no downloads)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pepo.trainer.capture import language_model_of
from pepo.image_tokens import image_token_mask, resolve_image_token_id

from tests.trainer.families import TINY_BUILDERS, build, word_tokenizer


def positions_overwritten_by_vision(model, inputs) -> torch.Tensor:
    """``(B, S)`` bool: where the language model's input embeddings differ from the plain token
    embeddings, i.e. where the model scattered image features. Model-agnostic ground truth."""
    seen = {}

    def keep_embeds(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach()

    handle = language_model_of(model).register_forward_pre_hook(keep_embeds, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    plain = model.get_input_embeddings()(inputs["input_ids"])
    return (seen["embeds"] != plain).any(-1)


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_mask_is_where_the_model_puts_image_features(family):
    model, processor, text = build(family)
    images = [Image.new("RGB", (56, 56), (200, 40, 40)), Image.new("RGB", (56, 56), (40, 40, 200))]
    inputs = processor(images=[[images[0]], [images[1]]], text=[text, "hello " + text], padding=True,
                       return_tensors="pt")
    token_id = resolve_image_token_id(model.config, processor)
    mask = image_token_mask(inputs["input_ids"], token_id)
    truth = positions_overwritten_by_vision(model, dict(inputs))
    assert mask.sum(1).min() > 1, "the processor expands one marker into several placeholder tokens"
    assert torch.equal(mask, truth)


def test_gemma3_uses_the_soft_token_not_the_processors_boi_token():
    model, processor, _ = build("gemma3")
    assert processor.image_token_id == processor.tokenizer.convert_tokens_to_ids("<start_of_image>")
    assert resolve_image_token_id(model.config, processor) == processor.tokenizer.convert_tokens_to_ids(
        "<image_soft_token>"
    )


def test_override_and_fallbacks():
    tokenizer = word_tokenizer(["<my_image>"])
    my_id = tokenizer.convert_tokens_to_ids("<my_image>")

    class Config:  # no image token in the config
        pass

    class Processor:
        def __init__(self, **attributes):
            self.tokenizer = tokenizer
            self.__dict__.update(attributes)

    assert resolve_image_token_id(Config(), Processor(), override="<my_image>") == my_id
    assert resolve_image_token_id(Config(), Processor(), override=7) == 7
    assert resolve_image_token_id(Config(), Processor(image_token_id=my_id)) == my_id
    assert resolve_image_token_id(Config(), Processor(image_token="<my_image>")) == my_id
    assert resolve_image_token_id(Config(), tokenizer) is None  # a text-only model
    with pytest.raises(ValueError, match="not a token"):
        resolve_image_token_id(Config(), Processor(), override="<nope>")
    assert not image_token_mask(torch.tensor([[1, 2]]), None).any()
