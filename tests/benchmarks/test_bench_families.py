"""benchmarks/bench_families.py: one quick run of two families writes a table naming both, and the
speed-ups each family's model carries are the ones pepo.families registers for it."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import loaded_script

# one family with every speed-up but prompt sharing, one with none
FAMILIES = ("qwen3_5", "gemma3")


@pytest.fixture(scope="module")
def bench():
    with loaded_script("bench_families") as module:
        yield module


@pytest.mark.slow
def test_a_quick_run_of_two_families_reports_both_with_the_registered_speed_ups(bench, tmp_path):
    from pepo.families import FAMILIES as REGISTERED

    out = tmp_path / "families"
    assert bench.main(["--quick", "--reps", "1", "--families", ",".join(FAMILIES), "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    table = out.with_suffix(".md").read_text()
    for result in results["families"]:
        registered = REGISTERED.get(result["family"])  # the tiny family names are their model_type
        expected = {"image_sharing": bool(registered and registered.tower_merged_outputs),
                    "prompt_sharing": bool(registered and registered.shares_prompts),
                    "rope_index": bool(registered and registered.vectorised_rope_index)}
        assert result["engaged"] == expected, result["family"]
        assert not result["engaged_off"]["image_sharing"] and not result["engaged_off"]["prompt_sharing"]
        assert len(result["repetitions"]) == 1
    assert [r["family"] for r in results["families"]] == list(FAMILIES)
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["qwen3_5"][2] == "images + index" and rows["gemma3"][2] == "plain"
    assert results["command"].startswith("python ") and results["commit"]


def test_an_unknown_family_is_refused_before_any_model_is_built(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--quick", "--families", "qwen2_5_vl,llama"])
    assert exit_.value.code == 2
    assert "--families llama: not a tiny family" in capsys.readouterr().err
