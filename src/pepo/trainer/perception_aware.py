"""PAPO and VPPO in :class:`~pepo.trainer.PEPOTrainer`: config fields and the trainer mixin.

Both methods (math in :mod:`pepo.core.perception_aware`) need the policy's log-probs of the sampled
tokens with every image degraded by random patch blackening (:mod:`pepo.patch_masking`, the way the
model's family says: :attr:`pepo.families.Family.patch_layout`). Where they
hook into TRL's ``GRPOTrainer``:

1. After the rollout is scored (``_generate_and_score_completions``, after DAPO dynamic sampling has
   assembled the batch, in training only): **one extra forward, under no-grad, on the masked images**
   of the whole generation batch, with the rollout policy, as both releases do at experience time.
   One mask per prompt, shared by all its completions.

   * PAPO keeps those log-probs in the batch (``papo_masked_logps``).
   * VPPO turns them into the token visual dependency ``S_t`` against the rollout log-probs and
     replaces the ``(B,)`` advantages by VPPO's ``(B, T)`` ones (filtered tokens 0, shaped rows).
     The rollout log-probs are TRL's ``old_per_token_logps`` when TRL computed them; on-policy TRL
     does not (it uses the loss forward's detached log-probs instead), so VPPO then runs a second
     no-grad forward on the original images: the releases (verl) compute those for every method.

2. In the loss (``_compute_loss``): TRL's loss, plus PAPO's ``-gamma * KL_prcp + eta_ori * H_ori +
   eta_aug * H_aug`` or VPPO's entropy penalty, on the log-probs of the loss's own policy forward
   (captured from ``_get_per_token_logps_and_entropies``, no extra forward). Each term is a token mean
   over the micro-batch scaled for gradient accumulation, like TRL's own entropy bonus.

Text-only rows (no image to mask) are kept in the extra forward (their input is unchanged) but take
no part in the perception terms: PAPO leaves them out of the ``KL_prcp`` and ``H_aug`` means (their
``H_ori`` counts), VPPO keeps every token and scale 1 for them and normalises the image rows among
themselves. A batch without any image skips the extra forward.

Metrics: ``papo/kl_prcp``, ``vppo/dependency/p{0,20,...,100}``, ``vppo/adv_scale/{min,mean,max}``,
``vppo/kept_fraction``, and ``perception_aware/forward_s`` (seconds of the extra forward(s) and the
masking, per generation batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from trl.models.utils import disable_gradient_checkpointing

from pepo.core import entropy_penalty, papo_regulariser, visual_dependency, vppo_advantages
from pepo.trainer.clock import PEPOClock
from pepo.trainer.handshake import TRLContractError
from pepo.trainer.device_metrics import DeviceMetrics
from pepo.families import family_of
from pepo.families.patch_layout import PatchLayout
from pepo.patch_masking import check_patch_layout, mask_patches

PERCEPTION_AWARE_METHODS = ("none", "papo", "vppo")
DEFAULT_MASK_PROB = {"papo": 0.6, "vppo": 0.5}
# the numeric fields of PerceptionAwareArguments (mask_prob may be None: the method's default)
PERCEPTION_AWARE_NUMBERS = (
    "mask_prob", "papo_gamma", "papo_eta_ori", "papo_eta_aug", "vppo_k", "vppo_beta_min", "vppo_entropy_coef",
)
# batch keys added at rollout time
MASKED_LOGPS = "papo_masked_logps"
HAS_IMAGE = "perception_aware_has_image"
# the keyword arguments of TRL's forward that describe the images, besides pixel_values
IMAGE_KWARGS = (
    "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles", "image_sizes",
    "token_type_ids", "mm_token_type_ids", "image_position_ids",
)


@dataclass
class PerceptionAwareArguments:
    """The fields of PAPO and VPPO; :class:`~pepo.trainer.PEPOConfig` inherits them."""

    perception_aware: str = field(
        default="none",
        metadata={
            "help": "Perception-aware objective on top of the base algorithm (use with weighting='none'). 'papo': "
            "PAPO's implicit perception loss and double entropy loss (Wang et al., arXiv 2507.06448). 'vppo': "
            "VPPO's token gradient filtering and trajectory advantage shaping by visual dependency (Huang et al., "
            "arXiv 2510.09285). Both run one extra no-grad forward per rollout on randomly patch-blackened images.",
        },
    )
    mask_prob: float | None = field(
        default=None,
        metadata={"help": "Probability of blackening each image patch; default 0.6 for papo, 0.5 for vppo (released)."},
    )
    papo_gamma: float = field(
        default=0.02,
        metadata={"help": "PAPO: weight gamma of the implicit perception loss KL_prcp (PAPO_G 0.02, PAPO_D 0.01)."},
    )
    papo_eta_ori: float = field(
        default=0.05,
        metadata={"help": "PAPO: weight of the entropy penalty mean(-log pi_theta) (PAPO_G 0.05, PAPO_D 0.03)."},
    )
    papo_eta_aug: float = field(
        default=0.05,
        metadata={
            "help": "PAPO: weight of mean(-log pi_mask) (PAPO_G 0.05, PAPO_D 0.03). As released, pi_mask comes from "
            "the no-grad rollout-time forward, so this term moves the loss value but not the gradient.",
        },
    )
    vppo_k: float = field(
        default=0.2,
        metadata={"help": "VPPO: fraction of each response's tokens, by visual dependency, that keep their policy "
                  "gradient (released config 0.2; 7B script 0.4)."},
    )
    vppo_beta_min: float = field(
        default=0.8,
        metadata={"help": "VPPO: lowest advantage scale of the trajectory shaping (released config 0.8; 7B script 0.9)."},
    )
    vppo_entropy_coef: float = field(
        default=0.06,
        metadata={"help": "VPPO: entropy penalty coefficient on mean(-log pi_theta) (released 0.06)."},
    )

    def check_perception_aware(self) -> None:
        """Refuse bad PAPO / VPPO settings with one line naming the field; fills in ``mask_prob``."""
        method = self.perception_aware
        if method not in PERCEPTION_AWARE_METHODS:
            raise ValueError(f"perception_aware={method!r}: choose one of {PERCEPTION_AWARE_METHODS}")
        for name in PERCEPTION_AWARE_NUMBERS:  # NaN passes every range check below, so finiteness first, always
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name}={value!r}: must be a finite number")
        if method == "none":
            return
        if self.weighting != "none":
            raise ValueError(
                f"perception_aware={method!r} with weighting={self.weighting!r}: each run is one method; set "
                "weighting='none' (PAPO / VPPO on plain GRPO or DAPO)."
            )
        if self.mask_prob is None:
            self.mask_prob = DEFAULT_MASK_PROB[method]
        checks = [
            ("mask_prob", self.mask_prob, 0.0 <= self.mask_prob <= 1.0, "in [0, 1]"),
            ("papo_gamma", self.papo_gamma, self.papo_gamma >= 0, ">= 0"),
            ("papo_eta_ori", self.papo_eta_ori, self.papo_eta_ori >= 0, ">= 0"),
            ("papo_eta_aug", self.papo_eta_aug, self.papo_eta_aug >= 0, ">= 0"),
            ("vppo_k", self.vppo_k, 0.0 < self.vppo_k <= 1.0, "in (0, 1]"),
            ("vppo_beta_min", self.vppo_beta_min, 0.0 <= self.vppo_beta_min <= 1.0, "in [0, 1]"),
            ("vppo_entropy_coef", self.vppo_entropy_coef, self.vppo_entropy_coef >= 0, ">= 0"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name}={value}: must be {rule}")
        if method == "vppo" and self.loss_type not in ("grpo", "bnpo", "dr_grpo", "dapo"):
            raise ValueError(
                f"perception_aware='vppo' with loss_type={self.loss_type!r}: VPPO filters the clipped surrogate, so "
                "use loss_type 'grpo', 'bnpo', 'dr_grpo' or 'dapo'."
            )


def patch_layout_of(model, processing_class) -> PatchLayout:
    """Where ``model``'s processor writes each patch PAPO / VPPO blacken: its family's
    :class:`~pepo.families.patch_layout.PatchLayout`, checked against the processor and the model config;
    a one-line ``ValueError`` where pepo cannot mask."""
    family = family_of(model)
    layout = None if family is None else family.patch_layout
    if layout is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise ValueError(f"perception_aware patch masking: model_type {model_type!r} has no patch layout in "
                         "pepo.families (a Family's patch_layout field, docs/families.md); use a family that has "
                         "one or perception_aware='none'")
    check_patch_layout(layout, processing_class, model.config)
    return layout


class PerceptionAwareMixin:
    """PAPO / VPPO for a ``GRPOTrainer`` subclass whose ``args`` has :class:`PerceptionAwareArguments`.

    Put it before ``GRPOTrainer`` in the bases; call :meth:`_perception_aware_batch` on the finished
    rollout batch (see the module docstring for what happens where).
    """

    _pa_captured: list | None = None  # receives the loss forward's log-probs while a loss is computed

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pa_clock = PEPOClock()  # the extra forward's time, without a host synchronisation
        self._device_metrics = DeviceMetrics()  # this mixin's and PEPOTrainer's metrics, reduced in log()
        if self.args.perception_aware != "none":
            self._patch_layout = patch_layout_of(self.model, self.processing_class)

    # ---- rollout time: the extra forward --------------------------------------------------------

    def _perception_aware_batch(self, batch: dict) -> dict:
        """Add PAPO's masked log-probs, or VPPO's advantages, to a finished training rollout batch."""
        method = self.args.perception_aware
        if method == "none" or not self.model.training:
            return batch
        with self._pa_clock.measure(batch["prompt_ids"].device):
            batch = self._add_perception_aware_terms(batch, method)
        self._pa_clock.close_step(0.0)  # read in log(): on a GPU no rollout waits for its events
        return batch

    def _add_perception_aware_terms(self, batch: dict, method: str) -> dict:
        rows = batch["prompt_ids"].size(0)
        device = batch["prompt_ids"].device
        num_images = batch.get("num_images") or [0] * rows  # TRL leaves it out when no prompt has an image
        has_image = torch.tensor([n > 0 for n in num_images], device=device, dtype=torch.bool)
        # every process runs the forward if any has an image (ZeRO-3 / FSDP forwards are collective)
        image_anywhere = bool(self.accelerator.gather(has_image.any().unsqueeze(0)).any())
        if not image_anywhere:  # nothing to mask: every row is text-only, every perception term is left out
            masked_logps = torch.zeros(batch["completion_ids"].shape, device=device)
        elif bool(has_image.any()):
            masked_logps = self._no_grad_logps(batch, self._masked_pixel_values(batch, num_images))
        else:
            masked_logps = self._no_grad_logps(batch, batch.get("pixel_values"))
        batch = dict(batch)
        batch[HAS_IMAGE] = has_image
        if method == "papo":
            batch[MASKED_LOGPS] = masked_logps
        else:
            batch["advantages"] = self._vppo_advantages(batch, masked_logps, has_image, image_anywhere)
        return batch

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._flush_device_metrics()  # TRL's log runs on every process: the gather is collective
        for seconds, _ in self._pa_clock.read_closed():  # waits for the extra forwards' GPU events
            self._metrics["train"]["perception_aware/forward_s"].append(seconds)
        super().log(logs, start_time)

    def _masked_pixel_values(self, batch: dict, num_images: list[int]) -> torch.Tensor:
        rows = len(num_images)
        first_row = self.accelerator.process_index * rows  # TRL's groups are consecutive global rows
        groups = [(first_row + row) // self.num_generations for row in range(rows)]
        step_seed = self.args.seed * 1_000_003 + self.state.global_step  # a new mask every rollout, reproducible
        return mask_patches(self._patch_layout, batch, num_images, groups, self.args.mask_prob, step_seed,
                            self.processing_class, self.model.config)

    def _no_grad_logps(self, batch: dict, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` log-probs of the batch's completions with the given images (TRL's forward)."""
        completion_mask = batch["completion_mask"]
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
                torch.cat([batch["prompt_mask"], completion_mask], dim=1),
                completion_mask.size(1),
                batch_size=self.args.per_device_train_batch_size,
                pixel_values=pixel_values,
                **{key: batch[key] for key in IMAGE_KWARGS if key in batch},
            )
        return logps

    def _vppo_advantages(self, batch: dict, masked_logps, has_image, image_anywhere: bool) -> torch.Tensor:
        rollout_logps = batch.get("old_per_token_logps")
        if rollout_logps is None and image_anywhere:
            rollout_logps = self._no_grad_logps(batch, batch.get("pixel_values"))
        elif rollout_logps is None:
            rollout_logps = masked_logps  # no image anywhere: S_t is not used
        mask = self._loss_mask(batch)
        dependency = visual_dependency(masked_logps, rollout_logps)
        args = self.args
        advantages, keep, scale = vppo_advantages(
            batch["advantages"], dependency, mask, args.vppo_k, args.vppo_beta_min, has_image
        )
        self._log_vppo(dependency, keep, scale, mask.bool(), has_image)
        return advantages

    # ---- loss time: the extra terms -------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        if self.args.perception_aware == "none" or HAS_IMAGE not in inputs:
            return super()._compute_loss(model, inputs)
        self._pa_captured = []
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            captured, self._pa_captured = self._pa_captured, None
        if not captured:  # the term would be computed on nothing: stop, as PEPO's handshake does
            raise TRLContractError("GRPOTrainer._compute_loss did not call _get_per_token_logps_and_entropies with "
                                   "compute_entropy=True, where PAPO / VPPO read the policy's log-probs")
        logps, mask, has_image = captured[0], self._loss_mask(inputs), inputs[HAS_IMAGE]
        args = self.args
        if args.perception_aware == "papo":
            term, kl_prcp = papo_regulariser(
                logps, inputs[MASKED_LOGPS], mask, args.papo_gamma, args.papo_eta_ori, args.papo_eta_aug, has_image
            )
            self._device_metrics.record(self._metrics_mode(), "papo/kl_prcp", "mean", kl_prcp,
                                        mask.bool() & has_image.unsqueeze(1))
        else:
            term = entropy_penalty(logps, mask, args.vppo_entropy_coef)
        accumulation = self.current_gradient_accumulation_steps if self.model.training else 1
        return loss + term / accumulation

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        out = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy, **kwargs,
        )
        # the loss's policy forward is the one call asking for entropies (ref / old log-probs do not)
        if self._pa_captured is not None and compute_entropy and not self._pa_captured:
            self._pa_captured.append(out[0])
        return out

    # ---- metrics ----------------------------------------------------------------------------------

    @staticmethod
    def _loss_mask(batch: dict) -> torch.Tensor:
        mask = batch["completion_mask"]
        return mask * batch["tool_mask"] if "tool_mask" in batch else mask

    def _metrics_mode(self) -> str:
        return "train" if self.model.training else "eval"

    def _flush_device_metrics(self, mode: str | None = None) -> None:
        """Reduce and gather the metrics recorded on the device (``self._device_metrics``) for ``mode`` into
        TRL's ``self._metrics``: one host read and one gather, whatever the number of micro-steps. Every
        process calls it at the same point (TRL's ``log``; ``PEPOTrainer.training_step`` when logging is rare)."""
        mode = mode or self._metrics_mode()
        self._device_metrics.flush(mode, self._metrics[mode], self.accelerator)

    @torch.no_grad()
    def _log_vppo(self, dependency, keep, scale, valid, has_image) -> None:
        record = self._device_metrics.record
        image_tokens = valid & has_image.unsqueeze(1)
        record("train", "vppo/dependency", "percentiles", dependency, image_tokens)
        record("train", "vppo/kept_fraction", "mean", keep, image_tokens)
        record("train", "vppo/adv_scale", "min_mean_max", scale, has_image & valid.any(1))


__all__ = ["PERCEPTION_AWARE_METHODS", "PerceptionAwareArguments", "PerceptionAwareMixin", "patch_layout_of"]
