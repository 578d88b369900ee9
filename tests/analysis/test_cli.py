"""`pepo analyze` argument handling (the end-to-end run is in test_analyze_end_to_end.py)."""

import json
from pathlib import Path

from pepo.cli import main as pepo_main


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
