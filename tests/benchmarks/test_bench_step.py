"""benchmarks/bench_step.py's summary: paired ratios per repetition, a peak ratio only where measurable."""

from __future__ import annotations

import pytest

from tests.benchmarks import loaded_script


@pytest.fixture(scope="module")
def bench():
    with loaded_script("bench_step") as module:
        yield module


def repetition(bench, update_s: dict, peak_mib: dict) -> dict:
    return {name: {"update_s": update_s[name], "update_cpu_s": update_s[name], "pepo_own_s": 0.001,
                   "update_peak_mib": peak_mib[name]} for name in bench.METHODS}


def test_rho_is_paired_per_repetition_and_peak_ratio_is_peak_over_grpo(bench):
    reps = [repetition(bench, {"none": 1.0, "pepo": 1.1, "high_entropy": 1.0, "none_control": 1.0},
                       {"none": 100.0, "pepo": 150.0, "high_entropy": 100.0, "none_control": 100.0}),
            repetition(bench, {"none": 2.0, "pepo": 2.4, "high_entropy": 2.0, "none_control": 2.0},
                       {"none": 100.0, "pepo": 150.0, "high_entropy": 100.0, "none_control": 100.0})]
    pepo = {row["method"]: row for row in bench.summarise(reps, "cpu")}["pepo"]
    assert pepo["rho_update"][1] == pytest.approx(0.15)  # median of +10% and +20%, not 3.5 / 3.0 - 1
    assert pepo["update_peak_ratio"] == pytest.approx(1.5)


def test_an_update_below_measurable_memory_has_no_peak_ratio(bench):
    # a tiny model's update can fit in memory the process already holds: the base method's peak is 0
    reps = [repetition(bench, dict.fromkeys(bench.METHODS, 1.0), dict.fromkeys(bench.METHODS, 0.0))]
    summary = bench.summarise(reps, "cpu")
    assert all(row["update_peak_ratio"] is None for row in summary)
    assert bench.markdown_table(summary).splitlines()[-1].endswith("| - |")


def test_compare_table_puts_each_versions_figures_side_by_side(bench):
    old = [repetition(bench, dict(bench.METHODS, none=1.0, pepo=1.2, high_entropy=1.0, none_control=1.0),
                      dict.fromkeys(bench.METHODS, 100.0))]
    new = [repetition(bench, dict(bench.METHODS, none=1.0, pepo=1.1, high_entropy=1.0, none_control=1.0),
                      dict.fromkeys(bench.METHODS, 100.0))]
    table = bench.side_by_side({"77436cb": bench.summarise(old, "cpu"), "this checkout": bench.summarise(new, "cpu")})
    header, _, *rows = table.splitlines()
    assert "rho update [IQR] (77436cb) | rho update [IQR] (this checkout)" in header
    pepo = next(row for row in rows if row.startswith("| pepo |"))
    assert "+20.00% [+20.00, +20.00] | +10.00% [+10.00, +10.00]" in pepo
    assert "0.083% | 0.091%" in pepo  # 1 ms of PEPO's own time over each version's 1.2 s and 1.1 s update
