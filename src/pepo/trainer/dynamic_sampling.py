"""DAPO dynamic sampling on top of TRL's rollout (TRL 1.16 has none).

DAPO (Yu et al., arXiv 2503.14476, section 3.2): a prompt group whose ``G`` rewards all equal has
zero advantage everywhere and gives no policy gradient, so it is dropped, and groups of freshly
drawn prompts are generated until the batch is full again. Here:

1. TRL's ``_generate_and_score_completions`` rolls out the generation batch as usual.
2. Groups whose total reward (reward functions weighted as TRL weights them) is constant are
   dropped; the kept rows are set aside.
3. The decision is global: TRL gathers every process's rewards, so every process knows which
   groups of *all* processes are kept, and all take the same decision without a collective.
   While fewer informative groups than the global batch holds have been kept, a refill round
   draws the global batch's number of prompts from one seeded permutation of the training set
   (the same on every process; each process rolls out its own slice), at most
   ``dynamic_sampling_max_rounds`` times. So 2 processes draw and keep exactly the groups one
   process with the same global batch would.
4. The first kept groups, in global order (then dropped ones if still short: advantage 0, so no
   policy gradient, but they count in token normalisers; a warning says so), are dealt out whole,
   the same number to every process: each keeps its own first, the surplus of one process goes to
   those that are short (``all_gather_object`` of just those rows). Rows are re-padded.

Groups never straddle processes: ``per_device_train_batch_size x steps_per_generation`` must be a
multiple of ``num_generations`` (checked at construction).

Logged (the same on every process): ``dynamic_sampling/frac_groups_dropped`` (of all groups generated
for this batch), ``dynamic_sampling/rounds`` (refill rounds), ``dynamic_sampling/refill_prompts``
(prompts drawn by them, over all processes), ``dynamic_sampling/frac_batch_filled_with_dropped`` and
``dynamic_sampling/groups_moved`` (groups sent to another process).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from datasets import IterableDataset
from trl.trainer.utils import pad

from pepo.families.image_rows import image_rows

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
        bounds = [0, *(rows.stop for rows in image_rows(batch["image_grid_thw"]))]  # image i: bounds[i]:bounds[i + 1]
        return [(bounds[a], bounds[b]) for a, b in image_spans]
    if tile_spans is not None:
        return tile_spans
    if image_spans is not None and pixel_values.size(0) == image_spans[-1][1]:
        return image_spans
    if pixel_values.size(0) == n:
        return [(i, i + 1) for i in range(n)]
    raise NotImplementedError("dynamic_sampling cannot tell which pixel_values belong to which row")


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
                side = "left" if key in PROMPT_KEYS else "right"
                batch[key] = pad(values, pad_token_id if fill == "pad" else fill, padding_side=side)
        elif key in ROW_KEYS:
            batch[key] = torch.stack(values)
        elif key in SEQUENCE_KEYS:
            prompt = pad([v[0] for v in values], 0, padding_side="left")
            completion = pad([v[1] for v in values], 0, padding_side="right")
            batch[key] = torch.cat([prompt, completion], dim=1)
        else:  # image / tile / per-row vision tensors: concatenate
            shapes = {tuple(v.shape[1:]) for v in values}
            if len(shapes) > 1:
                raise NotImplementedError(f"dynamic_sampling cannot merge {key!r} of shapes {sorted(shapes)}")
            batch[key] = torch.cat(values)
    return batch


def _to(rows: list[dict[str, Any]], device) -> list[dict[str, Any]]:
    """``rows`` with every tensor (also inside the ``(prompt, completion)`` pairs) on ``device``."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        return tuple(move(v) for v in value) if isinstance(value, tuple) else value

    return [{key: move(value) for key, value in row.items()} for row in rows]


def assign_groups(selected: list, owner: dict, per_process: int, num_processes: int) -> list[list]:
    """Which of the ``selected`` groups each process trains on: ``per_process`` each, a process's own
    groups first (they need no transfer), the surplus of the others (in ``selected`` order) filling
    the processes that are short, lowest rank first. Pure: every process computes the same plan."""
    plan = [[g for g in selected if owner[g] == rank][:per_process] for rank in range(num_processes)]
    placed = {g for groups in plan for g in groups}
    surplus = [g for g in selected if g not in placed]
    for groups in plan:
        while len(groups) < per_process:
            groups.append(surplus.pop(0))
    return plan


class DynamicSampler:
    """Drop zero-variance groups and refill the generation batch (see the module docstring)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.last_rewards_per_func: torch.Tensor | None = None
        dataset = trainer.train_dataset
        if dataset is None or isinstance(dataset, IterableDataset):
            raise ValueError("dynamic_sampling=True needs a map-style train_dataset (it draws extra prompts by index)")
        args, processes = trainer.args, trainer.accelerator.num_processes
        local_rows = args.generation_batch_size // processes
        if local_rows % trainer.num_generations:
            raise ValueError(
                f"dynamic_sampling=True needs whole groups on every process: per_device_train_batch_size x "
                f"steps_per_generation = {local_rows} rows is not a multiple of num_generations="
                f"{trainer.num_generations} (a group would be split across processes); change one of them"
            )
        # the same permutation on every process: refill prompts are drawn globally, each process
        # taking its slice, so 2 processes draw exactly the prompts one process would
        self._generator = torch.Generator().manual_seed(args.seed + 1)
        self._order: list[int] = []

    def _draw_examples(self, n_prompts: int) -> list[dict]:
        """This process's ``n_prompts`` of the ``n_prompts x num_processes`` drawn for all processes."""
        dataset = self.trainer.train_dataset
        G = self.trainer.num_generations
        accelerator = self.trainer.accelerator
        indices = []
        while len(indices) < n_prompts * accelerator.num_processes:
            if not self._order:
                self._order = torch.randperm(len(dataset), generator=self._generator).tolist()
            indices.append(self._order.pop())
        mine = indices[accelerator.process_index * n_prompts :][:n_prompts]
        return [dataset[i] for i in mine for _ in range(G)]

    def _informative_groups(self) -> torch.Tensor:
        """``(num_processes x groups per process,)`` bool, process-major: the groups of every process
        whose weighted total reward varies (TRL's rewards are gathered over processes)."""
        trainer = self.trainer
        rewards = self.last_rewards_per_func
        rewards = (rewards * trainer.reward_weights.to(rewards.device).unsqueeze(0)).nansum(dim=1)
        grouped = rewards.view(-1, trainer.num_generations)
        return (grouped.amax(1) - grouped.amin(1)) > 1e-6

    def _exchange(self, plan: list[list], owner: dict, local: dict) -> list[dict]:
        """This process's rows under ``plan``; groups generated on another process are sent over."""
        accelerator = self.trainer.accelerator
        rank = accelerator.process_index
        moving = {g for r, groups in enumerate(plan) for g in groups if owner[g] != r}
        if moving:  # every process knows the plan, so all of them take part (or none)
            outgoing = {g: _to(local[g], "cpu") for g in moving if owner[g] == rank}
            received: list[dict] = [{} for _ in range(accelerator.num_processes)]
            torch.distributed.all_gather_object(received, outgoing)
            for part in received:
                local.update({g: _to(rows, accelerator.device) for g, rows in part.items()})
        return [row for g in plan[rank] for row in local[g]]

    def generate(self, inputs: list[dict], rollout: Callable[[list[dict]], dict]) -> dict[str, Any]:
        trainer = self.trainer
        accelerator = trainer.accelerator
        G, processes, rank = trainer.num_generations, accelerator.num_processes, accelerator.process_index
        per_process = len(inputs) // G  # groups each process trains on (never split: checked at init)
        kept: list[tuple[int, int]] = []  # (round, global group index), over all processes, in global order
        dropped: list[tuple[int, int]] = []
        owner: dict[tuple[int, int], int] = {}
        local: dict[tuple[int, int], list[dict]] = {}  # rows of the groups generated here
        batch, extra_rounds = inputs, 0
        while True:
            rows = unbatch(rollout(batch))
            for g, keep in enumerate(self._informative_groups().tolist()):
                group = (extra_rounds, g)
                (kept if keep else dropped).append(group)
                owner[group] = g // per_process
                if owner[group] == rank:
                    first = (g - rank * per_process) * G
                    local[group] = rows[first : first + G]
            # every process sees every group's rewards, so all take the same decision (no collective needed)
            if len(kept) >= per_process * processes or extra_rounds == trainer.args.dynamic_sampling_max_rounds:
                break
            batch, extra_rounds = self._draw_examples(per_process), extra_rounds + 1

        target = per_process * processes
        filled_with_dropped = max(target - len(kept), 0)
        if filled_with_dropped:
            warnings.warn(
                f"dynamic sampling: only {len(kept)} of {target} informative groups after "
                f"{extra_rounds} extra rounds; completing the batch with zero-advantage groups "
                "(raise dynamic_sampling_max_rounds to avoid this)",
                stacklevel=2,
            )
        plan = assign_groups((kept + dropped)[:target], owner, per_process, processes)
        output = rebatch(self._exchange(plan, owner, local), trainer._tokenizer.pad_token_id)
        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        output["num_items_in_batch"] = accelerator.gather(loss_mask.sum()).sum()

        n_groups = len(kept) + len(dropped)
        metrics = trainer._metrics["train"]
        metrics["dynamic_sampling/frac_groups_dropped"].append(len(dropped) / n_groups)
        metrics["dynamic_sampling/rounds"].append(float(extra_rounds))
        metrics["dynamic_sampling/refill_prompts"].append(float(extra_rounds * target))
        metrics["dynamic_sampling/frac_batch_filled_with_dropped"].append(filled_with_dropped / target)
        metrics["dynamic_sampling/groups_moved"].append(
            float(sum(owner[g] != r for r, groups in enumerate(plan) for g in groups)))
        return output
