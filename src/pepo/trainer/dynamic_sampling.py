"""DAPO dynamic sampling on top of TRL's rollout (TRL 1.16 has none).

DAPO (Yu et al., arXiv 2503.14476, section 3.2): a prompt group whose ``G`` rewards all equal has
zero advantage everywhere and gives no policy gradient, so it is dropped, and groups of freshly
drawn prompts are generated until the batch is full again. Here:

1. TRL's ``_generate_and_score_completions`` rolls out the generation batch as usual.
2. Groups whose total reward (reward functions weighted as TRL weights them) is constant are
   dropped; the kept rows are set aside.
3. While some process is short, every process draws ``len(batch) / G`` new prompts from its own
   seeded permutation of the training set and rolls them out (all processes run the same number
   of rounds, so TRL's collective gathers stay in step), at most ``dynamic_sampling_max_rounds``
   times.
4. The kept rows (re-padded) fill the batch; if it is still short, dropped groups (advantage 0,
   so no policy gradient, but they do count in token normalisers) complete it and a warning says so.

Logged: ``dynamic_sampling/frac_groups_dropped`` (of all groups generated for this batch),
``dynamic_sampling/rounds`` (extra rounds run) and ``dynamic_sampling/frac_batch_filled_with_dropped``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from datasets import IterableDataset

# Per-row tensors, by which end they are padded on when rows of different batches are merged.
PROMPT_KEYS = {"prompt_ids": "pad", "prompt_mask": 0}  # left-padded
COMPLETION_KEYS = {  # right-padded
    "completion_ids": "pad",
    "completion_mask": 0,
    "tool_mask": 1,
    "old_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "importance_sampling_ratio": 1.0,
}
SEQUENCE_KEYS = ("token_type_ids", "mm_token_type_ids")  # prompt part left-, completion part right-padded
ROW_KEYS = ("advantages",)
PER_IMAGE_KEYS = ("image_grid_thw", "image_sizes", "image_position_ids")
PER_TILE_KEYS = ("spatial_shapes",)


def _row_spans(counts: list[int]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for n in counts:
        spans.append((start, start + n))
        start += n
    return spans


def unbatch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Split a rollout dict of TRL (``_generate_and_score_completions`` output) into one dict per row."""
    n = batch["prompt_ids"].size(0)
    prompt_len = batch["prompt_ids"].size(1)
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    num_images = batch.get("num_images")
    image_spans = _row_spans(num_images) if num_images is not None else None
    tile_spans = _row_spans(batch["num_tiles"]) if batch.get("num_tiles") is not None else None
    for key, value in batch.items():
        if key == "num_items_in_batch":
            continue
        if key in ("num_images", "num_tiles"):
            for row, count in zip(rows, value):
                row[key] = count
        elif key in PROMPT_KEYS or key in COMPLETION_KEYS or key in ROW_KEYS:
            for i, row in enumerate(rows):
                row[key] = value[i]
        elif key in SEQUENCE_KEYS:
            for i, row in enumerate(rows):
                row[key] = (value[i, :prompt_len], value[i, prompt_len:])
        elif key in PER_IMAGE_KEYS:
            for row, (a, b) in zip(rows, image_spans):
                row[key] = value[a:b]
        elif key in PER_TILE_KEYS or (key == "pixel_attention_mask" and "spatial_shapes" in batch):
            for row, (a, b) in zip(rows, tile_spans):
                row[key] = value[a:b]
        elif key == "pixel_values":
            for row, span in zip(rows, _pixel_spans(batch, n, image_spans, tile_spans)):
                row[key] = value[span[0] : span[1]]
        elif key == "pixel_attention_mask":  # per row (Idefics3 / SmolVLM)
            for i, row in enumerate(rows):
                row[key] = value[i : i + 1]
        else:
            raise NotImplementedError(
                f"dynamic_sampling cannot split the rollout field {key!r}; set dynamic_sampling=False for this model"
            )
    return rows


def _pixel_spans(batch, n, image_spans, tile_spans) -> list[tuple[int, int]]:
    """Which ``pixel_values`` rows belong to each completion row (same layouts as TRL's forward)."""
    pixel_values = batch["pixel_values"]
    if "image_grid_thw" in batch:
        rows_per_image = batch["image_grid_thw"].prod(-1).tolist()
        cum = [0]
        for r in rows_per_image:
            cum.append(cum[-1] + int(r))
        return [(cum[a], cum[b]) for a, b in image_spans]
    if tile_spans is not None:
        return tile_spans
    if image_spans is not None and pixel_values.size(0) == image_spans[-1][1]:
        return image_spans
    if pixel_values.size(0) == n:
        return [(i, i + 1) for i in range(n)]
    raise NotImplementedError("dynamic_sampling cannot tell which pixel_values belong to which row")


def _pad_stack(tensors: list[torch.Tensor], value: float | int, left: bool) -> torch.Tensor:
    length = max(t.size(0) for t in tensors)
    padded = []
    for t in tensors:
        pad = t.new_full((length - t.size(0), *t.shape[1:]), value)
        padded.append(torch.cat([pad, t] if left else [t, pad]))
    return torch.stack(padded)


def rebatch(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Inverse of :func:`unbatch` for rows from possibly different rollouts (re-pads to the longest).

    ``num_items_in_batch`` is not rebuilt: it is a count over all processes (see the caller).
    """
    batch: dict[str, Any] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key in ("num_images", "num_tiles"):
            batch[key] = values
        elif key in PROMPT_KEYS or key in COMPLETION_KEYS:
            fill = {**PROMPT_KEYS, **COMPLETION_KEYS}[key]
            if values[0].dim() == 1 and key == "importance_sampling_ratio" and values[0].numel() == 1:
                batch[key] = torch.stack(values)
            else:
                batch[key] = _pad_stack(values, pad_token_id if fill == "pad" else fill, left=key in PROMPT_KEYS)
        elif key in ROW_KEYS:
            batch[key] = torch.stack(values)
        elif key in SEQUENCE_KEYS:
            prompt = _pad_stack([v[0] for v in values], 0, left=True)
            completion = _pad_stack([v[1] for v in values], 0, left=False)
            batch[key] = torch.cat([prompt, completion], dim=1)
        else:  # image / tile / per-row vision tensors: concatenate
            shapes = {tuple(v.shape[1:]) for v in values}
            if len(shapes) > 1:
                raise NotImplementedError(f"dynamic_sampling cannot merge {key!r} of shapes {sorted(shapes)}")
            batch[key] = torch.cat(values)
    return batch


class DynamicSampler:
    """Drop zero-variance groups and refill the generation batch (see the module docstring)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.last_rewards_per_func: torch.Tensor | None = None
        dataset = trainer.train_dataset
        if dataset is None or isinstance(dataset, IterableDataset):
            raise ValueError("dynamic_sampling=True needs a map-style train_dataset (it draws extra prompts by index)")
        seed = trainer.args.seed + 1 + trainer.accelerator.process_index
        self._generator = torch.Generator().manual_seed(seed)
        self._order: list[int] = []

    def _draw_examples(self, n_prompts: int) -> list[dict]:
        dataset = self.trainer.train_dataset
        G = self.trainer.num_generations
        indices = []
        while len(indices) < n_prompts:
            if not self._order:
                self._order = torch.randperm(len(dataset), generator=self._generator).tolist()
            indices.append(self._order.pop())
        return [dataset[i] for i in indices for _ in range(G)]

    def _informative_groups(self, n_rows: int) -> torch.Tensor:
        """``(n_rows / G,)`` bool: groups of this process whose weighted total reward varies."""
        trainer = self.trainer
        rewards = self.last_rewards_per_func
        rewards = (rewards * trainer.reward_weights.to(rewards.device).unsqueeze(0)).nansum(dim=1)
        start = trainer.accelerator.process_index * n_rows
        grouped = rewards[start : start + n_rows].view(-1, trainer.num_generations)
        return (grouped.amax(1) - grouped.amin(1)) > 1e-6

    def generate(self, inputs: list[dict], rollout: Callable[[list[dict]], dict]) -> dict[str, Any]:
        trainer = self.trainer
        G = trainer.num_generations
        target = len(inputs)
        kept: list[dict] = []
        dropped: list[dict] = []
        n_groups = n_dropped = 0
        batch, extra_rounds = inputs, 0
        while True:
            rows = unbatch(rollout(batch))
            informative = self._informative_groups(len(rows)).tolist()
            for g, keep in enumerate(informative):
                (kept if keep else dropped).extend(rows[g * G : (g + 1) * G])
            n_groups += len(informative)
            n_dropped += informative.count(False)
            short = torch.tensor(float(max(target - len(kept), 0)), device=trainer.accelerator.device)
            if trainer.accelerator.reduce(short, reduction="max").item() == 0:
                break
            if extra_rounds == trainer.args.dynamic_sampling_max_rounds:
                break
            batch, extra_rounds = self._draw_examples(target // G), extra_rounds + 1

        filled_with_dropped = max(target - len(kept), 0)
        if filled_with_dropped:
            warnings.warn(
                f"dynamic sampling: only {len(kept) // G} of {target // G} informative groups after "
                f"{extra_rounds} extra rounds; completing the batch with zero-advantage groups "
                "(raise dynamic_sampling_max_rounds to avoid this)",
                stacklevel=2,
            )
        rows = (kept + dropped)[:target]
        output = rebatch(rows, trainer._tokenizer.pad_token_id)
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        output["num_items_in_batch"] = trainer.accelerator.gather(loss_mask.sum()).sum()

        metrics = trainer._metrics["train"]
        metrics["dynamic_sampling/frac_groups_dropped"].append(n_dropped / n_groups)
        metrics["dynamic_sampling/rounds"].append(float(extra_rounds))
        metrics["dynamic_sampling/frac_batch_filled_with_dropped"].append(filled_with_dropped / target)
        return output
