"""`pepo eval` / `pepo analyze` resume only the rows their own run produced (docs/reliability.md).

A first run writes `<out>.questions.jsonl`; a second run into the same file with another model, seed,
data file (same name, other content), line order or setting is refused with one line naming the
field and both values, exit 2, before the model loads. Without `--out` the rows go next to the model,
so two models never share them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from pepo.cli import main as pepo_main
from pepo.evaluation.cli import default_out, results_jsonl_path


def _argv(model, data, out, *extra) -> list[str]:
    argv = ["eval", "--model", str(model), "--benchmark", "geometry3k", "--data", str(data), "--n", "2",
            "--max-new-tokens", "2", "--batch-size", "4", "--limit", "2", "--no-progress", *extra]
    return argv + (["--out", str(out)] if out is not None else [])


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The tiny VLM with other random weights (seed 1): same config, another model."""
    from pepo.embedded import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm_seed1"), seed=1)


@pytest.fixture
def data(synthetic_data_dir, tmp_path) -> Path:
    """A copy of the synthetic test split whose images stay under the synthetic folder."""
    copy = tmp_path / "data" / "test.jsonl"
    copy.parent.mkdir()
    shutil.copy(synthetic_data_dir / "test.jsonl", copy)
    (copy.parent / "images").symlink_to(synthetic_data_dir / "images")
    return copy


@pytest.fixture
def first_run(tiny_vlm_path, data, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert pepo_main(_argv(tiny_vlm_path, data, out)) == 0
    capsys.readouterr()
    return out, results_jsonl_path(out).read_text()


def _refused(capsys, argv, field):
    assert pepo_main(argv) == 2
    line = _one_error_line(capsys)
    assert f"holds rows of another run: {field} is " in line and "use another --out, or --overwrite" in line, line
    return line


def test_another_model_is_refused_and_the_rows_stay(first_run, other_model, data, capsys):
    out, rows = first_run
    line = _refused(capsys, _argv(other_model, data, out), "provenance.model.sha256")
    assert line.startswith(f"pepo eval: {results_jsonl_path(out)} holds rows of another run")
    assert results_jsonl_path(out).read_text() == rows  # untouched


def test_another_seed_or_setting_is_refused(first_run, tiny_vlm_path, data, capsys):
    out, _ = first_run
    assert "config.seed is 0 there, 3 here" in _refused(capsys, _argv(tiny_vlm_path, data, out, "--seed", "3"), "config.seed")
    _refused(capsys, _argv(tiny_vlm_path, data, out, "--max-new-tokens", "3"), "config.max_new_tokens")
    _refused(capsys, _argv(tiny_vlm_path, data, out, "--dtype", "bfloat16"), "provenance.dtype")


def test_another_data_file_of_the_same_name_or_line_order_is_refused(first_run, tiny_vlm_path, data, capsys):
    out, _ = first_run
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same file name, same questions, other order
    _refused(capsys, _argv(tiny_vlm_path, data, out), "provenance.data.sha256")
    record = json.loads(lines[0])
    record["solution"] = "not the answer"
    data.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")  # same name and order, one answer edited
    _refused(capsys, _argv(tiny_vlm_path, data, out), "provenance.data.sha256")


def test_overwrite_starts_over_and_the_same_command_resumes(first_run, tiny_vlm_path, other_model, data, caplog):
    out, rows = first_run
    with caplog.at_level(logging.INFO, logger="pepo.evaluation.evaluator"):
        assert pepo_main(_argv(tiny_vlm_path, data, out)) == 0  # the same command: resumed, nothing redone
    assert results_jsonl_path(out).read_text() == rows
    assert "resuming: 2 of 2 questions" in caplog.text
    assert pepo_main(_argv(other_model, data, out, "--overwrite")) == 0
    header = json.loads(results_jsonl_path(out).read_text().splitlines()[0])
    assert header["provenance"]["model"]["path"] == str(other_model.resolve())
    assert json.loads(out.read_text())["config"]["model"] == str(other_model)


def test_rows_of_edited_questions_are_never_reused(tiny_vlm_path, data, tmp_path):
    """In Python too: a row is reused only for the question (content hash) it answered."""
    from pepo.data import load_geometry3k
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    model, processor = load_model_and_processor(tiny_vlm_path)
    records = load_geometry3k(data).records[:2]
    path = tmp_path / "rows.jsonl"
    settings = dict(n=1, max_new_tokens=2, batch_size=2, progress=False, results_path=path)
    evaluate_model(model, processor, records, **settings)
    records[1].solution = "edited"
    evaluated = []
    evaluate_model(model, processor, records, on_question=lambda row: evaluated.append(row["id"]), **settings)
    assert evaluated == [records[1].id]  # the edited question is redone, the other one resumed


def test_without_out_each_model_gets_its_own_results(tiny_vlm_path, other_model, data, tmp_path, caplog):
    model_a, model_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_vlm_path, model_a)
    shutil.copytree(other_model, model_b)
    with caplog.at_level(logging.INFO, logger="pepo.evaluation.evaluator"):
        assert pepo_main(_argv(model_a, data, None)) == 0
        assert pepo_main(_argv(model_b, data, None)) == 0
    out_a, out_b = default_out(model_a, "geometry3k", data), default_out(model_b, "geometry3k", data)
    assert out_a == model_a / "eval" / "geometry3k-test.json" and out_a.is_file() and out_b.is_file()
    assert "resuming" not in caplog.text  # model b generated its own answers
    header_b = json.loads(results_jsonl_path(out_b).read_text().splitlines()[0])
    assert header_b["provenance"]["model"]["path"] == str(model_b.resolve())


def test_a_run_that_fails_leaves_no_results_file(tiny_vlm_path, data, tmp_path, monkeypatch, capsys):
    import pepo.evaluation.evaluator as evaluator

    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setitem(evaluator._BACKENDS, "transformers", broken)
    out = tmp_path / "results.json"
    with pytest.raises(RuntimeError, match="generation failed"):
        pepo_main(_argv(tiny_vlm_path, data, out))
    assert not results_jsonl_path(out).exists() and not out.exists()  # no header-only file: rerunning just runs
    monkeypatch.undo()
    assert pepo_main(_argv(tiny_vlm_path, data, out)) == 0


def test_ctrl_c_is_one_line_saying_how_to_resume(tiny_vlm_path, data, tmp_path, monkeypatch, capsys):
    import pepo.evaluation.evaluator as evaluator

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(evaluator._BACKENDS, "transformers", interrupted)
    out = tmp_path / "results.json"
    try:
        code = pepo_main(_argv(tiny_vlm_path, data, out))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped pepo eval as a traceback")
    assert code == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"pepo eval: interrupted; the finished questions are in "
                                            f"{results_jsonl_path(out)}; rerun the same command to resume")
    assert "Traceback" not in err


@pytest.mark.slow
def test_analyze_into_the_same_out_with_another_model_is_refused(tiny_vlm_path, other_model, data, tmp_path, capsys):
    out = tmp_path / "analysis"
    argv = ["analyze", "--data", str(data), "--n", "2", "--limit", "2", "--max-new-tokens", "4", "--top-k", "2",
            "--out", str(out), "--no-progress"]
    assert pepo_main([*argv, "--model", str(tiny_vlm_path)]) == 0
    samples = (out / "samples.jsonl").read_text()
    capsys.readouterr()
    assert pepo_main([*argv, "--model", str(other_model)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"pepo analyze: {out / 'samples.jsonl'} holds samples of another run: provenance.model.sha256 is ")
    assert (out / "samples.jsonl").read_text() == samples
    assert pepo_main([*argv, "--model", str(other_model), "--overwrite"]) == 0
    assert (out / "samples.jsonl").read_text() != samples
