"""Per-token signals of sampled responses: what PEPO computes during training, recorded for analysis.

For one response ``r`` to a prompt ``p`` with images, one teacher-forced forward of ``p + r`` with
``output_hidden_states=True`` gives, for every response token (``docs/method.md``, Perception prior to Token weights):

* the visual similarity under every measure (``pepo.core.perception_scores``),
* the entropy at the sampling temperature (``pepo.core.token_entropy``, from the logits that
  predicted the token),
* the PEPO weight (``pepo.core.token_weights``),

and one more forward of ``p' + r``, ``p'`` being the prompt with its images removed, gives the
hidden-state shift of paper Figure 3: per response token, the mean over decoder layers
``l = 1..L`` of ``||H^l_with - H^l_without||_2`` and of ``1 - cos(H^l_with, H^l_without)``. Layer 0
(the embedding output) is left out: a response token's embedding does not depend on the prompt, so
it would only add a zero.

Reference: Li, Kuang et al., "Perception-Exploration Policy Optimization", arXiv 2603.22847
(2026), Figures 2, 3 and 6; this package is not in the public release.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pepo.core import PERCEPTION_MEASURES, perception_scores, token_entropy, token_weights
from pepo.core.perception import NORM_EPS
from pepo.image_tokens import image_token_mask

__all__ = ["ResponseTokens", "hidden_state_shift", "prompt_without_images", "response_signals", "run_response"]


@dataclass
class ResponseTokens:
    """One sampled response and its per-token signals (arrays of length ``T``)."""

    question_id: str
    sample: int
    correct: bool
    answer: str
    token_ids: list[int]
    tokens: list[str]
    similarity: dict[str, np.ndarray]  # measure -> (T,)
    entropy: np.ndarray
    weight: np.ndarray
    shift_l2: np.ndarray | None = None
    shift_cos: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_ids)


@torch.no_grad()
def response_signals(
    hidden_states: Sequence[torch.Tensor],
    completion_logits: torch.Tensor,
    vision_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    gate_alpha: float = 0.05,
    gate_temperature: float = 1.0,
    weighting: str = "pepo",
    measure: str = "cosine",
    measures: Sequence[str] = PERCEPTION_MEASURES,
) -> dict[str, np.ndarray]:
    """Per-token signals of the last ``T`` positions of one row.

    Args:
        hidden_states: ``L + 1`` tensors ``(1, S, D)`` of the forward of prompt + response.
        completion_logits: ``(1, T, V)`` logits that predicted the ``T`` response tokens (the logits
            at positions ``S - T - 1 .. S - 2``).
        vision_mask: ``(1, S)`` bool, True on image-placeholder tokens.
        temperature: the sampling temperature (entropy of the distribution actually sampled from).
        gate_alpha, gate_temperature, weighting: the PEPO weight settings (``docs/method.md``, Token weights).
        measure: the similarity measure the weights use.
        measures: every measure to record.

    Returns:
        ``{"similarity/<measure>": (T,), "entropy": (T,), "weight": (T,)}`` float32 arrays.
    """
    T = completion_logits.shape[1]
    out: dict[str, np.ndarray] = {}
    scores = {}
    for name in dict.fromkeys([measure, *measures]):
        scores[name] = perception_scores(hidden_states, vision_mask, T, measure=name)  # (1, T)
        out[f"similarity/{name}"] = scores[name][0].cpu().numpy()
    entropy = token_entropy(completion_logits, temperature=temperature)  # (1, T)
    mask = torch.ones(1, T, dtype=torch.bool, device=entropy.device)
    weight = token_weights(
        scores[measure].to(entropy.device), entropy, mask, gate_alpha, gate_temperature, weighting,
        has_image=vision_mask.any(1).to(entropy.device),
    )
    out["entropy"] = entropy[0].cpu().numpy()
    out["weight"] = weight[0].cpu().numpy()
    return out


@torch.no_grad()
def hidden_state_shift(
    with_image: Sequence[torch.Tensor], without_image: Sequence[torch.Tensor], response_length: int
) -> dict[str, np.ndarray]:
    """``{"shift_l2": (T,), "shift_cos": (T,)}``: per response token, the mean over decoder layers
    ``1..L`` of the L2 distance and of the cosine distance between its hidden states with and
    without the image. Both inputs are ``L + 1`` tensors ``(1, S_*, D)`` whose last ``T``
    positions are the same response tokens (the prompts may differ in length)."""
    if len(with_image) != len(without_image):
        raise ValueError(f"hidden_state_shift: {len(with_image)} vs {len(without_image)} hidden-state tensors")
    if len(with_image) < 2:
        raise ValueError("hidden_state_shift: need the embedding output and at least one decoder layer")
    T = int(response_length)
    l2 = torch.zeros(T, dtype=torch.float32)
    cos = torch.zeros(T, dtype=torch.float32)
    for a, b in zip(with_image[1:], without_image[1:]):
        x, y = a[0, -T:].float().cpu(), b[0, -T:].float().cpu()
        l2 += torch.linalg.vector_norm(x - y, dim=-1)
        cos += 1.0 - torch.nn.functional.cosine_similarity(x, y, dim=-1, eps=NORM_EPS)
    layers = len(with_image) - 1
    return {"shift_l2": (l2 / layers).numpy(), "shift_cos": (cos / layers).numpy()}


def prompt_without_images(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with every image item removed (a string content is left as it is)."""
    prompt = copy.deepcopy(prompt)
    for message in prompt:
        if isinstance(message.get("content"), list):
            message["content"] = [item for item in message["content"] if item.get("type") != "image"]
    return prompt


def _with_response(inputs: dict[str, torch.Tensor], response_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Append the response to a one-row processor output: ids, an attention mask of ones, and zeros
    for the token types (``mm_token_type_ids`` / ``token_type_ids``: text). Image tensors
    (``pixel_values``, ``image_grid_thw``, ...) stay as they are."""
    S = inputs["input_ids"].shape[1]
    out = dict(inputs)
    for key, value in inputs.items():
        if key not in ("input_ids", "attention_mask") and not key.endswith("token_type_ids"):
            continue
        if not (isinstance(value, torch.Tensor) and value.shape == (1, S)):
            raise ValueError(f"{key}: expected a (1, {S}) tensor for one row, got {getattr(value, 'shape', type(value))}")
        if key == "input_ids":
            tail = response_ids.to(value)
        elif key == "attention_mask":
            tail = torch.ones_like(response_ids, dtype=value.dtype)
        else:
            tail = torch.zeros_like(response_ids, dtype=value.dtype)
        out[key] = torch.cat([value, tail.view(1, -1).to(value.device)], dim=1)
    return out


def _forward(model, inputs: dict[str, torch.Tensor], T: int):
    inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    try:  # only the logits that predict the response: (1, T + 1, V) instead of (1, S, V)
        return model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=T + 1)
    except TypeError:  # a model whose forward has no logits_to_keep
        return model(**inputs, output_hidden_states=True, use_cache=False)


@torch.no_grad()
def run_response(
    model,
    processor,
    prompt: list[dict[str, Any]],
    images: list,
    response_ids: Sequence[int],
    image_token_id: int | None,
    *,
    render,
    with_shift: bool = True,
    **settings,
) -> dict[str, np.ndarray]:
    """Forward ``prompt + response`` (and, with ``with_shift``, the same without the images) and
    return :func:`response_signals` plus :func:`hidden_state_shift` for the response tokens.

    ``render(processor, prompt) -> str`` renders a conversation with the model's chat template
    (:func:`pepo.data.render_prompt`); ``settings`` go to :func:`response_signals`.
    """
    T = len(response_ids)
    if T == 0:
        raise ValueError("run_response: empty response")
    response = torch.tensor(list(response_ids), dtype=torch.long)
    inputs = processor(text=[render(processor, prompt)], images=images or None, return_tensors="pt")
    inputs = _with_response(dict(inputs), response)
    out = _forward(model, inputs, T)
    completion_logits = out.logits[:, -(T + 1) : -1]
    vision_mask = image_token_mask(inputs["input_ids"], image_token_id).to(out.logits.device)
    signals = response_signals(out.hidden_states, completion_logits, vision_mask, **settings)
    if with_shift:
        bare = processor(text=[render(processor, prompt_without_images(prompt))], images=None, return_tensors="pt")
        bare_out = _forward(model, _with_response(dict(bare), response), T)
        signals |= hidden_state_shift(out.hidden_states, bare_out.hidden_states, T)
        del bare_out
    return signals
