"""PEPO's metrics, kept on the device until TRL logs (issue 25).

Reading a value back from a GPU (``.item()``, ``.tolist()``, ``bool(tensor)``, boolean-mask
indexing, the size exchange of ``pad_across_processes``) makes the host wait until every kernel
launched before it has run. Each micro-step therefore only *records* what a metric needs: the
detached ``(B, T)`` (or ``(B,)``) float32 values and their boolean mask, on the device, in full
shape (no boolean indexing). When TRL logs, :meth:`DeviceMetrics.flush` selects every recorded
entry's valid values at once, gathers them across processes in one ``pad_across_processes`` +
``gather``, copies them to the host once, and appends one value per recorded micro-step to TRL's
``_metrics`` lists, exactly what the per-micro-step code appended before; TRL averages each list
as it always did.

Memory: a recorded entry holds its values and mask until the next log (``(B, T)`` float32 + bool
per metric per micro-step; 3 metrics of a 16 x 4096 micro-batch are 0.9 MiB). With logging rare or
off, :meth:`DeviceMetrics.pending` lets the trainer flush early (see ``PEPOTrainer.training_step``).
"""

from __future__ import annotations

import torch

PERCENTILES = (0, 20, 40, 60, 80, 100)
# what one entry turns into: "mean" of its valid values (skipped when none), "sum" (always),
# "percentiles" name/p0 ... name/p100 (skipped when none), "min_mean_max" name/min, /mean, /max
KINDS = ("mean", "sum", "percentiles", "min_mean_max")


class DeviceMetrics:
    """Per-micro-step metric entries of one trainer, by mode ("train" / "eval"), reduced at log time."""

    def __init__(self):
        self._entries: dict[str, list[tuple[str, str, torch.Tensor, torch.Tensor]]] = {"train": [], "eval": []}

    def record(self, mode: str, name: str, kind: str, values: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Keep ``values[valid]`` for ``name`` (no host read: both are kept whole)."""
        if kind not in KINDS:
            raise ValueError(f"DeviceMetrics.record: kind {kind!r} is not one of {KINDS}")
        values = values.detach().reshape(-1).float()
        valid = torch.ones_like(values, dtype=torch.bool) if valid is None else valid.detach().reshape(-1).bool()
        self._entries[mode].append((name, kind, values, valid))

    def pending(self, mode: str) -> int:
        return len(self._entries[mode])

    def flush(self, mode: str, metrics: dict[str, list[float]], accelerator) -> int:
        """Append each recorded entry's value(s) to ``metrics`` (TRL's ``_metrics[mode]``), in record
        order; returns how many values were gathered from all processes. A collective when several processes run: every process must call it at the same point
        (every process records the same entries: nothing is recorded conditionally on data)."""
        entries, self._entries[mode] = self._entries[mode], []
        if not entries:
            return 0
        ids = torch.cat([torch.full_like(values, i) for i, (_, _, values, _) in enumerate(entries)])
        values = torch.cat([values for _, _, values, _ in entries])
        valid = torch.cat([valid for _, _, _, valid in entries])
        rows = torch.stack([ids[valid], values[valid]], dim=1)  # the local host read: how many are valid
        rows = accelerator.gather(accelerator.pad_across_processes(rows, dim=0, pad_index=-1.0)).cpu()
        rows = rows[rows[:, 0] >= 0]  # padding has id -1
        order = torch.argsort(rows[:, 0], stable=True)
        counts = torch.bincount(rows[order, 0].long(), minlength=len(entries)).tolist()
        for (name, kind, _, _), group in zip(entries, torch.split(rows[order, 1], counts)):
            _append(metrics, name, kind, group)
        return rows.size(0)


def _append(metrics: dict[str, list[float]], name: str, kind: str, values: torch.Tensor) -> None:
    """One entry's gathered valid values (a CPU tensor) as TRL metric values."""
    if kind == "sum":
        metrics[name].append(values.sum().item())
        return
    if values.numel() == 0:
        return
    if kind == "mean":
        metrics[name].append(values.mean().item())
    elif kind == "percentiles":
        q = torch.quantile(values, torch.tensor([p / 100 for p in PERCENTILES], dtype=values.dtype))
        for p, value in zip(PERCENTILES, q.tolist()):
            metrics[f"{name}/p{p}"].append(value)
    else:
        metrics[f"{name}/min"].append(values.min().item())
        metrics[f"{name}/mean"].append(values.mean().item())
        metrics[f"{name}/max"].append(values.max().item())
