"""benchmarks/bench_demo_time.py --phases: the phase table of demo runs, sequential or side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import loaded_script


@pytest.fixture(scope="module")
def bench():
    with loaded_script("bench_demo_time") as module:
        yield module


def metrics(path: Path, **timings) -> str:
    path.write_text(json.dumps({"timings": timings, "settings": {"rl_steps": 200}, "sft_log": [{"step": 1100}],
                                **({"jobs": 2} if "methods_wall_s" in timings else {})}))
    return str(path)


def test_phase_table_of_a_sequential_and_a_side_by_side_run(bench, tmp_path, capsys):
    before = metrics(tmp_path / "before.json", data_and_model_s=30, warm_start_s=400, rl_grpo_s=300,
                     rl_pepo_g_s=310, total_s=1100)
    after = metrics(tmp_path / "after.json", data_and_model_s=27, warm_start_s=168, rl_grpo_s=337,
                    rl_pepo_g_s=320, methods_wall_s=352, total_s=557)
    assert bench.main(["--phases", before, after]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    # one after the other: the rest is what the RL runs leave (their evaluations)
    assert rows[0] == (f"| {before} | 1100 s | 30 s | 400 s (1100 steps) | grpo 300 s, pepo_g 310 s (200 steps each) "
                       "| - | 60 s |")
    # side by side: RL times overlap, so the rest is what the wall time of steps 4-5 leaves
    assert rows[1] == (f"| {after} | 557 s | 27 s | 168 s (1100 steps) | grpo 337 s, pepo_g 320 s (200 steps each) "
                       "| 352 s (2 at a time) | 10 s |")
