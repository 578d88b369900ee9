"""PEPO's own compute time inside a training step, measured without a host synchronisation.

On a GPU, kernels run after the host launches them: a host clock around PEPO's code measures the
launches, and ``torch.cuda.synchronize()`` to make it honest stalls the step (issue 15). So each
interval of PEPO's work is a pair of CUDA timing events recorded on the current stream, and the
events are read only when the trainer logs its metrics, after the steps they belong to. On the CPU
the work is done when the call returns: ``time.perf_counter`` is exact there.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class PEPOClock:
    """Sums the intervals measured with :meth:`measure`, step by step, and reads them when asked."""

    def __init__(self):
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # the open step's CUDA intervals
        self._host_seconds = 0.0  # the open step's CPU intervals
        self._closed: list[tuple[list, float, float]] = []  # (events, host seconds, step seconds) per closed step

    @contextmanager
    def measure(self, device: torch.device):
        """Time the block as work on ``device`` (CUDA: events on the current stream, read later)."""
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((start, end))
        else:
            begin = time.perf_counter()
            try:
                yield
            finally:
                self._host_seconds += time.perf_counter() - begin

    def close_step(self, step_seconds: float) -> None:
        """End the current optimiser step, which took ``step_seconds`` in all; nothing is read yet."""
        self._closed.append((self._events, self._host_seconds, step_seconds))
        self._events, self._host_seconds = [], 0.0

    def read_closed(self) -> list[tuple[float, float]]:
        """``(PEPO seconds, step seconds)`` of every step closed since the last call. On CUDA this waits
        for the last event of those steps (call it when logging, not on the hot path)."""
        closed, self._closed = self._closed, []
        return [(self._seconds(events) + host, step) for events, host, step in closed]

    def read_open(self) -> float:
        """PEPO seconds of the step still open (benchmarks); waits for its last event on CUDA."""
        return self._seconds(self._events) + self._host_seconds

    def reset(self) -> None:
        self._events, self._host_seconds, self._closed = [], 0.0, []

    @staticmethod
    def _seconds(events) -> float:
        if not events:
            return 0.0
        events[-1][1].synchronize()  # events complete in stream order: the last one done means all are
        return sum(start.elapsed_time(end) for start, end in events) / 1e3
