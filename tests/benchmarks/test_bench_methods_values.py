"""benchmarks/bench_methods.py says which method values its rows ran, beside the released scripts' (issue 28)."""

from __future__ import annotations

import pytest

from tests.benchmarks import loaded_script


@pytest.fixture(scope="module")
def bench():
    with loaded_script("bench_methods") as module:
        yield module


def test_the_table_lists_each_difference_from_the_release_with_its_reason(bench):
    rows = [{"method": "vppo", "method_config": {"perception_aware": "vppo", "vppo_k": 0.2, "vppo_beta_min": 0.8,
                                                  "vppo_entropy_coef": 0.06, "epsilon_high": 0.28,
                                                  "dynamic_sampling": True, "mask_truncated_completions": False}},
            {"method": "grpo", "method_config": {"weighting": "none", "epsilon_high": 0.2}}]
    lines = bench.released_values_table(rows)
    different = [line for line in lines if line.startswith("| vppo |") or line.startswith("| grpo |")]
    assert [line.split(" | ")[1:4] for line in different] == [["vppo_k", "0.2", "0.4"], ["vppo_beta_min", "0.8", "0.9"]]
    assert all("config default" in line for line in different)
    assert "vppo vppo_entropy_coef" in lines[-2] and "grpo epsilon_high" in lines[-2]


def test_every_bench_method_has_a_released_row(bench):
    from pepo.embedded.recipe import RL_METHODS

    import yaml

    table = yaml.safe_load(bench.RELEASES.read_text())
    assert set(bench.RELEASED_ROW) == set(RL_METHODS)
    assert all(row in table for row in bench.RELEASED_ROW.values())
    # every difference of the methods as the bench defines them has a reason of its own or the paired-design one
    assert bench.released_values_table([{"method": m, "method_config": c} for m, c in RL_METHODS.items()])
