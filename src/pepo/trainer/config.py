"""``PEPOConfig``: TRL's ``GRPOConfig`` plus the fields of PEPO (``docs/method.md``, Token weights to Base algorithms).

Every GRPO/DAPO knob (``loss_type``, ``beta``, ``epsilon``/``epsilon_high``, ``num_generations``,
``mask_truncated_completions``, ``top_entropy_quantile`` ...) is TRL's own field; this class only
adds what PEPO needs on top:

* how the token weights are made (``weighting``, ``gate_alpha``, ``gate_temperature``,
  ``perception_measure``, ``image_token``) and mixed in (``schedule``);
* DAPO's dynamic sampling, which TRL 1.16 does not have (``dynamic_sampling``,
  ``dynamic_sampling_max_rounds``);
* freezing the vision tower / projector, which every VLM RL user asks for.

Reference: Li, Kuang et al., "Perception-Exploration Policy Optimization", arXiv 2603.22847 (2026).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import GRPOConfig

from pepo.core import PERCEPTION_MEASURES, WEIGHTING_MODES
from pepo.trainer.perception_aware import PerceptionAwareArguments

SCHEDULES = ("progressive", "constant")
NONFINITE_POLICIES = ("error", "skip")


def weighting_choices() -> tuple[str, ...]:
    """``"none"`` (the plain base algorithm) plus every registered weighting mode."""
    return ("none", *sorted(WEIGHTING_MODES))


@dataclass
class PEPOConfig(GRPOConfig, PerceptionAwareArguments):
    r"""Configuration of :class:`pepo.trainer.PEPOTrainer`: ``GRPOConfig`` plus PEPO's fields.

    PEPO_G is GRPO with ``weighting="pepo"``; PEPO_D is DAPO (``dynamic_sampling=True``, token-level
    loss, ``mask_truncated_completions=True``; clip-higher ``epsilon_high=0.28`` in canonical DAPO, a
    symmetric 0.2 in the PEPO release's runs: ``recipes/paper/README.md``) with ``weighting="pepo"``. ``weighting="none"`` is the base algorithm, bit for bit TRL's. The
    High-Entropy RL baseline is TRL's ``top_entropy_quantile=0.2`` with ``weighting="none"``.
    PAPO and VPPO are ``perception_aware="papo"`` / ``"vppo"`` with ``weighting="none"`` (their fields:
    :class:`~pepo.trainer.perception_aware.PerceptionAwareArguments`).
    See ``recipes/`` for all of them.
    """

    weighting: str = field(
        default="pepo",
        metadata={
            "help": "How the sequence-level advantage is spread over a response's tokens. 'none': plain GRPO/DAPO "
            "(every token gets the sequence advantage). 'pepo': perception prior gated by entropy (the paper's "
            "method). 'perception': perception prior only (gate strength 0). 'exploration': token entropy in "
            "place of the perception prior. Further modes registered with `pepo.register_weighting_mode` are "
            "accepted too.",
        },
    )
    gate_alpha: float = field(
        default=0.05,
        metadata={"help": "Gate strength alpha >= 0 of g = 1 + alpha * tanh(c) (paper: 0.05)."},
    )
    gate_temperature: float = field(
        default=1.0,
        metadata={"help": "Softmax temperature tau > 0 of the token weights (public recipes: 1.8)."},
    )
    perception_measure: str = field(
        default="cosine",
        metadata={"help": f"Similarity between response and image hidden states: one of {PERCEPTION_MEASURES}."},
    )
    image_token: str | None = field(
        default=None,
        metadata={
            "help": "The model's image placeholder token (e.g. '<|image_pad|>', '<IMG_CONTEXT>'). By default it is "
            "read from the model config's `image_token_id`, then from the processor.",
        },
    )
    schedule: str = field(
        default="progressive",
        metadata={
            "help": "Mixing coefficient lambda of the multiplier (1 - lambda) + lambda * w. 'progressive': "
            "lambda = min(1, global_step / max_steps), starting as the base algorithm; 'constant': lambda = 1.",
        },
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO dynamic sampling: drop prompt groups whose rewards all equal (zero advantage, no signal) "
            "and refill the generation batch with groups of freshly drawn prompts.",
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=3,
        metadata={
            "help": "Extra generation rounds dynamic sampling may run per generation batch. If the batch is still "
            "short after them, it is completed with dropped (zero-advantage) groups and a warning is logged.",
        },
    )
    on_nonfinite: str = field(
        default="error",
        metadata={
            "help": "What a NaN/inf in a response's perception score or token entropy (i.e. in the hidden states or "
            "logits of the policy forward) does. 'error': stop with a FloatingPointError naming the step and the "
            "rows, after the optimiser step's last micro-step and before the optimiser step (no update is applied "
            "with them). 'skip': give those rows multiplier 1 (the plain base algorithm), log their number as "
            "pepo/nonfinite_rows and go on. Either way it is one isfinite check on the (B, T) signals.",
        },
    )
    log_signals: bool = field(
        default=False,
        metadata={
            "help": "With weighting='none' (GRPO, DAPO, High-Entropy RL), still read the policy forward's hidden "
            "states and entropies to log pepo/visual_similarity and pepo/entropy/p*, so the baselines' training "
            "dynamics compare with PEPO's (paper Figure 6). The loss is unchanged; costs PEPO's reduction time.",
        },
    )
    freeze_vision_tower: bool = field(
        default=False,
        metadata={"help": "Freeze the vision encoder (no gradient, no optimizer state); where the model's family "
                  "(pepo.families) says it is."},
    )
    freeze_projector: bool = field(
        default=False,
        metadata={"help": "Freeze the vision-to-language projector (merger / multi_modal_projector / connector)."},
    )
    share_prompts: bool = field(
        default=True,
        metadata={
            "help": "Run each group's shared prompt once: generation prefills the distinct prompts and continues every "
            "completion from their key/value cache, and the loss (and reference / old log-prob) forward scores the "
            "completions on top of it (Qwen2-VL / Qwen2.5-VL / Qwen3-VL: pepo.families; pepo.prompt_sharing). Same "
            "tokens, log-probs and gradients up to float rounding. Other families run as before; so does the loss "
            "forward under activation checkpointing, FSDP or DeepSpeed (docs/scaling.md). The update measured faster "
            "with it on the CPU and slower on an H200 (README, On a GPU: set it false there)."
        },
    )
    share_image_encoding: bool = field(
        default=True,
        metadata={
            "help": "Run the vision tower once per distinct image of a forward (Qwen2-VL / Qwen2.5-VL / Qwen3-VL / "
            "Qwen3.5: pepo.families): a GRPO batch holds each prompt's image num_generations times. Same output up to float "
            "rounding; other families are unaffected. The update measured faster with it on the CPU and slower on an "
            "H200 (README, On a GPU: set it and share_prompts false there)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.weighting not in weighting_choices():
            raise ValueError(f"weighting={self.weighting!r}: choose one of {weighting_choices()}")
        for name in ("gate_alpha", "gate_temperature"):  # NaN passes `< 0`: finiteness first
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name}={value!r}: must be a finite number")
        if self.gate_alpha < 0:
            raise ValueError(f"gate_alpha={self.gate_alpha}: must be >= 0 (the paper uses 0.05)")
        if self.gate_temperature <= 0:
            raise ValueError(f"gate_temperature={self.gate_temperature}: must be > 0 (public recipes use 1.8)")
        if self.perception_measure not in PERCEPTION_MEASURES:
            raise ValueError(f"perception_measure={self.perception_measure!r}: choose one of {PERCEPTION_MEASURES}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: choose one of {SCHEDULES}")
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite={self.on_nonfinite!r}: choose one of {NONFINITE_POLICIES}")
        rounds = self.dynamic_sampling_max_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"dynamic_sampling_max_rounds={rounds!r}: must be a whole number >= 0")
        if self.weighting != "none" and self.loss_type not in ("grpo", "bnpo", "dr_grpo", "dapo"):
            raise ValueError(
                f"weighting={self.weighting!r} with loss_type={self.loss_type!r}: PEPO weights the clipped "
                "surrogate, so use loss_type 'grpo', 'bnpo', 'dr_grpo' or 'dapo' (or weighting='none')."
            )
        if self.dynamic_sampling:
            local_batch = self.per_device_train_batch_size * self.steps_per_generation
            if local_batch % self.num_generations != 0:
                raise ValueError(
                    f"dynamic_sampling needs whole prompt groups on every process: per_device_train_batch_size * "
                    f"steps_per_generation = {local_batch} is not a multiple of num_generations = "
                    f"{self.num_generations}. Change one of them."
                )
        self.check_perception_aware()
