"""Same seed, same run: two trainings with one seed give identical weights and metrics on CPU.

(Across processes, the resume test compares two `pepo train` processes' checkpoints bit for bit.)
"""

from __future__ import annotations

import torch

TIMING_KEYS = ("step_time", "pepo/time_s", "pepo/time_share", "train_runtime", "train_samples_per_second",
               "train_steps_per_second")


def _run(make_trainer, seed: int):
    trainer = make_trainer(seed=seed, max_steps=1, weighting="pepo", gate_temperature=0.5)
    trainer.train()
    history = [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in trainer.state.log_history]
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, history


def test_same_seed_gives_identical_weights_and_metrics(make_trainer):
    weights_a, history_a = _run(make_trainer, seed=3)
    weights_b, history_b = _run(make_trainer, seed=3)
    assert history_a == history_b and "pepo/weight/p100" in history_a[0]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    weights_c, history_c = _run(make_trainer, seed=4)  # control: the seed matters
    assert history_c != history_a
    assert any(not torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
