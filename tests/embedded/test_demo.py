"""`pepo demo --quick` end to end: data, tiny model, SFT warm start, RL (GRPO and PEPO_G), report."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from pepo.demo import QUICK, main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out), "--methods", "grpo,pepo_g", "--jobs", "2"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out

    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split("|")[1].strip() for row in table] == ["warm_start", "grpo", "pepo_g"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 32
    rows = {r["method"]: r for r in metrics["rows"]}
    qtypes = Counter(json.loads(line)["qtype"] for line in (out / "data" / "test.jsonl").read_text().splitlines())
    assert sum(qtypes.values()) == 32
    for line in table:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        row = rows[cells[0]]
        # the table prints what metrics.json holds
        assert cells[1] == f"{100 * row['avg']:.1f}" and cells[2] == f"{100 * row['majority']:.1f}"
        assert cells[3] == f"{row['mean_length']:.1f}" and cells[7] == f"{100 * row['blank_avg']:.1f}"
        # PEPO's logged time share, and the paper's rho from step times (GRPO itself has none)
        share, rho = row["time_share_logged"], row["rho_vs_grpo"]
        assert cells[4] == ("n/a" if share is None else f"{share:.3f}")
        assert cells[5] == ("n/a" if rho is None else f"{rho:+.3f}")
        # at least the end token, at most max_completion_length tokens per answer
        assert 1.0 <= row["mean_length"] <= QUICK.max_completion_length
        # avg@N is the per-question-type breakdown weighted by the test split's questions of each type
        assert set(row["by_qtype"]) == set(qtypes)
        assert row["avg"] == pytest.approx(sum(qtypes[q] * v for q, v in row["by_qtype"].items()) / 32, abs=1e-12)
        lift = row["avg"] - rows["warm_start"]["avg"]
        assert row["lift"] == pytest.approx(lift, abs=1e-12)
        if cells[0] != "warm_start":
            assert cells[6].startswith(f"{100 * lift:+.1f} +- ")
    for method in ("grpo", "pepo_g"):
        log = metrics["rl_logs"][method]
        assert [r["step"] for r in log] == [1, 2, 3, 4]
        assert all(0.0 <= r["reward"] <= 1.0 for r in log)
    # PEPO_G logged its own cost and visual similarity; GRPO computed no hidden states.
    assert any("pepo/visual_similarity" in r for r in metrics["rl_logs"]["pepo_g"])
    pepo_row = next(r for r in metrics["rows"] if r["method"] == "pepo_g")
    assert pepo_row["time_share_logged"] is not None and 0.0 <= pepo_row["time_share_logged"] <= 1.0
    assert re.search(r"\| pepo_g \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+", report)

    with open(out / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # The checkpoints reload as models, and RL changed the warm start.
    import torch

    from pepo.modeling import load_model_and_processor

    start, _ = load_model_and_processor(out / "warm_start" / "checkpoint")
    tuned, _ = load_model_and_processor(out / "pepo_g" / "checkpoint")
    start_state, tuned_state = start.state_dict(), tuned.state_dict()
    assert any(not torch.equal(start_state[k], tuned_state[k]) for k in start_state)

    # The warm start trained the projector (merger) and the language model, not the vision tower.
    built, _ = load_model_and_processor(out / "tiny_vlm")
    built_state = built.state_dict()
    tower = [k for k in built_state if ".visual." in k and ".merger." not in k]
    merger = [k for k in built_state if ".merger." in k]
    assert tower and merger
    assert all(torch.equal(built_state[k], start_state[k]) for k in tower)
    assert any(not torch.equal(built_state[k], start_state[k]) for k in merger)

    # The two RL runs ran side by side in forked processes (--jobs 2), each with its console in a
    # file; run here, in this process, GRPO gives the same steps and the same test scores.
    assert "step 4/4" in (out / "grpo" / "console.log").read_text()
    _same_as_in_process(out, metrics, "grpo", tmp_path / "in_process")
    _help_examples_run_on(out, tmp_path / "examples", capsys)


# shrinks the help examples to seconds; a later option wins in argparse
HELP_EXAMPLE_OVERRIDES = ["--n", "2", "--limit", "2", "--max-new-tokens", "4", "--no-progress"]


def help_examples(command: str, capsys) -> list[str]:
    """The ``pepo <command>`` example lines of ``pepo <command> --help`` (continuation lines joined)."""
    import shlex

    from pepo.cli import main as pepo_main

    with pytest.raises(SystemExit):
        pepo_main([command, "--help"])
    text = capsys.readouterr().out.replace("\\\n", " ")
    return [shlex.split(line.split("#")[0])[1:] for line in text.splitlines() if line.startswith(f"    pepo {command} ")]


def _help_examples_run_on(out: Path, cwd: Path, capsys) -> None:
    """`pepo eval --help` and `pepo analyze --help` show examples that read what `pepo demo --quick`
    wrote (runs/demo_quick, here ``out``): each runs, shrunk by HELP_EXAMPLE_OVERRIDES."""
    from pepo.cli import main as pepo_main

    cwd.mkdir()
    for command in ("eval", "analyze"):
        examples = help_examples(command, capsys)
        assert examples, f"pepo {command} --help shows no example"
        for argv in examples:
            argv = [str(out) + a.removeprefix("runs/demo_quick") if a.startswith("runs/demo_quick") else
                    str(cwd / a) if a.startswith(("results/", "analysis/")) else a for a in argv]
            assert pepo_main([*argv, *HELP_EXAMPLE_OVERRIDES]) == 0, (argv, capsys.readouterr().err[-2000:])


def _same_as_in_process(out: Path, metrics: dict, method: str, again: Path) -> None:
    from pepo.data import load_geometry3k
    from pepo.demo import Prepared, _rl_and_evaluate
    from pepo.embedded.recipe import load_rows

    test = load_geometry3k(out / "data" / "test.jsonl", image_root=out / "data").records
    prepared = Prepared(load_rows(out / "data" / "train.jsonl"), [], test, out / "tiny_vlm",
                        out / "warm_start" / "checkpoint", [], {})
    result, tested, _ = _rl_and_evaluate(method, prepared, again, QUICK, seed=0)
    timing = {"step_time", "pepo/time_share", "pepo/time_s"}
    strip = lambda log: [{k: v for k, v in row.items() if k not in timing} for row in log]  # noqa: E731
    assert strip(result.log) == strip(metrics["rl_logs"][method])
    row = next(r for r in metrics["rows"] if r["method"] == method)
    assert (tested["avg"], tested["majority"]) == (row["avg"], row["majority"])


def test_quick_writes_to_its_own_folder_by_default(monkeypatch, tmp_path, capsys):
    import pepo.demo as demo

    seen = []

    def fake_run(out, methods, settings, seed=0, jobs=1):
        seen.append((out, settings))
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("report\n")
        return {"timings": {"total_s": 0.0}}

    monkeypatch.setattr(demo, "run_demo", fake_run)
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--quick"]) == 0 and demo.main([]) == 0
    assert [(out, settings) for out, settings in seen] == [
        (Path("runs/demo_quick"), demo.QUICK), (Path("runs/demo"), demo.DemoSettings())]


def test_report_table_and_the_loss_every_rl_row_trains_with():
    from dataclasses import asdict, replace

    import pepo.demo as demo

    row = {"avg": 0.5, "majority": 0.5, "mean_length": 6.0, "blank_avg": 0.25, "by_qtype": {}, "lift": 0.125,
           "lift_se": 0.0625, "step_time_s": None, "time_share_logged": None, "rho_vs_grpo": None}
    metrics = {"seed": 0, "n_test": 8, "sft_log": [], "timings": {"total_s": 1.0},
               "rows": [{**row, "method": "warm_start"}, {**row, "method": "grpo", "time_share_logged": 0.04}]}
    report = demo._report({**metrics, "settings": asdict(demo.QUICK)})
    assert "| grpo | 50.0 | 50.0 | 6.0 | 0.040 | n/a | +12.5 +- 6.2 | 25.0 |" in report.splitlines()
    # the demo's `grpo` row is GRPO with DAPO's token-level loss: the report says so
    assert "the `grpo` row is GRPO's group advantages with the dapo loss" in report
    plain = demo._report({**metrics, "settings": asdict(replace(demo.QUICK, rl_loss_type=None))})
    assert "`grpo` row" not in plain


def test_task_option_chooses_the_question_types(monkeypatch, tmp_path, capsys):
    import pepo.demo as demo
    from pepo.embedded.synthetic import TASKS

    seen = []

    def fake_run(out, methods, settings, seed=0, jobs=1):
        seen.append(settings)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("report\n")
        return {"timings": {"total_s": 0.0}}

    monkeypatch.setattr(demo, "run_demo", fake_run)
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--quick", "--task", "two_facts"]) == 0
    assert seen == [replace(demo.QUICK, qtypes=TASKS["two_facts"])]
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--quick", "--task", "two_facts", "--qtypes", "count_shape"])
    assert exit_info.value.code == 2 and "--task and --qtypes" in capsys.readouterr().err
    assert len(seen) == 1  # refused before any work
