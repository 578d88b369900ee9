"""What PEPO reads back from the device inside a training step's loss forward and backward (issue 25).

On a GPU each read (``.item()``, ``.tolist()``, ``bool(tensor)``, ``int()`` / ``float()`` of a tensor,
``.cpu()``, ``.numpy()``) waits for every kernel launched before it. This CPU test counts them by
patching those methods of ``torch.Tensor`` during ``trainer.training_step``, leaving out the rollout
(``_generate_and_score_completions``: generation reads every sampled token anyway), and attributes
each read to the innermost calling frame outside torch and accelerate (accelerate's helpers read on
their caller's behalf): ``src/pepo/trainer`` (PEPO's metrics, weights and non-finite check), the rest
of ``src/pepo`` (the forward: the perception accumulator and prompt sharing, whose shapes depend on
the data), or TRL / transformers.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import pepo
from pepo.embedded import build_tiny_vlm
from pepo.modeling import load_model_and_processor

PEPO_ROOT = Path(pepo.__file__).resolve().parent
HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
HELPERS = (str(Path(torch.__file__).resolve().parent), "/accelerate/")


def _where(frame) -> str:
    """Who asked for a read: the innermost frame outside torch / accelerate."""
    while frame is not None and any(h in str(Path(frame.f_code.co_filename).resolve()) for h in HELPERS):
        frame = frame.f_back
    path = Path(frame.f_code.co_filename).resolve() if frame is not None else Path("?")
    if path.is_relative_to(PEPO_ROOT / "trainer"):
        return "pepo.trainer"
    return "pepo (forward)" if path.is_relative_to(PEPO_ROOT) else "other"


class HostReads:
    """Counts host reads by origin while ``active`` (patched on torch.Tensor by ``install``)."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.active = False

    def install(self, monkeypatch) -> None:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.active:
                    self.counts[_where(sys._getframe(1))] += 1
                    self.counts[f"{_where(sys._getframe(1))}: {_name}"] += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def around(self, method, active: bool):
        def wrapped(*args, **kwargs):
            before, self.active = self.active, active
            try:
                return method(*args, **kwargs)
            finally:
                self.active = before

        return wrapped


def reads_per_optimiser_step(make_trainer, model, monkeypatch, steps: int, **fields) -> Counter:
    trainer = make_trainer(model=model, max_steps=steps, **fields)
    reads = HostReads()
    reads.install(monkeypatch)
    trainer.training_step = reads.around(trainer.training_step, True)
    trainer._generate_and_score_completions = reads.around(trainer._generate_and_score_completions, False)
    trainer.train()
    return Counter({k: v / steps for k, v in reads.counts.items()})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for layers in (1, 2):
        model, _ = load_model_and_processor(build_tiny_vlm(tmp_path_factory.mktemp(f"vlm{layers}"), seed=0, num_layers=layers))
        out[layers] = model
    return out


@pytest.mark.parametrize("fields", [{"weighting": "pepo"}, {"weighting": "pepo", "on_nonfinite": "skip"},
                                    {"weighting": "none", "perception_aware": "papo"}], ids=["pepo", "pepo_skip", "papo"])
def test_host_reads_per_optimiser_step_do_not_grow_with_micro_steps_or_layers(make_trainer, models, monkeypatch, fields):
    reads = {(layers, accumulation): reads_per_optimiser_step(
        make_trainer, models[layers], monkeypatch, 2, gradient_accumulation_steps=accumulation, **fields)
        for layers in (1, 2) for accumulation in (1, 2)}
    # PEPO's metrics, weights and non-finite check: nothing during the micro-steps; on_nonfinite="error"
    # reads one flag per optimiser step, after the last micro-step's backward (before the optimiser step)
    expected = 1 if fields.get("on_nonfinite", "error") == "error" and fields["weighting"] != "none" else 0
    assert {key: counts["pepo.trainer"] for key, counts in reads.items()} == dict.fromkeys(reads, expected)
    # the forward's own reads (shapes of the prompt sharing and of the perception accumulator) do not grow
    # with the number of layers
    for accumulation in (1, 2):
        assert reads[1, accumulation]["pepo (forward)"] == reads[2, accumulation]["pepo (forward)"]
