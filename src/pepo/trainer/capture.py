"""Hidden states out of the policy forward that TRL already runs (no second forward).

TRL 1.16 scores completions with a fused LM head (``model(..., fused_lm_head=True)``) that returns
log-probs and entropies only: no logits and no hidden states, whatever ``output_hidden_states``
says. The language model inside still knows how to return them, so while a
:class:`HiddenStateCapture` is active a forward pre-hook on it asks for ``output_hidden_states=True``
and a forward hook keeps its ``hidden_states`` (embedding output plus every decoder layer, what
``output_hidden_states`` gives). Nothing is recomputed: with gradient checkpointing the layers are
re-run in backward, but the language model's own forward (where the hooks sit) runs once.
"""

from __future__ import annotations

import torch
from accelerate.utils import is_peft_model
from torch import nn


def language_model_of(model: nn.Module) -> nn.Module:
    """The decoder-only language model inside a (possibly PEFT- or DDP-wrapped) VLM."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / DeepSpeed wrappers
        model = model.module
    if is_peft_model(model):
        model = model.get_base_model()
    try:
        return model.get_decoder()
    except (AttributeError, ValueError) as err:
        raise ValueError(
            f"{type(model).__name__} exposes no language model through get_decoder(); PEPO needs it to read the "
            "hidden states of the policy forward"
        ) from err


class HiddenStateCapture:
    """Context manager: every forward of ``language_model`` inside it appends its hidden states.

    ``self.hidden_states`` is a list with one entry per forward call (TRL may score a batch in
    chunks), each a tuple of ``L + 1`` detached ``(B_chunk, S, D)`` tensors.
    """

    def __init__(self, language_model: nn.Module):
        self.language_model = language_model
        self.hidden_states: list[tuple[torch.Tensor, ...]] = []
        self._handles: list = []

    @staticmethod
    def _request_hidden_states(module, args, kwargs):
        kwargs["output_hidden_states"] = True
        return args, kwargs

    def _keep_hidden_states(self, module, args, output):
        hidden_states = getattr(output, "hidden_states", None)
        if hidden_states is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no hidden_states although output_hidden_states=True was passed"
            )
        self.hidden_states.append(tuple(h.detach() for h in hidden_states))

    def __enter__(self) -> HiddenStateCapture:
        self._handles = [
            self.language_model.register_forward_pre_hook(self._request_hidden_states, with_kwargs=True),
            self.language_model.register_forward_hook(self._keep_hidden_states),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
