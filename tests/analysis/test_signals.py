"""Per-token signals on constructed hidden states and logits where the answer is known."""

import math

import numpy as np
import pytest
import torch

from pepo.analysis.signals import _with_response, hidden_state_shift, prompt_without_images, response_signals
from pepo.analysis.tables import top_k_indices

P, T, D, LAYERS = 6, 5, 8, 3  # prompt length, response length, hidden size, L + 1
IMAGE = [1, 2, 3]  # image-placeholder positions in the prompt
COPIES = [1, 3]  # response tokens whose hidden states are copies of the image tokens


def _constructed_hidden_states(seed=0):
    """Every image token holds the same vector u_l in layer l; response tokens 1 and 3 are copies
    of it (token 3 scaled by 2: the cosine stays 1), the other response tokens are orthogonal to u_l."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(LAYERS):
        h = torch.randn(1, P + T, D, generator=g)
        u = torch.randn(D, generator=g)
        h[0, IMAGE] = u
        unit = u / u.norm()
        for t in range(T):
            s = P + t
            if t in COPIES:
                h[0, s] = u * (2.0 if t == 3 else 1.0)
            else:
                h[0, s] -= (h[0, s] @ unit) * unit  # orthogonal to every image token: cosine 0
        layers.append(h)
    vision = torch.zeros(1, P + T, dtype=torch.bool)
    vision[0, IMAGE] = True
    return tuple(layers), vision


def test_copies_of_image_tokens_have_similarity_one_and_are_the_top_k():
    hidden, vision = _constructed_hidden_states()
    logits = torch.zeros(1, T, 11)  # uniform: entropy log 11 at every position
    out = response_signals(hidden, logits, vision, measure="cosine")
    np.testing.assert_allclose(out["similarity/cosine"], [0, 1, 0, 1, 0], atol=1e-6)
    assert sorted(top_k_indices(out["similarity/cosine"], 2).tolist()) == COPIES
    # l2: the copy at t = 1 is at distance 0 from every image token in every layer: -sqrt(0 + 1e-6)
    assert out["similarity/l2"][1] == pytest.approx(-1e-3, abs=1e-5)
    assert set(top_k_indices(out["similarity/l2"], 1).tolist()) == {1}
    assert set(out) == {"similarity/cosine", "similarity/dot", "similarity/l2", "similarity/l1", "entropy", "weight"}
    np.testing.assert_allclose(out["entropy"], math.log(11), atol=1e-6)
    assert out["weight"].mean() == pytest.approx(1.0, abs=1e-6)
    assert out["weight"][COPIES].min() > out["weight"][[0, 2, 4]].max()


def test_weights_use_the_chosen_mode_and_temperature():
    hidden, vision = _constructed_hidden_states(seed=1)
    out = response_signals(hidden, torch.zeros(1, T, 7), vision, weighting="perception", gate_temperature=1.0)
    # perception mode, tau = 1: w = 5 softmax(v) with v = [0, 1, 0, 1, 0]:
    # w = 5 / (3 + 2e) = 0.5926583... off the copies, 5e / (3 + 2e) = 1.6110124... on them
    np.testing.assert_allclose(out["weight"], [0.5926584, 1.6110125, 0.5926584, 1.6110125, 0.5926584], atol=2e-6)


def test_entropy_is_taken_at_the_sampling_temperature():
    hidden, vision = _constructed_hidden_states()
    logits = torch.zeros(1, T, 4)
    logits[0, :, 0] = 2.0
    # temperature 2: scaled logits [1, 0, 0, 0]: p1 = e / (e + 3), others 1 / (e + 3)
    p1, p0 = math.e / (math.e + 3), 1 / (math.e + 3)
    expected = -(p1 * math.log(p1) + 3 * p0 * math.log(p0))  # 1.1944...
    out = response_signals(hidden, logits, vision, temperature=2.0)
    np.testing.assert_allclose(out["entropy"], expected, atol=1e-6)


def test_row_without_image_gets_unit_weights():
    hidden, vision = _constructed_hidden_states()
    out = response_signals(hidden, torch.randn(1, T, 9), torch.zeros_like(vision))
    np.testing.assert_allclose(out["similarity/cosine"], 0.0)
    np.testing.assert_allclose(out["weight"], 1.0, atol=1e-6)


def test_hidden_state_shift_known_perturbation():
    # with the image: response token 2 holds 4 e0 in every layer; without: 4 e0 + 3 e1
    # -> ||delta|| = 3, cos = 4 / 5, so shift_l2 = 3 and shift_cos = 0.2 there, 0 elsewhere.
    # The prompt without the image is shorter (4 vs 9 positions): only the last T positions count.
    # Layer 0 is perturbed too but left out of the mean (a response embedding ignores the prompt).
    g = torch.Generator().manual_seed(0)
    e0, e1 = torch.eye(D)[0], torch.eye(D)[1]
    with_image, without_image = [], []
    for layer in range(LAYERS):
        response = torch.randn(T, D, generator=g)
        response[2] = 4 * e0
        a = torch.cat([torch.randn(9, D, generator=g), response]).unsqueeze(0)
        moved = response.clone()
        moved[2] = 4 * e0 + 3 * e1
        if layer == 0:
            moved += 100.0
        b = torch.cat([torch.randn(4, D, generator=g), moved]).unsqueeze(0)
        with_image.append(a)
        without_image.append(b)
    out = hidden_state_shift(with_image, without_image, T)
    np.testing.assert_allclose(out["shift_l2"], [0, 0, 3, 0, 0], atol=1e-5)
    np.testing.assert_allclose(out["shift_cos"], [0, 0, 0.2, 0, 0], atol=1e-6)


def test_hidden_state_shift_checks_layer_counts():
    with pytest.raises(ValueError, match="hidden-state tensors"):
        hidden_state_shift([torch.zeros(1, 3, 2)] * 3, [torch.zeros(1, 3, 2)] * 2, 1)


def test_prompt_without_images_keeps_the_text():
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour ?"}]}]
    bare = prompt_without_images(prompt)
    assert bare == [{"role": "user", "content": [{"type": "text", "text": "What colour ?"}]}]
    assert prompt[0]["content"][0] == {"type": "image"}  # the input is not modified


def test_with_response_extends_every_per_position_tensor():
    inputs = {
        "input_ids": torch.tensor([[5, 9, 9, 6]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "mm_token_type_ids": torch.tensor([[0, 1, 1, 0]]), "pixel_values": torch.randn(8, 3),
        "image_grid_thw": torch.tensor([[1, 2, 2, 4]]),  # shaped like the ids by chance: still left alone
    }
    out = _with_response(inputs, torch.tensor([7, 8]))
    assert out["input_ids"].tolist() == [[5, 9, 9, 6, 7, 8]]
    assert out["attention_mask"].tolist() == [[1] * 6]
    assert out["mm_token_type_ids"].tolist() == [[0, 1, 1, 0, 0, 0]]
    assert out["pixel_values"] is inputs["pixel_values"] and out["image_grid_thw"] is inputs["image_grid_thw"]
