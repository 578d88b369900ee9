"""``PEPOTrainer``: TRL's ``GRPOTrainer`` with PEPO's token-level advantages (``docs/method.md``, Token weights to Base algorithms).

What happens in one micro-step of the loss (``compute_loss``):

0. The weighting mode's registration (:class:`~pepo.core.weights.WeightingMode`) says what it needs:
   the perception prior (so the hooks below run), the entropies, and whether rows without an image
   keep weight 1. Nothing here names a mode.
1. TRL runs the policy forward once, through its fused LM head, for the log-probs and entropies.
   During that same call (and only that one: not the reference model, not the old log-probs)
   :class:`~pepo.trainer.capture.HiddenStateCapture` hands each hidden state, as the language model
   computes it, to a :class:`~pepo.core.PerceptionAccumulator`, which reduces it at once (under
   no-grad, in float32) and keeps nothing: ``v`` is ``perception_scores(hidden states, image-token
   mask)`` bit for bit, without holding the ``L + 1`` tensors.
2. Under no-grad, in float32: ``w = token_weights(v, entropy, loss mask)``, ``m = (1 - lambda) + lambda * w``.
3. The advantages handed to TRL's loss become per-token, ``A[b, t] = A_b * m[b, t]``, written into
   the loss's inputs during that forward, before TRL reads them. TRL's loss takes no token-level
   advantages argument (verl's does), so this is a checked handshake (:mod:`pepo.trainer.handshake`):
   when TRL's loss returns, a loss whose weights were not made in its policy forward, or whose
   advantages TRL read elsewhere, raises ``TRLContractError`` (one line naming the TRL version)
   instead of training the base algorithm. TRL's
   clipped surrogate is ``-min(r A, clip(r) A)``; for ``m >= 0`` that is exactly
   ``m * -min(r A_b, clip(r) A_b)``, i.e. the multiplier on the clipped per-token policy loss. The
   KL term is added afterwards, from the reference log-probs, and is not weighted. Every
   aggregation (``grpo``, ``bnpo``, ``dr_grpo``, ``dapo``), gradient accumulation and gradient
   checkpointing are TRL's own code, unchanged.

``m`` is a constant for the optimiser. The public release does not detach it; at on-policy the
gradient through it is exactly zero anyway (``sum_t w = N_b`` for every parameter value), so
detaching only saves backward work.

TRL methods overridden (each the narrowest place that sees what PEPO needs):

* ``compute_loss``: opens the handshake on a copy of the inputs and checks it when TRL's loss returns.
* ``_get_per_token_logps_and_entropies``: the loss's policy forward (the one call asking for entropies
  while a loss is open) runs TRL's forward under the hidden-state hooks and turns its entropies plus
  the captured hidden states into per-token advantages. With
  ``share_prompts`` (default) TRL's forward is handed a :class:`~pepo.prompt_sharing.SharedPromptForward`
  for the model: each group's prompt runs once and the completions continue from its cache; the
  hooks see its two passes joined into the plain forward's hidden states
  (:class:`~pepo.trainer.capture.PromptJoin`). Generation shares the prompts' prefill the same way
  (:func:`~pepo.prompt_sharing.share_prompt_prefill`, on the model's ``generate``).
* ``_calculate_rewards`` / ``_generate_and_score_completions``: DAPO dynamic sampling
  (TRL 1.16 has none), only when ``dynamic_sampling=True``.
* ``_generate_and_score_completions`` / ``_compute_loss`` / ``_get_per_token_logps_and_entropies``
  also pass through :class:`~pepo.trainer.perception_aware.PerceptionAwareMixin` (PAPO, VPPO; only
  when ``perception_aware`` is set).
* ``training_step`` / ``log``: PEPO's own time per optimiser step (``pepo/time_s``) and its share of
  the step (``pepo/time_share``), timed with CUDA events read only when metrics are logged: no host
  synchronisation in the step (:mod:`pepo.trainer.clock`). PEPO's other metrics are recorded on the
  device per micro-step and reduced and gathered once when TRL logs (:mod:`pepo.trainer.device_metrics`);
  ``on_nonfinite="error"`` reads one flag back after the last micro-step of each optimiser step
  (``tests/trainer/test_host_reads.py`` counts the reads). The paper's extra-cost ratio
  ``rho = (t_PEPO - t_GRPO) / t_GRPO`` compares two runs; ``benchmarks/bench_step.py`` measures it.
* ``_tokenize_prompts``: refuses a prompt that cannot fit the model's positions, and, under a mode that
  needs the perception prior, an image row without the image token (docs/reliability.md).
* ``save_model``: saves the whole weights under FSDP with a sharded state dict (transformers saves nothing).
* ``_load_from_checkpoint``: resumes the weights through ``from_pretrained``'s key conversion
  (transformers' own resume silently drops every Qwen2.5-VL key).

Each of these (and the mixin's overrides) is checked against the signature it was written for when
the trainer is built, before any model work (:data:`pepo.versions.TRL_OVERRIDES`,
:func:`~pepo.versions.upstream_checked`).

Reference: Li, Kuang et al., "Perception-Exploration Policy Optimization", arXiv 2603.22847 (2026).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from datasets import IterableDataset
from transformers import PreTrainedModel
from trl import GRPOTrainer
from trl.extras.profiling import profiling_decorator

from pepo.core import WEIGHTING_MODES, PerceptionAccumulator, loss_multiplier, progressive_lambda, token_weights
from pepo.trainer.capture import HiddenStateCapture, PromptJoin, language_model_of
from pepo.trainer.clock import PEPOClock
from pepo.trainer.config import PEPOConfig
from pepo.trainer.dynamic_sampling import DynamicSampler
from pepo.trainer.handshake import WeightHandshake
from pepo.trainer.mixed_batches import (
    check_first_streamed_batch_has_images, check_image_rows_have_image_tokens, check_one_image_per_row,
    check_perception_is_possible, dataset_has_image_rows, drop_batch_num_images, ignore_empty_image_inputs,
)
from pepo.versions import upstream_checked
from pepo.trainer.perception_aware import PerceptionAwareMixin
from pepo.image_tokens import image_token_mask, resolve_image_token_id
from pepo.image_sharing import share_image_encoding
from pepo.mrope import vectorise_rope_index
from pepo.prompt_sharing import SharedPromptForward, share_prompt_prefill, sharing_backbone
from pepo.modeling import freeze_vision, is_peft_model

logger = logging.getLogger(__name__)

# recorded metric entries (about 3 per micro-step) held before an early flush when logging is rare or off
MAX_PENDING_ENTRIES = 256


class EpochSeededSampler(torch.utils.data.Sampler):
    """Wraps TRL's ``RepeatSampler``: ``set_epoch(e)`` seeds its generator with ``seed + e``."""

    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if getattr(self.sampler, "seed", None) is not None:
            self.sampler.generator.manual_seed(self.sampler.seed + epoch)

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class PEPOTrainer(PerceptionAwareMixin, GRPOTrainer):
    """GRPO / DAPO trainer with PEPO token weights; takes every ``GRPOTrainer`` argument.

    ``args`` must be a :class:`~pepo.trainer.PEPOConfig`. With ``weighting="none"`` (and
    ``dynamic_sampling=False``, ``perception_aware="none"``) it is TRL's ``GRPOTrainer`` unchanged:
    bit for bit with ``share_image_encoding=False, share_prompts=False``, up to float rounding with
    them (the default).
    PAPO and VPPO come from :class:`~pepo.trainer.perception_aware.PerceptionAwareMixin`.
    """

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, PEPOConfig):
            raise TypeError(f"PEPOTrainer needs args=PEPOConfig(...), got {type(config).__name__}")
        # before GRPOTrainer's model work: untested versions warned, a changed overridden TRL method refused;
        # after it: a missing private TRL attribute refused (pepo.versions, docs/patches.md)
        with upstream_checked(self):
            super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        for policy_or_reference in (model, getattr(self, "ref_model", None)):
            if policy_or_reference is None:
                continue
            ignore_empty_image_inputs(policy_or_reference)  # text-only chunks of mixed batches
            vectorise_rope_index(policy_or_reference)  # the same positions as transformers', tested
            if config.share_image_encoding:
                share_image_encoding(policy_or_reference)
        share_prompt_prefill(model, config.share_prompts)  # generation; the loss forward: _shared_prompt_model
        if config.freeze_vision_tower or config.freeze_projector:
            freeze_vision(model, config.freeze_vision_tower, config.freeze_projector)
        config_of_model = (model.get_base_model() if is_peft_model(model) else model).config
        self.image_token_id = resolve_image_token_id(config_of_model, self.processing_class, config.image_token)
        check_one_image_per_row(self.train_dataset, config_of_model.model_type)  # pepo train refused them at reading
        # what the weighting mode declared it needs (None: weighting "none", the base algorithm)
        self._weighting_mode = WEIGHTING_MODES.get(config.weighting)
        needs_perception = self._weighting_mode is not None and self._weighting_mode.needs_perception
        check_perception_is_possible(config.weighting, needs_perception, self.image_token_id, self.train_dataset,
                                     type(model).__name__)
        # a stream cannot be read ahead: its first generation batch is checked instead (_tokenize_prompts)
        self._check_first_streamed_batch = needs_perception and isinstance(self.train_dataset, IterableDataset)
        self._sharing_backbones: dict[int, Any] = {}  # id(model) -> its backbone (pepo.families), or None
        self._weight_handshake = WeightHandshake()  # how the weights reach TRL's loss: pepo.trainer.handshake
        self._pepo_clock = PEPOClock()  # PEPO's own compute, per optimiser step
        self._pending_nonfinite: list = []  # on_nonfinite="error": (step, bad rows, completion ids) per micro-step
        self._dynamic_sampler = DynamicSampler(self) if config.dynamic_sampling else None

    # ---- the loss -------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss on a copy of ``inputs`` whose advantages the loss's policy forward makes per-token
        (:mod:`pepo.trainer.handshake`: steps 1 and 4; raises ``TRLContractError`` if they were not)."""
        if self._weighting_mode is None and not self.args.log_signals:  # the base algorithm, TRL's code alone
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # a copy: TRL reuses buffered inputs across iterations, and the forward replaces "advantages"
        with self._weight_handshake.loss(inputs, writes_advantages=self._weighting_mode is not None) as loss_inputs:
            return super().compute_loss(model, loss_inputs, return_outputs, num_items_in_batch)

    @profiling_decorator
    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        loss_inputs = self._weight_handshake.take(compute_entropy)  # the open loss's, if this is its policy forward
        drop_batch_num_images(kwargs)

        def forward(on_prefix=None):
            scored = self._shared_prompt_model(model, logits_to_keep, on_prefix)
            return super(PEPOTrainer, self)._get_per_token_logps_and_entropies(
                scored, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, **kwargs,
            )

        if loss_inputs is None:  # not a loss's policy forward: reference model, old log-probs, PAPO / VPPO
            return forward()
        vision_mask = image_token_mask(input_ids, self.image_token_id)
        # the mode's declared need; "none" with log_signals reads the perception for the curves
        wants_perception = self._weighting_mode is None or self._weighting_mode.needs_perception
        if wants_perception and self.image_token_id is not None:
            out, perception = self._forward_with_perception(forward, model, vision_mask, logits_to_keep, batch_size)
        else:
            out, perception = forward(), None
        entropies = self._weight_handshake.entropies_of(out, input_ids.size(0), logits_to_keep)
        with self._pepo_clock.measure(entropies.device):
            if perception is None:
                perception = torch.zeros_like(entropies, dtype=torch.float32)
            self._apply_token_weights(loss_inputs, perception, entropies, vision_mask.any(1))  # writes "advantages"
        self._weight_handshake.delivered(loss_inputs)
        return out

    def _shared_prompt_model(self, model, logits_to_keep, on_prefix=None):
        """``model``, or a :class:`~pepo.prompt_sharing.SharedPromptForward` over it when
        ``share_prompts`` is on and ``model``'s family shares prompts (:mod:`pepo.families`) outside FSDP / DeepSpeed (it runs the plain forward
        under activation checkpointing)."""
        # FSDP2 frees the gathered weights of a forward's backward when the next forward starts (tests/scale/
        # test_sharded.py fails with it); DeepSpeed ZeRO-3 gathers the same way and is not tested here
        if not self.args.share_prompts or self.image_token_id is None or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return model
        if id(model) not in self._sharing_backbones:  # looked up once per model: a walk over its modules
            self._sharing_backbones[id(model)] = sharing_backbone(model)
        backbone = self._sharing_backbones[id(model)]
        if backbone is None:
            return model
        return SharedPromptForward(model, backbone, logits_to_keep, self.image_token_id, on_prefix=on_prefix)

    def _forward_with_perception(self, forward, model, vision_mask, logits_to_keep, batch_size):
        """Run TRL's ``forward`` and reduce each hidden state to the perception prior the moment the model
        computes it (none is kept alive, except that a shared-prompt forward's ``L + 1`` prompt hidden
        states, ``(U, P - 1, D)`` each, wait for the completions' pass to be joined: a small part of what
        sharing saves). Returns TRL's output and the ``(B, T)`` prior; PEPO's time inside the forward
        (joining included) goes to ``_pepo_clock``."""
        chunk = batch_size or vision_mask.size(0)  # TRL runs one forward per chunk of rows
        accumulators: list[PerceptionAccumulator] = []
        clock, device = self._pepo_clock, vision_mask.device

        def on_forward():
            with clock.measure(device):
                rows = vision_mask[len(accumulators) * chunk :][:chunk]
                accumulators.append(PerceptionAccumulator(rows, logits_to_keep, self.args.perception_measure))

        join = PromptJoin(on_forward, lambda hidden: accumulators[-1].add(hidden))  # a shared forward's passes as one

        def on_hidden(hidden):
            with clock.measure(hidden.device):
                join.on_hidden(hidden)

        with HiddenStateCapture(language_model_of(model), join.on_forward, on_hidden):
            out = forward(on_prefix=join.prefix)
        with clock.measure(device):
            perception = torch.cat([accumulator.result() for accumulator in accumulators])
        return out, perception

    def pepo_lambda(self) -> float:
        """The mixing coefficient of the current optimiser step (``docs/method.md``, Schedule and token-level advantage)."""
        if self.args.schedule == "constant":
            return 1.0
        return progressive_lambda(self.state.global_step, max(self.state.max_steps, 1))

    @torch.no_grad()
    def _apply_token_weights(self, inputs, perception, entropies, has_image) -> None:
        """Replace ``inputs["advantages"]`` by the per-token ``A_b * ((1 - lambda) + lambda * w)``.
        Reads nothing back from the device (see :meth:`_note_nonfinite` for the one exception)."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        valid = mask.bool()
        if self.args.weighting == "none":  # log_signals: the base algorithm's signals, logged, advantages untouched
            self._record_pepo_metrics(perception, entropies, None, valid, has_image, None)
            return
        image_rows_only = self._weighting_mode.image_rows_only  # as the mode declared
        # NaN/inf in the hidden states or logits shows up here: one isfinite over the (B, T) signals. Those rows'
        # signals become 0 and their weights 1 (the base algorithm) and they leave the metrics, always: a
        # torch.where needs no host read, and "error" stops the run before the optimiser step (_note_nonfinite)
        bad_rows = ((~torch.isfinite(perception) | ~torch.isfinite(entropies)) & valid).any(1)
        self._note_nonfinite(inputs, bad_rows)
        keep = ~bad_rows.unsqueeze(1)
        perception, entropies = torch.where(keep, perception, 0.0), torch.where(keep, entropies, 0.0)
        weights = token_weights(
            perception, entropies, mask, self.args.gate_alpha, self.args.gate_temperature, self.args.weighting,
            has_image=has_image if image_rows_only else None,
        )
        weights = torch.where(~keep & valid, 1.0, weights)  # skipped rows: base algorithm
        lam = self.pepo_lambda()
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        inputs["advantages"] = advantages * loss_multiplier(weights, lam).to(advantages.dtype)
        self._record_pepo_metrics(perception, entropies, weights, valid & keep, has_image, lam)

    def _note_nonfinite(self, inputs, bad_rows: torch.Tensor) -> None:
        """Non-finite signals in ``bad_rows`` of this micro-batch. ``"skip"``: counted (``pepo/nonfinite_rows``,
        reduced at log time). ``"error"``: kept on the device until the last micro-step of the optimiser step
        has run its backward, then :meth:`_raise_on_nonfinite` reads them back once (one host read per
        optimiser step, before gradient clipping and the optimiser step: no update is applied with them).
        Outside training (evaluation) ``"error"`` checks at once."""
        if self.args.on_nonfinite == "skip":
            self._device_metrics.record(self._metrics_mode(), "pepo/nonfinite_rows", "sum", bad_rows)
        elif self.model.training:
            self._pending_nonfinite.append((self.state.global_step, bad_rows, inputs["completion_ids"]))
        else:
            self._pending_nonfinite = [(self.state.global_step, bad_rows, inputs["completion_ids"])]
            self._raise_on_nonfinite()

    def _raise_on_nonfinite(self) -> None:
        """``on_nonfinite="error"``: raise, naming the step, micro-step and rows, if any recorded micro-batch
        had a non-finite signal. One host read for all of them; only a bad row reads more."""
        pending, self._pending_nonfinite = self._pending_nonfinite, []
        if not pending or not bool(torch.stack([bad_rows.any() for _, bad_rows, _ in pending]).any()):
            return
        for micro_step, (step, bad_rows, completion_ids) in enumerate(pending):
            rows = bad_rows.nonzero().flatten().tolist()
            if not rows:
                continue
            completion = self.processing_class.decode(completion_ids[rows[0]], skip_special_tokens=True)
            where = f" (micro-step {micro_step + 1} of {len(pending)})" if len(pending) > 1 else ""
            raise FloatingPointError(
                f"step {step}: NaN/inf perception score or token entropy (from the policy's hidden "
                f"states or logits) in rows {rows} of the micro-batch{where} on process {self.accelerator.process_index}; "
                f"row {rows[0]} completion: {completion[:80]!r}. Check the learning rate / dtype, or set "
                "on_nonfinite='skip' to train such rows as the base algorithm. No optimiser step was taken with them."
            )

    # ---- metrics: recorded on the device per micro-step, reduced when TRL logs (PerceptionAwareMixin.log) ----

    def _record_pepo_metrics(self, perception, entropies, weights, valid, has_image, lam) -> None:
        mode = self._metrics_mode()
        if lam is not None:
            self._metrics[mode]["pepo/lambda"].append(lam)  # a Python float
        record = self._device_metrics.record
        record(mode, "pepo/visual_similarity", "mean", perception, valid & has_image.unsqueeze(1))
        record(mode, "pepo/entropy", "percentiles", entropies, valid)
        if weights is not None:
            record(mode, "pepo/weight", "percentiles", weights, valid)

    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        if self._step % self.current_gradient_accumulation_steps == 0:  # the optimiser step comes next
            self._raise_on_nonfinite()
            if self._device_metrics.pending("train") > MAX_PENDING_ENTRIES:  # logging rare or off: bounded memory
                self._flush_device_metrics("train")
            # TRL just recorded this optimiser step's wall time (generation included) as step_time; PEPO's
            # own time is read in log(), so that no step waits for the GPU
            self._pepo_clock.close_step(self._metrics["train"]["step_time"][-1])
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._flush_device_metrics()  # now, to name skipped rows below (PerceptionAwareMixin.log's flush is then a no-op)
        skipped = sum(self._metrics[self._metrics_mode()].get("pepo/nonfinite_rows", []))
        if skipped:
            logger.warning("step %d: %d rows with non-finite PEPO signals since the last log trained as the base "
                           "algorithm (on_nonfinite='skip')", self.state.global_step, int(skipped))
        # PEPO's cost is only PEPO's: a baseline's log_signals time is not reported
        if self.model.training:
            steps = self._pepo_clock.read_closed()  # the one place that waits for PEPO's GPU work
            for pepo_seconds, step_seconds in steps:
                if self.args.weighting == "none":
                    break
                self._metrics["train"]["pepo/time_s"].append(pepo_seconds)
                if step_seconds > 0:
                    self._metrics["train"]["pepo/time_share"].append(pepo_seconds / step_seconds)
        super().log(logs, start_time)

    # ---- DAPO dynamic sampling ------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._dynamic_sampler is not None:
            self._dynamic_sampler.last_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if self._dynamic_sampler is None or not self.model.training:
            batch = super()._generate_and_score_completions(inputs)
        else:
            batch = self._dynamic_sampler.generate(inputs, super()._generate_and_score_completions)
        return self._perception_aware_batch(batch)  # PAPO / VPPO: once, on the finished batch

    # ---- bad input and resume -------------------------------------------------------------------

    def _tokenize_prompts(self, prompts: list):
        """TRL's tokenisation, then the checks. Under a mode that needs the perception prior, an image row
        must hold the image token (else it would get weight 1), and a streamed training set's first
        generation batch must hold an image row. And a length check: TRL 1.16 does not
        truncate prompts (cutting a multimodal prompt would cut image tokens), and a prompt plus
        ``max_completion_length`` past the model's ``max_position_embeddings`` would run on silently
        extrapolated positions."""
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        if self._check_first_streamed_batch:
            check_first_streamed_batch_has_images(images, self.args.weighting)
            self._check_first_streamed_batch = False
        if images is not None:
            # TRL marks a text-only prompt of a mixed batch None; its processor call for the training
            # forward then fails on it ("only a single or a list of entries"). An empty list is "no image".
            images = [image_list if image_list is not None else [] for image_list in images]
            if self._weighting_mode is not None and self._weighting_mode.needs_perception:
                check_image_rows_have_image_tokens(
                    prompt_ids, images, self.image_token_id, self.args.weighting, self.state.global_step)
        if not hasattr(self, "_pepo_max_positions"):  # looked up once: unwrapping costs a few ms
            model = self.accelerator.unwrap_model(self.model)
            config = (model.get_base_model() if is_peft_model(model) else model).config
            config = getattr(config, "text_config", None) or config
            self._pepo_max_positions = getattr(config, "max_position_embeddings", None)
        limit = self._pepo_max_positions
        if isinstance(limit, int):
            for row, ids in enumerate(prompt_ids):
                if len(ids) + self.max_completion_length > limit:
                    text = self.processing_class.decode(list(ids)[-200:], skip_special_tokens=True)
                    raise ValueError(
                        f"step {self.state.global_step}, generation batch row {row}: the prompt has {len(ids)} "
                        f"tokens (images expanded) + max_completion_length {self.max_completion_length} > the "
                        f"model's max_position_embeddings {limit}. Shorten or drop that record, downscale its "
                        f"images, or lower max_completion_length. Prompt ends with: {text[-120:]!r}"
                    )
        return prompt_ids, images, multimodal_fields

    def _get_train_sampler(self, dataset=None):
        """TRL's prompt sampler, reseeded at every epoch (``seed + epoch``) by the ``set_epoch`` that
        transformers calls, so that a run resumed in a later epoch draws that epoch's prompt order.
        TRL's sampler draws each epoch's order from one generator seeded once: a resumed run, with a
        fresh sampler, replayed epoch 0's order (the first epoch's order is unchanged)."""
        return EpochSeededSampler(super()._get_train_sampler(dataset))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """transformers' ``save_model``, except under FSDP with a sharded state dict (``fsdp2_cpu_2proc.yaml``,
        ``fsdp2_2nodes.yaml``), where transformers writes nothing at all: there the whole weights are
        gathered (every process takes part) and saved like an unsharded model. Checkpoints
        (``_internal_call``) stay sharded."""
        sharded_fsdp = self.is_fsdp_enabled and "FULL_STATE_DICT" not in str(self.accelerator.state.fsdp_plugin.state_dict_type)
        if not sharded_fsdp or _internal_call:
            return super().save_model(output_dir, _internal_call)
        state_dict = self.accelerator.get_state_dict(self.model)
        if self.args.should_save:
            self._save(output_dir or self.args.output_dir, state_dict=state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Model weights of a checkpoint, through ``from_pretrained``'s key conversion.

        ``save_pretrained`` writes the original checkpoint key names (Qwen2.5-VL: ``visual.*``,
        ``model.layers.*``), but transformers' ``Trainer._load_from_checkpoint`` feeds them to
        ``load_state_dict(strict=False)`` unconverted: every key misses, only a warning is logged,
        and the "resumed" run silently continues from the initial weights (transformers issue
        #43701). For a plain (non-PEFT, non-FSDP) model we load the checkpoint with
        ``from_pretrained`` instead and copy its tensors in with ``strict=True``.
        """
        target = self.model if model is None else model
        saved = os.path.join(resume_from_checkpoint, "model.safetensors")
        sharded = os.path.join(resume_from_checkpoint, "model.safetensors.index.json")
        if (
            is_peft_model(target) or self.is_fsdp_enabled or not isinstance(target, PreTrainedModel)
            or not (os.path.isfile(saved) or os.path.isfile(sharded))
        ):
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        dtype = next(target.parameters()).dtype
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype, local_files_only=True)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
