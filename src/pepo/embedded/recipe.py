"""The embedded demo's recipe: warm start with TRL's SFT trainer, then RL with :class:`PEPOTrainer`.

Reads top to bottom: data rows -> supervised warm start (stopped by validation accuracy) ->
RL from that same start for each method -> evaluation (avg@N and majority vote).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from pepo.modeling import freeze_vision, load_model_and_processor
from pepo.trainer.progress import use_compact_console

__all__ = ["load_rows", "rows_dataset", "warm_start", "rl_train", "RL_METHODS"]


def load_rows(jsonl: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The synthetic task's records (read by :func:`pepo.data.load_geometry3k`, with their reference
    chains) as trainer rows: a conversational ``prompt``, the reference ``completion``, the PIL
    ``images`` (decoded now), ``solution`` and ``qtype``."""
    from pepo.data import DataError, load_geometry3k, open_image

    rows = []
    for record in load_geometry3k(jsonl, check_images=False).records[:limit]:  # decoded below, once
        if record.reference is None:
            raise DataError(record.source, None, "reference", "missing: the warm start trains on the reference chains")
        try:
            images = [open_image(image) for image in record.images]
        except OSError as error:
            raise DataError(record.source, None, "images", f"cannot decode ({error})") from error
        rows.append({
            "prompt": record.prompt,
            "completion": [{"role": "assistant", "content": record.reference}],
            "images": images,
            "solution": record.solution,
            "qtype": record.categories.get("qtype", ""),
        })
    return rows


def rows_dataset(rows: list[dict[str, Any]], columns: tuple[str, ...]):
    """A ``datasets.Dataset`` of ``rows``' ``columns`` whose ``images`` are the rows' images, handed
    back by a transform rather than stored in Arrow: storing encodes every image to PNG (48000 for
    the demo, once per trainer), and every row drawn would then be decoded again. Arrow holds the
    row's index in the ``images`` column, so the trainers' column filters keep it.

    ``datasets`` fingerprints the transform by pickling what it holds, slow for 48000 PIL images.
    Where every row has one image of one size and mode (the synthetic task), the
    transform holds their pixels as one array (one buffer to pickle) and hands back equal images."""
    from datasets import Dataset

    table = Dataset.from_dict({c: list(range(len(rows))) if c == "images" else [row[c] for row in rows]
                               for c in columns})
    if "images" not in columns:
        return table
    return table.with_transform(_image_attacher([row["images"] for row in rows]))


def _image_attacher(images: list[list]) -> Callable[[dict[str, list]], dict[str, list]]:
    """The transform of :func:`rows_dataset`: the ``images`` column's row indices -> those rows' images."""
    from PIL import Image

    first = images[0][0] if images and images[0] else None
    uniform = first is not None and first.mode in ("RGB", "RGBA", "L") and all(  # modes an array gives back
        len(row) == 1 and row[0].size == first.size and row[0].mode == first.mode for row in images)
    if uniform:
        pixels = np.stack([np.asarray(row[0]) for row in images])

        def lookup(i: int) -> list:
            return [Image.fromarray(pixels[i])]
    else:
        def lookup(i: int) -> list:
            return images[i]

    def attach(batch: dict[str, list]) -> dict[str, list]:
        return {**batch, "images": [lookup(i) for i in batch["images"]]} if "images" in batch else batch

    return attach


# ----------------------------------------------------------------------------------------------
# 1. supervised warm start
# ----------------------------------------------------------------------------------------------


class _ValidationStop(TrainerCallback):
    """Every ``every`` steps: score the model on validation prompts (sampled at temperature 1.0);
    save and stop once the score reaches ``target``. The warm start is meant to stop part-way up
    the learning curve: RL needs questions the model answers right on some samples but not all."""

    def __init__(self, score: Callable[[torch.nn.Module], float], every: int, target: float, log: list):
        self.score, self.every, self.target, self.log = score, every, target, log

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            was_training = model.training
            model.eval()
            value = self.score(model)
            model.train(was_training)
            self.log.append({"step": state.global_step, "val_accuracy": value})
            if value >= self.target:
                control.should_training_stop = True
        return control


# The warm start's fixed SFTConfig fields: CPU, float32, cosine schedule without warm-up, no saving
# (the run is saved once, at its end, by _save).
_SFT_FIXED = dict(
    adam_beta1=0.9, adam_beta2=0.98, lr_scheduler_type="cosine", warmup_steps=0, save_strategy="no", report_to=[],
    use_cpu=True, bf16=False, activation_checkpointing=False, max_length=None, disable_tqdm=False,
    # Collation (tokenising, image preprocessing: a third of a step here) runs in a worker process
    # while the main one trains: both cores busy. Same batches, same order: the sampler stays here.
    dataloader_num_workers=1,
)


def warm_start(
    model_path: str | Path,
    train_rows: list[dict],
    val_records: list,
    output_dir: str | Path,
    *,
    max_steps: int = 1500,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    eval_every: int = 50,
    target_accuracy: float = 0.6,
    eval_samples: int = 2,
    max_new_tokens: int = 48,
    seed: int = 0,
    weight_decay: float = 0.0,
    freeze_vision_tower: bool = True,
) -> tuple[Path, list[dict]]:
    """TRL ``SFTTrainer`` on the reference chains (completion-only loss), stopped at the first
    validation check whose sampled accuracy (avg@``eval_samples`` of :func:`pepo.evaluation.evaluate_model`
    on ``val_records``) reaches ``target_accuracy``, else at ``max_steps``.

    ``freeze_vision_tower`` keeps the vision tower at its initial weights and trains the projector
    (Qwen's ``merger``) and the language model, as LLaVA's first stage does. On the tiny VLM this is
    what lets the warm start learn to see. The random tower already separates what the task asks:
    a linear probe on its image tokens reads each cell's colour and shape
    (``benchmarks/probe_vision_tower.py``, ``benchmarks/results/bench_demo_seeds.md``).
    Returns the saved checkpoint directory and the validation log."""
    from trl import SFTConfig, SFTTrainer

    from pepo.evaluation import evaluate_model

    model, processor = load_model_and_processor(model_path)
    if freeze_vision_tower:
        freeze_vision(model, tower=True, projector=False)
    dataset = rows_dataset(train_rows, ("prompt", "completion", "images"))
    args = SFTConfig(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, weight_decay=weight_decay, logging_steps=eval_every, seed=seed,
        **_SFT_FIXED,
    )
    log: list[dict] = []

    def score(model) -> float:
        result = evaluate_model(model, processor, val_records, n=eval_samples, max_new_tokens=max_new_tokens,
                                batch_size=64, seed=seed, progress=False)
        return result.totals["avg_at_n"] / 100.0

    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor,
        callbacks=[_ValidationStop(score, eval_every, target_accuracy, log)],
    )
    use_compact_console(trainer)
    trainer.train()
    return _save(trainer, processor, output_dir), log


def _save(trainer, processor, output_dir: str | Path) -> Path:
    """The trained model and its processor in ``output_dir/checkpoint`` (reloadable by pepo eval)."""
    out = Path(output_dir) / "checkpoint"
    trainer.model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------
# 2. RL from the warm start
# ----------------------------------------------------------------------------------------------

# method -> PEPOConfig fields on top of the shared settings of rl_train. GRPO and PEPO_G differ
# only in `weighting`; DAPO adds clip-higher, dynamic sampling, token-level (bnpo) loss and overlong
# filtering (docs/method.md, Base algorithms).
_GRPO = {"weighting": "none", "loss_type": "grpo", "epsilon": 0.2, "epsilon_high": 0.2}
_DAPO = {"weighting": "none", "loss_type": "bnpo", "epsilon": 0.2, "epsilon_high": 0.28,
         "dynamic_sampling": True, "mask_truncated_completions": True}
RL_METHODS: dict[str, dict[str, Any]] = {
    "grpo": _GRPO,
    "pepo_g": {**_GRPO, "weighting": "pepo"},
    "dapo": _DAPO,
    "pepo_d": {**_DAPO, "weighting": "pepo"},
    "high_entropy": {**_GRPO, "top_entropy_quantile": 0.2},
    "perception": {**_GRPO, "weighting": "perception"},
    "exploration": {**_GRPO, "weighting": "exploration"},
    # PAPO (arXiv 2507.06448) and VPPO (arXiv 2510.09285) on the same bases, released coefficients
    "papo_g": {**_GRPO, "perception_aware": "papo", "papo_gamma": 0.02, "papo_eta_ori": 0.05, "papo_eta_aug": 0.05},
    "papo_d": {**_DAPO, "perception_aware": "papo", "papo_gamma": 0.01, "papo_eta_ori": 0.03, "papo_eta_aug": 0.03},
    "vppo": {**_DAPO, "perception_aware": "vppo", "vppo_k": 0.2, "vppo_beta_min": 0.8, "vppo_entropy_coef": 0.06},
}


class _StepLog(TrainerCallback):
    """Keeps the trainer's logged metrics per step (for the demo's curves; ``step_time`` among them)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.rows.append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})


# rl_train's fixed PEPOConfig fields: sampling at temperature 1, no KL (beta 0: no reference
# model), cosine schedule, CPU, float32, a log row every step, no saving (the end is saved by _save).
_RL_FIXED = dict(
    temperature=1.0, top_p=1.0, adam_beta2=0.98, lr_scheduler_type="cosine", weight_decay=0.0, beta=0.0,
    use_cpu=True, bf16=False, activation_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[],
    log_signals=True,  # visual similarity / entropy curves for the baselines too (paper Figure 6)
)


@dataclass
class RLResult:
    checkpoint: Path
    log: list[dict]
    seconds: float


def rl_train(
    start: str | Path,
    train_rows: list[dict],
    output_dir: str | Path,
    method: str,
    *,
    max_steps: int = 150,
    prompts_per_step: int = 32,
    num_generations: int = 8,
    learning_rate: float = 2e-4,
    max_completion_length: int = 48,
    seed: int = 0,
    gate_alpha: float = 0.05,
    gate_temperature: float = 1.0,
    freeze_vision_tower: bool = True,
    warmup_steps: int = 0,
    loss_type: str | None = None,
    micro_batch_size: int | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> RLResult:
    """RL from the checkpoint ``start`` with ``method`` (a key of :data:`RL_METHODS`), through
    :class:`pepo.trainer.PEPOTrainer`: one optimiser step per generation batch of
    ``prompts_per_step * num_generations`` completions (on-policy), exact-match reward, no KL
    (beta = 0, no reference model), cosine learning rate to 0. ``loss_type`` (e.g. ``"dapo"``:
    token-level normalisation over the whole batch) replaces the method's own when given.
    ``micro_batch_size`` (default: the whole step's batch) splits the loss into accumulated chunks;
    ``callbacks`` are added to the trainer's."""
    from pepo.rewards import choice_reward
    from pepo.trainer import PEPOConfig, PEPOTrainer

    if method not in RL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(RL_METHODS)}")
    batch = prompts_per_step * num_generations
    if micro_batch_size is not None and (micro_batch_size < 1 or batch % micro_batch_size):
        raise ValueError(f"micro_batch_size {micro_batch_size} must divide prompts_per_step * num_generations = {batch}")
    model, processor = load_model_and_processor(start)
    model.train()
    dataset = rows_dataset(train_rows, ("prompt", "images", "solution"))
    # One forward and one backward over the whole step's batch: with a token-level loss (dapo) the
    # gradient is the same as accumulating smaller micro-batches, and each call has a fixed cost
    # (the vision tower, M-RoPE indices, TRL's bookkeeping) that the tiny model does not hide.
    micro = micro_batch_size or prompts_per_step * num_generations
    accumulation = prompts_per_step * num_generations // micro
    args = PEPOConfig(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation, steps_per_generation=accumulation, num_generations=num_generations,
        max_completion_length=max_completion_length, learning_rate=learning_rate, warmup_steps=warmup_steps,
        seed=seed, gate_alpha=gate_alpha, gate_temperature=gate_temperature, freeze_vision_tower=freeze_vision_tower,
        **_RL_FIXED, **{**RL_METHODS[method], **({"loss_type": loss_type} if loss_type else {})},
    )
    step_log = _StepLog()
    trainer = PEPOTrainer(
        model=model, reward_funcs=[choice_reward], args=args, train_dataset=dataset,
        processing_class=processor, callbacks=[step_log, *(callbacks or [])],
    )
    use_compact_console(trainer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return RLResult(_save(trainer, processor, output_dir), step_log.rows, seconds)
