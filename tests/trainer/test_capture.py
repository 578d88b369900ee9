"""HiddenStateCapture hands over exactly what ``output_hidden_states=True`` returns, one tensor at a
time while the forward runs (so none has to be kept), for every family PEPO supports."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pepo.core import PerceptionAccumulator, perception_scores
from pepo.trainer.capture import HiddenStateCapture, language_model_of
from pepo.image_tokens import image_token_mask, resolve_image_token_id

from .families import TINY_BUILDERS, build


def family_inputs(family):
    model, processor, text = build(family)
    images = [Image.new("RGB", (56, 56), (200, 40, 40)), Image.new("RGB", (56, 56), (40, 40, 200))]
    inputs = processor(images=[[images[0]], [images[1]]], text=[text, "hello " + text], padding=True,
                       return_tensors="pt")
    return model, processor, dict(inputs)


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_streamed_hidden_states_are_output_hidden_states_bit_for_bit(family):
    model, processor, inputs = family_inputs(family)
    language_model = language_model_of(model)
    events = []  # "forward", ("hidden", tensor) and "last layer ran", in the order they happen
    modules = (language_model, *language_model.layers)
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in modules]
    handle = language_model.layers[-1].register_forward_hook(lambda *a: events.append("last layer ran"))
    with torch.no_grad(), HiddenStateCapture(language_model, lambda: events.append("forward"),
                                             lambda h: events.append(("hidden", h))):
        model(**inputs)
    handle.remove()
    hooks_after = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in modules]
    with torch.no_grad():
        expected = model(**inputs, output_hidden_states=True).hidden_states

    assert events[0] == "forward" and events.count("forward") == 1
    streamed = [e[1] for e in events if isinstance(e, tuple)]
    assert len(streamed) == len(expected) == language_model.config.num_hidden_layers + 1
    for got, want in zip(streamed, expected):
        assert torch.equal(got, want)
    # streamed, not collected: all but the final-norm output arrive before the last decoder layer runs
    assert events.index("last layer ran") == len(events) - 2
    assert hooks_after == hooks_before, "the context must remove its hooks"


def test_trainer_style_accumulation_matches_perception_scores_on_the_tuple():
    model, processor, inputs = family_inputs("qwen2_5_vl")
    vision_mask = image_token_mask(inputs["input_ids"], resolve_image_token_id(model.config, processor))
    T = 3
    accumulators = []
    with torch.no_grad(), HiddenStateCapture(
        language_model_of(model),
        lambda: accumulators.append(PerceptionAccumulator(vision_mask, T)),
        lambda h: accumulators[-1].add(h),
    ):
        model(**inputs)
    with torch.no_grad():
        expected = perception_scores(model(**inputs, output_hidden_states=True).hidden_states, vision_mask, T)
    assert len(accumulators) == 1
    assert torch.equal(accumulators[0].result(), expected)


def test_a_shared_prompt_forward_is_seen_as_the_plain_forward(tiny_vlm_path):
    """PromptJoin hands over the plain forward's hidden states from a SharedPromptForward's two passes."""
    from trl.trainer.utils import add_fused_lm_head

    from pepo.modeling import load_model_and_processor
    from pepo.prompt_sharing import SharedPromptForward
    from pepo.trainer.capture import PromptJoin

    from ..test_prompt_sharing import grpo_batch

    model, processor = load_model_and_processor(tiny_vlm_path)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    inputs, labels, C, _ = grpo_batch(processor)
    language_model = language_model_of(model)
    seen = {"plain": [], "shared": []}
    for name in seen:
        events = seen[name]
        join = PromptJoin(lambda: events.append("forward"), lambda h: events.append(h))
        call = model if name == "plain" else SharedPromptForward(model, model.model, C, model.config.image_token_id,
                                                                  on_prefix=join.prefix)
        with torch.no_grad(), HiddenStateCapture(language_model, join.on_forward, join.on_hidden):
            call(**inputs, labels=labels, fused_lm_head=True)
    layers = len(language_model.layers) + 1
    assert seen["shared"][0] == "forward" and seen["shared"].count("forward") == 1 and len(seen["shared"]) == 1 + layers
    real = inputs["attention_mask"].bool()  # padding positions attend to nothing: their values are not compared
    for plain, shared in zip(seen["plain"][1:], seen["shared"][1:]):
        shared = shared.joined()  # handed over in its two parts
        assert shared.shape == plain.shape
        torch.testing.assert_close(shared[real], plain[real], rtol=1e-5, atol=1e-5)
