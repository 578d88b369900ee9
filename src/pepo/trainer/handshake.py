"""How PEPO's token weights reach TRL's loss, checked on every loss (docs/reliability.md).

TRL's ``GRPOTrainer._compute_loss(model, inputs)`` (TRL 1.16) does, in this order::

    (a) logps, entropies, aux = self._get_per_token_logps_and_entropies(model, ..., compute_entropy=True)
    (b) advantages = inputs["advantages"]                      # (B,), or (B, T) from a subclass
    (c) per_token_loss = -min(r * advantages, clip(r) * advantages) ... aggregated

verl passes token-level advantages to its policy loss as an argument. TRL's loss has no such argument,
and PEPO's weights need the entropies and hidden states of (a), the loss's own policy forward: they can
only be made during (a), and must be in ``inputs`` before (b). The whole path:

1. ``PEPOTrainer.compute_loss`` opens the loss (:meth:`WeightHandshake.loss`): a copy of the batch,
   :class:`LossInputs`, goes to TRL's loss in place of the batch.
2. In (a), ``PEPOTrainer._get_per_token_logps_and_entropies`` takes the open loss's inputs
   (:meth:`WeightHandshake.take`: only the first call asking for entropies while a loss is open; the
   reference model's and old log-probs' forwards ask for none), checks what TRL's forward returned
   (:meth:`WeightHandshake.entropies_of`), writes ``inputs["advantages"] = A_b * m[b, t]`` and says
   so (:meth:`WeightHandshake.delivered`).
3. TRL reads ``inputs["advantages"]`` in (b); :class:`LossInputs` counts the reads.
4. When TRL's loss returns, the handshake raises :class:`TRLContractError` (one line naming the TRL
   version and what changed) unless step 2 ran exactly once, and TRL read the advantages not before
   step 2 and at least once after it (pepo's own reads inside step 2 do not count). A TRL that stops asking for entropies there, calls another method, copies the inputs, reads the
   advantages before the forward or returns something else thus stops the run: it never trains the
   base algorithm under PEPO's name. (With ``weighting="none"`` and ``log_signals`` nothing is
   written: step 2 must still run once, for the curves.)

The signatures of the methods involved are checked once, when a trainer is built, with every other
``GRPOTrainer`` method pepo overrides (:data:`pepo.versions.TRL_OVERRIDES`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import trl

TRL_WRITTEN_FOR = "1.16"
ADVANTAGES = "advantages"


class TRLContractError(RuntimeError):
    """The installed TRL no longer does what pepo's overrides rely on; the message is one line."""

    def __init__(self, what_changed: str):
        super().__init__(
            f"pepo was written for TRL {TRL_WRITTEN_FOR}, installed is TRL {trl.__version__}: {what_changed}. "
            f"PEPO's token weights would not reach the loss (the run would be the base algorithm): "
            f"install trl=={TRL_WRITTEN_FOR}.* or a pepo written for this TRL."
        )


class LossInputs(dict):
    """One loss's batch as TRL's loss sees it: a shallow copy that records, for ``"advantages"``, whether
    it was written and how often it was read."""

    def __init__(self, inputs: dict[str, Any]):
        super().__init__(inputs)
        self.written = False
        self.reads = 0

    def _count_read(self, key: str) -> None:
        if key == ADVANTAGES:
            self.reads += 1

    def __getitem__(self, key):
        self._count_read(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._count_read(key)
        return super().get(key, default)

    def __setitem__(self, key, value) -> None:
        if key == ADVANTAGES:
            self.written = True
        super().__setitem__(key, value)


class WeightHandshake:
    """The open loss of a trainer and the checks of its handshake with TRL (module docstring)."""

    def __init__(self) -> None:
        self._open: LossInputs | None = None
        self._forwards = 0  # calls asking for entropies while the loss is open
        self._reads_before_forward = 0  # reads of the advantages before the policy forward took them
        self._reads_when_delivered: int | None = None  # ... and when it had made them (None: not yet)

    @contextmanager
    def loss(self, inputs: dict[str, Any], writes_advantages: bool) -> Iterator[LossInputs]:
        """Open a loss on a copy of ``inputs`` (step 1); on leaving, raise unless steps 2 and 3 happened."""
        if self._open is not None:
            raise RuntimeError("PEPOTrainer: a loss was opened inside another one")
        loss_inputs = LossInputs(inputs)
        self._open, self._forwards, self._reads_before_forward, self._reads_when_delivered = loss_inputs, 0, 0, None
        try:
            yield loss_inputs
        finally:
            self._open = None
        self._check(loss_inputs, writes_advantages)

    def take(self, compute_entropy: bool) -> LossInputs | None:
        """The open loss's inputs if this forward is the loss's policy forward (step 2), else ``None``."""
        if self._open is None or not compute_entropy:
            return None
        self._forwards += 1
        if self._forwards > 1:
            return None
        self._reads_before_forward = self._open.reads  # TRL's; the forward's own reads come after
        return self._open

    def delivered(self, loss_inputs: LossInputs) -> None:
        """End of step 2: the forward has written the advantages (or, under ``log_signals``, logged)."""
        self._reads_when_delivered = loss_inputs.reads

    @staticmethod
    def entropies_of(out: Any, rows: int, logits_to_keep: int) -> torch.Tensor:
        """The ``(B, T)`` entropies of what TRL's forward returned, ``(logps, entropies, aux_loss)``."""
        shape = (rows, logits_to_keep)
        if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[1], torch.Tensor) and out[1].shape == shape):
            described = (f"a {len(out)}-tuple of {[type(x).__name__ for x in out]}"
                         if isinstance(out, tuple) else type(out).__name__)
            raise TRLContractError(
                f"GRPOTrainer._get_per_token_logps_and_entropies(compute_entropy=True) returned {described}, "
                f"not (logps, entropies {shape}, aux_loss)"
            )
        return out[1]

    def _check(self, loss_inputs: LossInputs, writes_advantages: bool) -> None:
        if self._forwards != 1 or self._reads_when_delivered is None:
            raise TRLContractError(
                f"GRPOTrainer._compute_loss called _get_per_token_logps_and_entropies with compute_entropy=True "
                f"{self._forwards} times, not once (its policy forward)"
            )
        if not writes_advantages:
            return
        if not loss_inputs.written:
            raise TRLContractError("the token weights were not written during GRPOTrainer._compute_loss's policy forward")
        reads_after = loss_inputs.reads - self._reads_when_delivered  # TRL's, after the forward returned
        if self._reads_before_forward or not reads_after:
            raise TRLContractError(
                f"GRPOTrainer._compute_loss read inputs['advantages'] {self._reads_before_forward} times before its "
                f"policy forward and {reads_after} times after it (pepo needs 0 and >= 1)"
            )
