"""benchmarks/bench_methods.py: rows keyed by fingerprint (resume, never reuse), the paired statistics."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.benchmarks import loaded_script


@pytest.fixture(scope="module")
def bench():
    with loaded_script("bench_methods") as module:
        yield module


@pytest.fixture
def demo_folder(tmp_path, synthetic_data_dir, tiny_vlm_path) -> Path:
    """A `pepo demo`-like folder: the synthetic data and the tiny model standing in for the warm start."""
    folder = tmp_path / "demo"
    shutil.copytree(synthetic_data_dir, folder / "data")
    shutil.copytree(tiny_vlm_path, folder / "warm_start" / "checkpoint")
    return folder


@pytest.fixture
def fake_rl(monkeypatch):
    """rl_train replaced by one that returns the start unchanged; the calls are recorded."""
    import pepo.embedded.recipe as recipe

    calls = []

    def rl_train(start, train_rows, output_dir, method, **kwargs):
        calls.append((method, kwargs["seed"], kwargs["max_steps"]))
        return recipe.RLResult(Path(start), [{"step": 1, "step_time": 0.5 if method == "grpo" else 0.6}], 1.0)

    monkeypatch.setattr(recipe, "rl_train", rl_train)
    return calls


def _args(folder: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--from", str(folder), "--methods", "grpo,pepo_g", "--seeds", "0", "1", "--questions", "4",
            "--eval-samples", "2", "--label", "test", "--results", str(tmp_path / "res" / "bm"),
            "--cache", str(tmp_path / "cache"), *extra]


def test_rows_are_appended_resumed_and_never_reused_across_settings(bench, demo_folder, fake_rl, tmp_path, monkeypatch):
    (tmp_path / "res").mkdir()
    rows_path = tmp_path / "res" / "bm.jsonl"
    assert bench.main(_args(demo_folder, tmp_path)) == 0
    assert fake_rl == [("grpo", 0, 100), ("pepo_g", 0, 100), ("grpo", 1, 100), ("pepo_g", 1, 100)]
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert [(r["method"], r["seed"]) for r in rows] == [("warm_start", 0), ("grpo", 0), ("pepo_g", 0), ("grpo", 1), ("pepo_g", 1)]
    assert all(len(r["per_question"]) == 4 and r["avg"] == pytest.approx(sum(r["per_question"]) / 4) for r in rows)

    # The same command again: every row is there, nothing runs.
    fake_rl.clear()
    assert bench.main(_args(demo_folder, tmp_path)) == 0
    assert fake_rl == [] and len(rows_path.read_text().splitlines()) == 5

    # One method's config changed: only that method runs again.
    import pepo.embedded.recipe as recipe

    monkeypatch.setitem(recipe.RL_METHODS, "pepo_g", {**recipe.RL_METHODS["pepo_g"], "gate_alpha": 0.1})
    assert bench.main(_args(demo_folder, tmp_path)) == 0
    assert fake_rl == [("pepo_g", 0, 100), ("pepo_g", 1, 100)]

    # Another setting: a new fingerprint, everything runs again, in its own section of the tables.
    fake_rl.clear()
    assert bench.main(_args(demo_folder, tmp_path, "--rl-steps", "7")) == 0
    assert fake_rl == [("grpo", 0, 7), ("pepo_g", 0, 7), ("grpo", 1, 7), ("pepo_g", 1, 7)]
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert len(rows) == 12 and len({r["fingerprint"] for r in rows}) == 2
    report = json.loads((tmp_path / "res" / "bm.json").read_text())
    assert len(report) == 2
    newest = report[rows[-1]["fingerprint"]]
    assert newest["settings"]["rl_steps"] == 7
    assert newest["summary"]["pepo_g"]["vs_base"]["step_time_ratio"] == pytest.approx(0.6 / 0.5)
    markdown = (tmp_path / "res" / "bm.md").read_text()
    assert markdown.count("## task one_fact, label test") == 2 and "RL 7 steps" in markdown


def test_the_warm_start_data_and_its_weights_are_fingerprinted(bench, demo_folder):
    settings = bench.BenchSettings("x", "one_fact", "test", 4, 2, 10, 4, 8, 2e-4, 16, "dapo", True)
    before = bench.fingerprint(demo_folder, settings)
    assert bench.fingerprint(demo_folder, settings) == before
    image = next((demo_folder / "data" / "images" / "test").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    after_data = bench.fingerprint(demo_folder, settings)
    weights = demo_folder / "warm_start" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert len({before, after_data, bench.fingerprint(demo_folder, settings)}) == 3


def _row(method, seed, avg, per_question, step):
    return {"method": method, "seed": seed, "avg": avg, "per_question": per_question, "rl_seconds": 60.0,
            "eval_seconds": 30.0, "step_time_median": step}


def test_summary_hand_worked(bench):
    rows = [_row("grpo", 0, 0.50, [0.0, 1.0], 1.0), _row("grpo", 1, 0.60, [0.5, 0.5], 2.0),
            _row("pepo_g", 0, 0.55, [0.5, 1.0], 1.1), _row("pepo_g", 1, 0.62, [0.5, 1.0], 2.4)]
    summary = bench.summarise(rows)
    grpo, pepo = summary["grpo"], summary["pepo_g"]
    # mean 0.55; half-width t(0.975, 1) * stdev / sqrt(2) = 12.7062 * 0.0707107 / 1.41421
    assert grpo["mean"] == pytest.approx(0.55) and grpo["ci95"] == pytest.approx(12.7062047 * 0.05, rel=1e-6)
    # one run's SE over questions: stdev([0, 1]) / sqrt(2) = 0.5 and 0 -> mean 0.25
    assert grpo["question_se"] == pytest.approx(0.25) and grpo["minutes_per_run"] == pytest.approx(1.5)
    v = pepo["vs_base"]
    assert v["base"] == "grpo" and v["diff"] == pytest.approx([0.05, 0.02]) and v["mean"] == pytest.approx(0.035)
    # paired t = 0.035 / (stdev([0.05, 0.02]) / sqrt 2) = 0.035 / 0.015 = 2.3333 on 1 df (Cauchy):
    # p = 1 - 2 atan(t) / pi
    assert v["p_ttest_rel"] == pytest.approx(1 - 2 * math.atan(0.035 / 0.015) / math.pi, rel=1e-9)
    assert v["ci95"] == pytest.approx(12.7062047 * 0.015, rel=1e-6)
    # per-question differences [0.5, 0] and [0, 0.5]: SE 0.35355 each
    assert v["question_se"] == pytest.approx(math.sqrt(0.125) / math.sqrt(2))
    assert v["step_time_ratio"] == pytest.approx((1.1 + 1.2) / 2)
    assert "vs_base" not in grpo


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=8))
def test_interval_and_paired_test_agree(bench, pairs):
    # 0 outside the 95% t interval of the differences <=> ttest_rel's p < 0.05 (same t, same df).
    diffs = [a - b for a, b in pairs]
    if max(diffs) - min(diffs) < 1e-6:
        return  # no spread: no t statistic
    mean, half = bench.t_interval(diffs)
    rows = [_row("grpo", s, b, [b], 1.0) for s, (a, b) in enumerate(pairs)]
    rows += [_row("pepo_g", s, a, [a], 1.0) for s, (a, b) in enumerate(pairs)]
    p = bench.summarise(rows)["pepo_g"]["vs_base"]["p_ttest_rel"]
    if abs(abs(mean) - half) > 1e-9:
        assert (abs(mean) > half) == (p < 0.05)


def test_every_base_differs_only_by_its_methods_fields(bench, monkeypatch):
    import pepo.embedded.recipe as recipe

    bench.check_bases(list(bench.BASES))
    monkeypatch.setitem(recipe.RL_METHODS, "vppo", {**recipe.RL_METHODS["vppo"], "epsilon_high": 0.2})
    with pytest.raises(SystemExit, match="vppo changes its base dapo's \\['epsilon_high'\\]"):
        bench.check_bases(["vppo"])


def test_bad_arguments_and_rows_fail_in_one_line(bench, demo_folder, tmp_path, capsys, fake_rl):
    cases = [
        (["--methods", "grpo,ppo"], "unknown method(s) ['ppo']"),
        (["--from", str(tmp_path / "none")], "no warm_start/checkpoint/config.json"),
        (["--from", str(demo_folder), "--questions", "9"], "--questions 9: the test split has 8 questions"),
        (["--from", str(demo_folder), "--task", "two_facts"], "not --task two_facts's question types"),
        (["--seeds", "1", "1"], "--seeds must be distinct"),
        (["--rl-steps", "0"], "--rl-steps must be >= 1"),
        (["--learning-rate", "2"], "--learning-rate must be in (0, 1)"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv + ["--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "bm")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "bm.jsonl").exists() and fake_rl == []  # refused before any work
    rows = tmp_path / "bad.jsonl"
    rows.write_text('{"method": "grpo"}\n{"method": \n')
    with pytest.raises(SystemExit, match="bad.jsonl:2: not a JSON row"):
        bench.main(["--report-only", "--results", str(tmp_path / "bad")])


@pytest.mark.slow
def test_real_rl_end_to_end(bench, demo_folder, tmp_path):
    # Real RL (2 steps) and evaluation from the tiny model: the rows and tables come out.
    argv = ["--from", str(demo_folder), "--methods", "grpo,pepo_g", "--seeds", "0", "--questions", "4",
            "--eval-samples", "2", "--rl-steps", "2", "--prompts-per-step", "2", "--results", str(tmp_path / "bm"),
            "--cache", str(tmp_path / "cache")]
    assert bench.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "bm.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["warm_start", "grpo", "pepo_g"]
    assert all(r["rl_seconds"] > 0 and r["step_time_median"] > 0 for r in rows[1:])
    assert "| pepo_g | 1 |" in (tmp_path / "bm.md").read_text()


def test_without_from_the_warm_start_is_built_once_by_the_demo_code(bench, demo_folder, fake_rl, tmp_path, monkeypatch):
    # pepo.demo.prepare (the demo's steps 1-3) stands in by copying a finished folder; the bench finds
    # it through pepo train's warm-start cache, builds it once, and reuses it on the next run.
    import pepo.demo as demo

    built = []

    def prepare(out, settings, seed=0):
        built.append((settings.qtypes, seed))
        shutil.copytree(demo_folder, out)

    monkeypatch.setattr(demo, "prepare", prepare)
    argv = ["--methods", "grpo", "--seeds", "0", "--questions", "4", "--eval-samples", "2",
            "--results", str(tmp_path / "bm"), "--cache", str(tmp_path / "cache")]
    assert bench.main(argv) == 0 and bench.main(argv) == 0
    from pepo.embedded.synthetic import TASKS

    assert built == [(TASKS["one_fact"], 0)] and fake_rl == [("grpo", 0, 100)]
    (folder,) = (tmp_path / "cache").glob("warm_start-one_fact-seed0-*")
    assert (folder / "warm_start" / "checkpoint" / "config.json").is_file()


def test_settings_take_the_demos_rl_values_unless_given(bench):
    from pepo.demo import DemoSettings

    _, args = bench.parse_args([])
    settings, demo = bench.settings_from(args)
    assert demo == DemoSettings() and settings.learning_rate == demo.rl_learning_rate
    assert (settings.rl_steps, settings.prompts_per_step, settings.questions) == (100, 16, 128)
    _, args = bench.parse_args(["--learning-rate", "1e-4", "--task", "two_facts"])
    settings, demo = bench.settings_from(args)
    assert settings.learning_rate == 1e-4 and settings.task == "two_facts" and demo.qtypes == ("count_shape_pair", "count_colour_pair", "count_colour_shape")
