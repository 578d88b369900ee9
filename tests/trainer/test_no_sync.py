"""A training step never waits for the GPU on PEPO's account (issue 15): no torch.cuda.synchronize,
and PEPO's own time, taken with CUDA events, is read only when metrics are logged."""

from __future__ import annotations

import pytest
import torch

from pepo.trainer.clock import PEPOClock


class FakeEvent:
    """Stands in for torch.cuda.Event on a CPU machine: records when it is recorded and read."""

    log: list[str] = []

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True
        FakeEvent.log.append("record")

    def synchronize(self):
        FakeEvent.log.append("synchronize")

    def elapsed_time(self, end):
        assert self.recorded and end.recorded
        FakeEvent.log.append("elapsed")
        return 2.0  # ms


def test_cuda_intervals_are_read_only_when_asked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.log = []
    clock = PEPOClock()
    for _ in range(3):
        with clock.measure(torch.device("cuda")):
            pass
    clock.close_step(1.0)
    assert FakeEvent.log == ["record"] * 6  # nothing read on the hot path
    assert clock.read_closed() == [(pytest.approx(0.006), 1.0)]
    assert FakeEvent.log.count("synchronize") == 1 and FakeEvent.log.count("elapsed") == 3
    assert clock.read_closed() == []


def test_cpu_intervals_add_up():
    clock = PEPOClock()
    with clock.measure(torch.device("cpu")):
        sum(range(10_000))
    clock.close_step(5.0)
    [(seconds, step)] = clock.read_closed()
    assert 0.0 < seconds < 5.0 and step == 5.0


@pytest.mark.parametrize("fields", [{"weighting": "pepo"}, {"weighting": "none", "perception_aware": "papo"}], ids=["pepo", "papo"])
def test_training_step_never_synchronizes(make_trainer, monkeypatch, fields):
    # Pretend a GPU is there (code that syncs "if torch.cuda.is_available()" then does), and fail on a sync.
    trainer = make_trainer(max_steps=1, **fields)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append("synchronize"))
    trainer.train()
    assert calls == []
    logs = {k for entry in trainer.state.log_history for k in entry}
    if fields["weighting"] == "none":  # PAPO: the extra forward's time, read when logging
        assert "perception_aware/forward_s" in logs
        return
    assert {"pepo/time_s", "pepo/time_share"} <= logs
    share = next(e["pepo/time_share"] for e in trainer.state.log_history if "pepo/time_share" in e)
    assert 0.0 < share < 1.0
