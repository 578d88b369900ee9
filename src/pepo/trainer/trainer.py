"""``PEPOTrainer``: TRL's ``GRPOTrainer`` with PEPO's token-level advantages (PEPO_SPEC.md 4-6).

What happens in one micro-step of the loss (``_compute_loss``):

1. TRL runs the policy forward once, through its fused LM head, for the log-probs and entropies.
   During that same call (and only that one: not the reference model, not the old log-probs)
   :class:`~pepo.trainer.capture.HiddenStateCapture` hands each hidden state, as the language model
   computes it, to a :class:`~pepo.core.PerceptionAccumulator`, which reduces it at once (under
   no-grad, in float32) and keeps nothing: ``v`` is ``perception_scores(hidden states, image-token
   mask)`` bit for bit, without holding the ``L + 1`` tensors.
2. Under no-grad, in float32: ``w = token_weights(v, entropy, loss mask)``, ``m = (1 - lambda) + lambda * w``.
3. The advantages handed to TRL's loss become per-token, ``A[b, t] = A_b * m[b, t]``. TRL's
   clipped surrogate is ``-min(r A, clip(r) A)``; for ``m >= 0`` that is exactly
   ``m * -min(r A_b, clip(r) A_b)``, i.e. the multiplier on the clipped per-token policy loss. The
   KL term is added afterwards, from the reference log-probs, and is not weighted. Every
   aggregation (``grpo``, ``bnpo``, ``dr_grpo``, ``dapo``), gradient accumulation and gradient
   checkpointing are TRL's own code, unchanged.

``m`` is a constant for the optimiser. The public release does not detach it; at on-policy the
gradient through it is exactly zero anyway (``sum_t w = N_b`` for every parameter value), so
detaching only saves backward work.

TRL methods overridden (each the narrowest place that sees what PEPO needs):

* ``_compute_loss``: marks the one policy forward whose hidden states are wanted, and logs metrics.
* ``_get_per_token_logps_and_entropies``: runs TRL's forward under the hidden-state hooks and
  turns its entropies plus the captured hidden states into per-token advantages. With
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
  synchronisation in the step (:mod:`pepo.trainer.clock`). The spec's extra-cost ratio
  ``rho = (t_PEPO - t_GRPO) / t_GRPO`` compares two runs; ``benchmarks/bench_step.py`` measures it.
* ``_tokenize_prompts``: refuses a prompt that cannot fit the model's positions (docs/reliability.md).
* ``save_model``: saves the whole weights under FSDP with a sharded state dict (transformers saves nothing).
* ``_load_from_checkpoint``: resumes the weights through ``from_pretrained``'s key conversion
  (transformers' own resume silently drops every Qwen2.5-VL key).

Reference: Li, Kuang et al., "Perception-Exploration Policy Optimization", arXiv 2603.22847 (2026).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import torch
from transformers import PreTrainedModel
from trl import GRPOTrainer
from trl.extras.profiling import profiling_decorator

from pepo.core import PerceptionAccumulator, loss_multiplier, progressive_lambda, token_weights
from pepo.trainer.capture import HiddenStateCapture, PromptJoin, language_model_of
from pepo.trainer.clock import PEPOClock
from pepo.trainer.config import PEPOConfig
from pepo.trainer.dynamic_sampling import DynamicSampler
from pepo.trainer.mixed_batches import ignore_empty_image_inputs
from pepo.versions import check_upstream
from pepo.trainer.perception_aware import PerceptionAwareMixin
from pepo.image_tokens import image_token_mask, resolve_image_token_id
from pepo.image_sharing import share_image_encoding
from pepo.mrope import vectorise_rope_index
from pepo.prompt_sharing import SharedPromptForward, share_prompt_prefill, sharing_backbone
from pepo.modeling import freeze_vision, is_peft_model

logger = logging.getLogger(__name__)

PERCENTILES = (0, 20, 40, 60, 80, 100)
# weighting modes whose token weights use the perception prior (the image); the perception itself is
# also computed under weighting "none" with log_signals, for the curves only
PERCEPTION_WEIGHTED_MODES = ("pepo", "perception")


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
        super().__init__(*args, **kwargs)
        check_upstream(self)  # untested trl/transformers/accelerate: one warning; changed TRL internals: refused
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
        if config.weighting in PERCEPTION_WEIGHTED_MODES and self.image_token_id is None:
            warnings.warn(
                f"weighting={config.weighting!r} but no image token was found for {type(model).__name__}: every "
                "row is treated as text-only and gets weight 1 (plain base algorithm). Set image_token=...",
                stacklevel=2,
            )
        self._sharing_backbones: dict[int, Any] = {}  # id(model) -> its Qwen2-VL-family backbone, or None
        self._pepo_armed: dict[str, Any] | None = None  # the inputs of the loss whose forward we weight
        self._pepo_clock = PEPOClock()  # PEPO's own compute, per optimiser step
        self._dynamic_sampler = DynamicSampler(self) if config.dynamic_sampling else None

    # ---- the loss -------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        if self.args.weighting == "none" and not self.args.log_signals:
            return super()._compute_loss(model, inputs)
        # A shallow copy: TRL reuses buffered inputs across iterations, and we replace "advantages".
        inputs = dict(inputs)
        self._pepo_armed = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._pepo_armed = None

    @profiling_decorator
    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        armed = self._pepo_armed

        def forward(on_prefix=None):
            scored = self._shared_prompt_model(model, logits_to_keep, on_prefix)
            return super(PEPOTrainer, self)._get_per_token_logps_and_entropies(
                scored, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, **kwargs,
            )

        # Only the policy forward of the loss asks for entropies while armed; ref / old log-probs run elsewhere.
        if armed is None or not compute_entropy:
            return forward()
        self._pepo_armed = None  # exactly one forward per loss
        vision_mask = image_token_mask(input_ids, self.image_token_id)
        wants_perception = self.args.weighting in PERCEPTION_WEIGHTED_MODES or self.args.weighting == "none"
        if wants_perception and self.image_token_id is not None:
            out, perception = self._forward_with_perception(forward, model, vision_mask, logits_to_keep, batch_size)
        else:
            out, perception = forward(), None
        entropies = out[1]
        with self._pepo_clock.measure(entropies.device):
            if perception is None:
                perception = torch.zeros_like(entropies, dtype=torch.float32)
            self._apply_token_weights(armed, perception, entropies, vision_mask.any(1))
        return out

    def _shared_prompt_model(self, model, logits_to_keep, on_prefix=None):
        """``model``, or a :class:`~pepo.prompt_sharing.SharedPromptForward` over it when
        ``share_prompts`` is on and ``model`` is a Qwen2-VL-family model outside FSDP / DeepSpeed (it runs the plain forward
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
        """The mixing coefficient of the current optimiser step (PEPO_SPEC.md section 5)."""
        if self.args.schedule == "constant":
            return 1.0
        return progressive_lambda(self.state.global_step, max(self.state.max_steps, 1))

    @torch.no_grad()
    def _apply_token_weights(self, inputs, perception, entropies, has_image) -> None:
        """Replace ``inputs["advantages"]`` by the per-token ``A_b * ((1 - lambda) + lambda * w)``."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        if self.args.weighting == "none":  # log_signals: the base algorithm's signals, logged, advantages untouched
            self._log_pepo_metrics(perception, entropies, None, mask.bool(), has_image, None)
            return
        uses_image = self.args.weighting in PERCEPTION_WEIGHTED_MODES
        valid = mask.bool()
        # NaN/inf in the hidden states or logits shows up here: one isfinite over the (B, T) signals
        bad_rows = ((~torch.isfinite(perception) | ~torch.isfinite(entropies)) & valid).any(1)
        if self.args.on_nonfinite == "skip":
            self._metrics["train" if self.model.training else "eval"]["pepo/nonfinite_rows"].append(
                self.accelerator.gather(bad_rows.sum()).sum().item())
        if bool(bad_rows.any()):
            perception, entropies, valid = self._nonfinite_rows(inputs, bad_rows, perception, entropies, valid)
        weights = token_weights(
            perception, entropies, mask, self.args.gate_alpha, self.args.gate_temperature, self.args.weighting,
            has_image=has_image if uses_image else None,
        )
        weights = torch.where(bad_rows.unsqueeze(1) & mask.bool(), 1.0, weights)  # skipped rows: base algorithm
        lam = self.pepo_lambda()
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        inputs["advantages"] = advantages * loss_multiplier(weights, lam).to(advantages.dtype)
        self._log_pepo_metrics(perception, entropies, weights, valid, has_image, lam)

    def _nonfinite_rows(self, inputs, bad_rows, perception, entropies, valid):
        """``on_nonfinite="error"``: raise, naming the step and rows. ``"skip"``: zero those rows'
        signals (their weights are then set to 1) and leave them out of the metrics."""
        rows = bad_rows.nonzero().flatten().tolist()
        if self.args.on_nonfinite == "error":
            completion = self.processing_class.decode(inputs["completion_ids"][rows[0]], skip_special_tokens=True)
            raise FloatingPointError(
                f"step {self.state.global_step}: NaN/inf perception score or token entropy (from the policy's hidden "
                f"states or logits) in rows {rows} of the micro-batch on process {self.accelerator.process_index}; "
                f"row {rows[0]} completion: {completion[:80]!r}. Check the learning rate / dtype, or set "
                "on_nonfinite='skip' to train such rows as the base algorithm."
            )
        logger.warning("step %d: non-finite PEPO signals in rows %s: weight 1 (base algorithm) for them",
                       self.state.global_step, rows)
        keep = ~bad_rows.unsqueeze(1)
        return torch.where(keep, perception, 0.0), torch.where(keep, entropies, 0.0), valid & keep

    # ---- metrics --------------------------------------------------------------------------------

    def _gathered_valid(self, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Valid entries of ``values`` from every process, as one float32 vector."""
        local = values[valid].float()
        sentinel = -1e30
        padded = self.accelerator.pad_across_processes(local, dim=0, pad_index=sentinel)
        gathered = self.accelerator.gather(padded)
        return gathered[gathered != sentinel]

    def _log_pepo_metrics(self, perception, entropies, weights, valid, has_image, lam) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if lam is not None:
            metrics["pepo/lambda"].append(lam)
        image_rows = valid & has_image.unsqueeze(1)
        similarity = self._gathered_valid(perception, image_rows)
        if similarity.numel() > 0:
            metrics["pepo/visual_similarity"].append(similarity.mean().item())
        for name, values in (("entropy", entropies), ("weight", weights)):
            if values is None:
                continue
            gathered = self._gathered_valid(values, valid)
            if gathered.numel() == 0:
                continue
            q = torch.quantile(gathered, torch.tensor([p / 100 for p in PERCENTILES], device=gathered.device))
            for p, value in zip(PERCENTILES, q.tolist()):
                metrics[f"pepo/{name}/p{p}"].append(value)

    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        if self._step % self.current_gradient_accumulation_steps == 0:
            # TRL just recorded this optimiser step's wall time (generation included) as step_time; PEPO's
            # own time is read in log(), so that no step waits for the GPU
            self._pepo_clock.close_step(self._metrics["train"]["step_time"][-1])
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
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
        """TRL's tokenisation, then a length check: TRL 1.16 does not truncate prompts (cutting a
        multimodal prompt would cut image tokens), and a prompt plus ``max_completion_length`` past
        the model's ``max_position_embeddings`` would run on silently extrapolated positions."""
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        if images is not None:
            # TRL marks a text-only prompt of a mixed batch None; its processor call for the training
            # forward then fails on it ("only a single or a list of entries"). An empty list is "no image".
            images = [image_list if image_list is not None else [] for image_list in images]
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
