"""benchmarks/bench_mrope.py: both indices agree on the demo's batch shape, and a row per way is printed."""

from __future__ import annotations

from tests.benchmarks import loaded_script


def test_prints_both_ways_after_checking_they_agree(capsys):
    with loaded_script("bench_mrope") as bench:
        assert bench.main(["--rows", "8", "--repeats", "1"]) == 0
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["transformers get_rope_index", "pepo.mrope.rope_index"]
