"""Hidden states out of the policy forward that TRL already runs (no second forward), reduced as
they are computed.

TRL 1.16 scores completions with a fused LM head (``model(..., fused_lm_head=True)``) that returns
log-probs and entropies only: no logits and no hidden states, whatever ``output_hidden_states``
says. While a :class:`HiddenStateCapture` is active, hooks on the language model hand each of the
``L + 1`` tensors that ``output_hidden_states=True`` would return (the input of the first decoder
layer, the output of every decoder layer but the last, then the language model's final-norm output
``last_hidden_state``) to a callback the moment it exists, and keep none of them. So PEPO never
holds the ``L + 1`` tensors at once: in bf16 without activation checkpointing autograd keeps only
float32 copies of the layer inputs (inside the RMSNorms), and holding the bf16 ones to the end of
the forward would add about ``(L + 1) * B * S * D * 2`` bytes to the step's peak memory.

Models whose language model has no ``layers`` list fall back to ``output_hidden_states=True`` and
hand over the returned tuple at the end of the forward. Nothing is recomputed either way: with
activation checkpointing the layers re-run in backward, after the hooks are gone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pepo.core.perception import SharedPrefixHidden
from pepo.modeling import is_peft_model


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
    """Context manager: during every forward of ``language_model`` inside it, call ``on_forward()``
    first, then ``on_hidden(h)`` for each of the ``L + 1`` detached ``(B_chunk, S, D)`` hidden states
    in order, as soon as each is computed (TRL may score a batch in chunks: one forward per chunk).
    """

    def __init__(
        self,
        language_model: nn.Module,
        on_forward: Callable[[], None],
        on_hidden: Callable[[torch.Tensor], None],
    ):
        self.language_model = language_model
        self.on_forward = on_forward
        self.on_hidden = on_hidden
        self._handles: list = []

    # -- per-layer hooks (decoder models with a ``layers`` list: every family transformers ships) --

    def _start(self, module, args, kwargs):
        self.on_forward()

    def _first_layer_input(self, module, args, kwargs):
        self.on_hidden((args[0] if args else kwargs["hidden_states"]).detach())

    def _layer_output(self, module, args, output):
        self.on_hidden((output[0] if isinstance(output, tuple) else output).detach())

    def _last_hidden_state(self, module, args, output):
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.on_hidden(hidden.detach())

    # -- fallback: the tuple of output_hidden_states, at the end of the forward --

    @staticmethod
    def _request_hidden_states(module, args, kwargs):
        kwargs["output_hidden_states"] = True
        return args, kwargs

    def _all_hidden_states(self, module, args, output):
        hidden_states = getattr(output, "hidden_states", None)
        if hidden_states is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no hidden_states although output_hidden_states=True was passed"
            )
        for hidden in hidden_states:
            self.on_hidden(hidden.detach())

    def __enter__(self) -> HiddenStateCapture:
        lm = self.language_model
        layers = getattr(lm, "layers", None)
        hooks = [lm.register_forward_pre_hook(self._start, with_kwargs=True)]
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            hooks.append(layers[0].register_forward_pre_hook(self._first_layer_input, with_kwargs=True))
            # output_hidden_states replaces the last layer's output by the final-norm output (last_hidden_state)
            # unless the config says tie_last_hidden_states=False
            tie_last = getattr(getattr(lm, "config", None), "tie_last_hidden_states", None) is not False
            hooks += [layer.register_forward_hook(self._layer_output) for layer in (layers[:-1] if tie_last else layers)]
            if tie_last:
                hooks.append(lm.register_forward_hook(self._last_hidden_state))
        else:
            hooks.append(lm.register_forward_pre_hook(self._request_hidden_states, with_kwargs=True))
            hooks.append(lm.register_forward_hook(self._all_hidden_states))
        self._handles = hooks
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class PromptJoin:
    """Between :class:`pepo.prompt_sharing.SharedPromptForward` and a :class:`HiddenStateCapture`
    reader: the shared forward runs the language model twice (the distinct prompts, then every row's
    continuation on their cache), and the reader expects the plain forward's ``(B, S, D)`` hidden
    states. Give :meth:`prefix` to the shared forward as ``on_prefix`` and :meth:`on_forward` /
    :meth:`on_hidden` to the capture: the prompts' ``L + 1`` hidden states ``(U, P - 1, D)`` are
    held, and each of the continuation's ``(B, 1 + C, D)`` goes on joined to its row's prompt as a
    :class:`~pepo.core.perception.SharedPrefixHidden` (``cat(prompt[inverse], continuation)`` without
    the copy: ``.joined()`` builds it). Forwards not announced by :meth:`prefix` pass through."""

    def __init__(self, on_forward: Callable[[], None], on_hidden: Callable[[torch.Tensor], None]):
        self._on_forward, self._on_hidden = on_forward, on_hidden
        self._state = "plain"  # plain -> announced -> prompts -> joining -> plain
        self._inverse: torch.Tensor | None = None
        self._held: list[torch.Tensor] = []

    def prefix(self, inverse: torch.Tensor) -> None:
        self._state, self._inverse, self._held = "announced", inverse, []

    def on_forward(self) -> None:
        if self._state == "announced":
            self._state = "prompts"
            return
        if self._state == "prompts":
            self._state = "joining"
        self._on_forward()

    def on_hidden(self, hidden: torch.Tensor) -> None:
        if self._state == "prompts":
            self._held.append(hidden)
        elif self._state == "joining":
            # the joined tensor in its two parts: the reader takes the positions it needs (no (B, S, D) copy)
            self._on_hidden(SharedPrefixHidden(self._held.pop(0), self._inverse, hidden))
            if not self._held:
                self._state, self._inverse = "plain", None
        else:
            self._on_hidden(hidden)
