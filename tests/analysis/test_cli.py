"""`pepo analyze` argument handling (the end-to-end run is in test_analyze_end_to_end.py)."""

import argparse
import json
import math
from types import SimpleNamespace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pepo.cli import main as pepo_main
from pepo.cli_checks import ArgumentError, check_at_least, finite_float


def test_needs_a_model_or_runs(tmp_path, capsys):
    assert pepo_main(["analyze", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "pepo analyze: give --model and --data (Figures 2, 3), --runs (Figure 6), or both\n"
    assert pepo_main(["analyze", "--model", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "pepo analyze: --model and --data go together\n"


def test_bad_run_is_reported_with_its_path(tmp_path, capsys):
    assert pepo_main(["analyze", "--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing: no such run directory" in capsys.readouterr().err


def test_runs_only_draws_figure_6(tmp_path):
    (tmp_path / "run").mkdir()
    history = [{"step": 1, "reward": 0.5, "entropy": 1.0}, {"step": 2, "reward": 0.75, "entropy": 0.9}]
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert pepo_main(["analyze", "--runs", str(tmp_path / "run"), "--out", str(tmp_path / "o")]) == 0
    report = (tmp_path / "o" / "report.md").read_text()
    assert "| run | reward | reward | 2 | 0.5000 | 0.7500 |" in report
    assert (tmp_path / "o" / "fig6_dynamics.png").is_file() and not (tmp_path / "o" / "tokens.csv").exists()


def test_eval_and_analyze_share_their_options():
    """One spelling, default and help text for what `pepo eval` and `pepo analyze` both take."""
    from pepo.analysis.cli import _parser as analyze_parser
    from pepo.evaluation.cli import _parser as eval_parser

    def options(parser):
        return {action.option_strings[0]: (action.default, action.help) for action in parser._actions}

    ev, an = options(eval_parser()), options(analyze_parser())
    shared = {"--model", "--benchmark", "--data", "--split", "--image-root", "--allow-absolute-paths", "--skip-invalid",
              "--n", "--temperature", "--top-p", "--max-new-tokens", "--batch-size", "--seed", "--dtype", "--device",
              "--overwrite", "--no-progress"}
    assert shared <= set(ev) and shared <= set(an)
    assert {name: ev[name] for name in shared} == {name: an[name] for name in shared}
    assert ev["--benchmark"][0] == "geometry3k"


def test_analyze_weights_default_to_the_recipes():
    import yaml

    from pepo.analysis.cli import _parser as analyze_parser

    args = analyze_parser().parse_args(["--out", "x"])
    for recipe in ("pepo_g_tiny.yaml", "pepo_g_qwen2_5_vl_3b_geometry3k.yaml"):
        config = yaml.safe_load((Path(__file__).parents[2] / "recipes" / recipe).read_text())
        assert (args.gate_temperature, args.gate_alpha, args.weighting) == (
            config["gate_temperature"], config["gate_alpha"], config["weighting"]), recipe


@pytest.mark.parametrize("option", ["--gate-alpha", "--gate-temperature", "--temperature", "--top-p"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_nan_and_inf_are_refused_in_one_line(tmp_path, capsys, option, value):
    # before issue 25: --gate-temperature nan wrote weights 0, --gate-alpha inf NaN weights, exit 0
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exited:  # argparse's own error, made one line by OneLineParser
        pepo_main(["analyze", "--runs", str(tmp_path), "--out", str(out), f"{option}={value}"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"pepo analyze: argument {option}: must be a finite number, got {value!r} (see pepo analyze --help)\n")
    assert not out.exists()


@settings(max_examples=30, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_finite_float_accepts_exactly_the_finite_floats(value):
    text = repr(value)
    if math.isfinite(value):
        assert finite_float(text) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number"):
            finite_float(text)


def test_check_at_least_refuses_nan():
    with pytest.raises(ArgumentError, match="--top-k must be >= 1, got nan"):
        check_at_least("--top-k", float("nan"), 1)


def test_a_model_without_an_image_token_is_refused_before_it_loads(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys,
                                                                   monkeypatch):
    # before: analyze ran, and wrote a similarity of 0 for every token (no image token to read it at)
    import pepo.image_tokens
    import pepo.modeling
    from pepo.analysis import collect_responses

    monkeypatch.setattr(pepo.image_tokens, "resolve_image_token_id", lambda *a, **k: None)
    monkeypatch.setattr(pepo.modeling, "load_model_and_processor", lambda *a, **k: pytest.fail("weights loaded"))
    out = tmp_path / "o"
    code = pepo_main(["analyze", "--model", str(tiny_vlm_path), "--data", str(synthetic_data_dir / "test.jsonl"),
                      "--out", str(out), "--n", "1", "--limit", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"pepo analyze: --model {tiny_vlm_path}: no image token id in its config") and not out.exists()
    import pepo.analysis.collect

    monkeypatch.setattr(pepo.analysis.collect, "evaluate_model", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=r"^no image token id for SimpleNamespace \(.*\): the perception signals are "
                       r"read at the image tokens and would all be 0$"):
        collect_responses(SimpleNamespace(config=None), None, [], n=1)
