"""Argument and data errors of `pepo eval`, `pepo analyze` and `pepo demo` through the command line:
exit code 2, one line naming what is wrong and the fix, no traceback, before any model loads
(docs/reliability.md, "Command-line errors")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import pepo.modeling
from pepo.cli import main as pepo_main


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything loads model weights: these errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the argument error")

    monkeypatch.setattr(pepo.modeling.AutoModelForImageTextToText, "from_pretrained", refuse)


def _run(capsys, argv) -> str:
    """Run ``pepo argv`` expecting exit code 2; returns the one line it printed."""
    try:
        code = pepo_main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = err.strip().splitlines()
    assert len(errors) == 1, err
    return errors[0]


def _eval(model, data, *extra) -> list[str]:
    return ["eval", "--model", str(model), "--benchmark", "geometry3k", "--data", str(data), "--no-progress", *extra]


@pytest.mark.parametrize(("extra", "line"), [
    (["--n", "0"], "pepo eval: --n must be >= 1, got 0"),
    (["--batch-size", "0"], "pepo eval: --batch-size must be >= 1, got 0"),
    (["--limit", "0"], "pepo eval: --limit must be >= 1, got 0"),
    (["--limit", "-3"], "pepo eval: --limit must be >= 1, got -3"),
    (["--max-new-tokens", "0"], "pepo eval: --max-new-tokens must be >= 1, got 0"),
    (["--temperature", "0"], "pepo eval: --temperature 0 means greedy decoding, which gives one answer per question: "
                             "use --n 1 (got --n 8), or a temperature > 0 to sample 8"),
    (["--temperature", "-1"], "pepo eval: --temperature must be >= 0, got -1.0"),
    (["--top-p", "0"], "pepo eval: --top-p must be in (0, 1], got 0.0"),
    (["--dtype", "fp8"], "pepo eval: --dtype fp8: choose one of auto, bfloat16, float16, float32"),
    (["--device", "tpu:0"], "pepo eval: --device tpu:0: not a device name; use e.g. cpu, cuda, cuda:0, mps"),
    (["--n", "x"], "pepo eval: argument --n: invalid int value: 'x' (see pepo eval --help)"),
])
def test_eval_argument_errors(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, no_model_loading, extra, line):
    out = tmp_path / "r.json"
    assert _run(capsys, _eval(tiny_vlm_path, synthetic_data_dir / "test.jsonl", "--out", str(out), *extra)) == line
    assert not out.exists() and not (tmp_path / "r.questions.jsonl").exists()


def test_eval_device_that_this_machine_lacks(tiny_vlm_path, synthetic_data_dir, capsys, no_model_loading):
    import torch

    if torch.cuda.is_available():
        device, message = f"cuda:{torch.cuda.device_count()}", "CUDA GPU(s)"
    else:
        device, message = "cuda", "no CUDA GPU on this machine"
    line = _run(capsys, _eval(tiny_vlm_path, synthetic_data_dir / "test.jsonl", "--device", device))
    assert line.startswith(f"pepo eval: --device {device}: ") and message in line


def test_eval_out_paths(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, no_model_loading, monkeypatch):
    data = synthetic_data_dir / "test.jsonl"
    assert _run(capsys, _eval(tiny_vlm_path, data, "--out", str(tmp_path))) == (
        f"pepo eval: --out {tmp_path}: is a folder; give a file name, e.g. --out {tmp_path / 'results.json'}")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    # root may write into a read-only folder: say the permission is missing, as it is for other users
    import pepo.cli_checks

    access = pepo.cli_checks.os.access
    monkeypatch.setattr(pepo.cli_checks.os, "access", lambda path, mode: Path(path) != locked and access(path, mode))
    assert _run(capsys, _eval(tiny_vlm_path, data, "--out", str(locked / "sub" / "r.json"))) == (
        f"pepo eval: --out {locked / 'sub' / 'r.json'}: cannot write under {locked} (permission denied); choose another --out")


def test_eval_out_paths_that_are_no_files(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, no_model_loading):
    data = synthetic_data_dir / "test.jsonl"
    file = tmp_path / "file"
    file.write_text("x")
    assert _run(capsys, _eval(tiny_vlm_path, data, "--out", str(file / "r.json"))) == (
        f"pepo eval: --out {file / 'r.json'}: {file} is a file, not a folder; choose another --out")
    assert _run(capsys, _eval(tiny_vlm_path, data, "--out", "/dev/null")) == (
        "pepo eval: --out /dev/null: not a regular file (a device or a pipe); results go to a file and a "
        "<name>.questions.jsonl beside it: give a file name, e.g. --out results.json")
    assert not Path("/dev/null.questions.jsonl").exists()
    if Path("/proc/self").is_dir():  # Linux: os.access says yes to root there, creating a file fails
        line = _run(capsys, _eval(tiny_vlm_path, data, "--out", "/proc/x.json"))
        assert line.startswith("pepo eval: --out /proc/x.json: cannot ") and line.endswith("; choose another --out")


def test_eval_data_that_pepo_cannot_read(tiny_vlm_path, tmp_path, capsys, no_model_loading):
    csv = tmp_path / "x.csv"
    csv.write_text("question,answer\n1+1,2\n")
    assert _run(capsys, _eval(tiny_vlm_path, csv)) == (
        f"pepo eval: {csv}: not a data file pepo reads (.jsonl, .json, .parquet); convert it, or pass a folder of "
        "such files")
    corrupt = tmp_path / "test.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    assert _run(capsys, _eval(tiny_vlm_path, corrupt)).startswith(f"pepo eval: {corrupt}: not a readable parquet file (")


def test_eval_no_progress_hides_the_weight_loading_bar(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    def stderr_of(*extra):
        hf_logging.enable_progress_bar()  # as a fresh process starts (another test may have turned the bars off)
        argv = ["eval", "--model", str(tiny_vlm_path), "--data", str(synthetic_data_dir / "test.jsonl"), "--limit", "1",
                "--n", "1", "--max-new-tokens", "1", "--overwrite", "--out", str(tmp_path / "r.json"), *extra]
        assert pepo_main(argv) == 0
        return capsys.readouterr().err

    try:
        assert "Loading weights" in stderr_of()  # the bar this test looks for is there without the option
        assert "Loading weights" not in stderr_of("--no-progress")
    finally:
        hf_logging.enable_progress_bar()


def test_eval_model_paths(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, no_model_loading):
    data = synthetic_data_dir / "test.jsonl"
    assert _run(capsys, _eval(tmp_path / "missing", data)) == (
        f"pepo eval: --model {tmp_path / 'missing'}: no such folder (pepo loads local checkpoints only)")
    assert _run(capsys, _eval(tmp_path, data)) == (
        f"pepo eval: --model {tmp_path}: no config.json in this folder; pass a save_pretrained folder")
    # the demo's layout: runs/demo/pepo_g holds the checkpoint in checkpoint/
    run = tmp_path / "pepo_g"
    shutil.copytree(tiny_vlm_path, run / "checkpoint")
    assert _run(capsys, _eval(run, data)) == (
        f"pepo eval: --model {run}: no config.json in this folder; did you mean --model {run / 'checkpoint'}?")


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_help_examples_keep_their_line_breaks_and_cite_nothing_private(command, capsys):
    """The examples' continuation lines stay lines (a backslash-newline in a plain docstring joins them),
    and they read what `pepo demo --quick` writes (tests/embedded/test_demo.py runs them on its output)."""
    with pytest.raises(SystemExit):
        pepo_main([command, "--help"])
    text = capsys.readouterr().out
    assert f"pepo {command} --model runs/demo_quick/pepo_g/checkpoint --benchmark geometry3k \\\n" \
           "        --data runs/demo_quick/data/test.jsonl" in text
    assert "spec" not in text.lower()


def test_eval_data_folder_lists_its_files_and_refuses_mixed_splits(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys,
                                                                   monkeypatch):
    fast = ["--n", "1", "--max-new-tokens", "1"]  # were the folder read, the run would stay short
    assert _run(capsys, _eval(tiny_vlm_path, synthetic_data_dir, *fast, "--out", str(tmp_path / "r.json"))) == (
        f"pepo eval: {synthetic_data_dir}: this folder holds the splits test, train, val; name one (--split test) "
        "or pass its file")
    assert _run(capsys, _eval(tiny_vlm_path, synthetic_data_dir, "--split", "dev", "--out", str(tmp_path / "r.json"))) == (
        f"pepo eval: {synthetic_data_dir}: no data file of split 'dev' (splits found: test, train, val)")
    # with the split named, the files read are listed (the model is not needed to see that)
    import pepo.evaluation.cli as eval_cli

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cli, "_load_model", stop)
    try:
        code = pepo_main(_eval(tiny_vlm_path, synthetic_data_dir, "--split", "test", "--out", str(tmp_path / "r.json")))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped pepo eval as a traceback")
    assert code == 130
    assert "pepo eval: read 8 questions from 1 file(s): test.jsonl" in capsys.readouterr().err


@pytest.fixture
def data_with_a_long_thin_image(synthetic_data_dir, tmp_path) -> Path:
    """The synthetic test split with its second record's image replaced by a valid 2000x5 PNG, which
    Qwen2-VL's image processor refuses (aspect ratio > 200)."""
    folder = tmp_path / "data"
    shutil.copytree(synthetic_data_dir, folder)
    lines = (folder / "test.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    Image.new("RGB", (2000, 5), "white").save(folder / "thin.png")
    record["images"] = ["thin.png"]
    lines[1] = json.dumps(record)
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "test.jsonl"


def test_eval_refuses_an_image_the_processor_refuses(tiny_vlm_path, data_with_a_long_thin_image, tmp_path, capsys,
                                                     no_model_loading):
    data = data_with_a_long_thin_image
    assert _run(capsys, _eval(tiny_vlm_path, data, "--out", str(tmp_path / "r.json"))) == (
        f"pepo eval: {data}:2: images[0]: image '{data.parent / 'thin.png'}': 2000x5 is refused by the model's image "
        "processor (absolute aspect ratio must be smaller than 200, got 400.0)")


def test_eval_skip_invalid_skips_it(tiny_vlm_path, data_with_a_long_thin_image, tmp_path, capsys):
    data, out = data_with_a_long_thin_image, tmp_path / "r.json"
    assert pepo_main(_eval(tiny_vlm_path, data, "--skip-invalid", "--limit", "3", "--n", "1", "--max-new-tokens", "2",
                           "--out", str(out))) == 0
    assert f"pepo eval: skipped {data}:2: images[0]:" in capsys.readouterr().err
    result = json.loads(out.read_text())
    assert [q["id"] for q in result["questions"]] == ["test.jsonl:1", "test.jsonl:3", "test.jsonl:4"]
    assert len(result["skipped"]) == 1 and "2000x5 is refused" in result["skipped"][0]


def test_train_refuses_an_image_the_processor_refuses_before_training(tiny_vlm_path, data_with_a_long_thin_image,
                                                                      tmp_path, capsys):
    from pepo.train import main as train_main

    data = data_with_a_long_thin_image
    argv = ["--model_name_or_path", str(tiny_vlm_path), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true",
            "--bf16", "false", "--report_to", "none", "--max_steps", "1", "--per_device_train_batch_size", "4",
            "--num_generations", "4", "--max_completion_length", "4", "--train_file", str(data)]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"pepo train: {data}:2: images[0]: image ")
    assert "2000x5 is refused by the model's image processor" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoint-1").exists()


@pytest.mark.parametrize(("extra", "line"), [
    (["--n", "0"], "pepo analyze: --n must be >= 1, got 0"),
    (["--top-k", "0"], "pepo analyze: --top-k must be >= 1, got 0"),
    (["--limit", "0"], "pepo analyze: --limit must be >= 1, got 0"),
    (["--temperature", "0"], "pepo analyze: --temperature must be > 0 (it is also the entropy's), got 0.0"),
    (["--gate-temperature", "0"], "pepo analyze: --gate-temperature must be > 0, got 0.0"),
    (["--dtype", "fp8"], "pepo analyze: --dtype fp8: choose one of auto, bfloat16, float16, float32"),
])
def test_analyze_argument_errors(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, no_model_loading, extra, line):
    argv = ["analyze", "--model", str(tiny_vlm_path), "--data", str(synthetic_data_dir / "test.jsonl"),
            "--out", str(tmp_path / "a"), *extra]
    assert _run(capsys, argv) == line
    assert not (tmp_path / "a").exists()


def test_analyze_paths(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, no_model_loading):
    file = tmp_path / "file"
    file.write_text("x")
    base = ["analyze", "--data", str(synthetic_data_dir / "test.jsonl")]
    assert _run(capsys, [*base, "--model", str(tiny_vlm_path), "--out", str(file)]) == f"pepo analyze: --out {file}: is a file; give a folder"
    assert _run(capsys, [*base, "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "a")]) == (
        f"pepo analyze: --model {tmp_path / 'nope'}: no such folder (pepo loads local checkpoints only)")
    assert _run(capsys, ["analyze", "--model", str(tiny_vlm_path), "--data", str(synthetic_data_dir), "--n", "1",
                         "--max-new-tokens", "1", "--out", str(tmp_path / "a")]).startswith(f"pepo analyze: {synthetic_data_dir}: this folder holds the splits")


@pytest.mark.parametrize(("extra", "line"), [
    (["--rl-steps", "0"], "pepo demo: --rl-steps must be >= 1, got 0 (see pepo demo --help)"),
    (["--threads", "0"], "pepo demo: --threads must be >= 1, got 0 (see pepo demo --help)"),
    (["--jobs", "0"], "pepo demo: --jobs must be >= 1, got 0 (see pepo demo --help)"),
    (["--methods", "grpo,ppo"], "pepo demo: unknown method(s) ['ppo']; choose from "),
    (["--qtypes", "colour"], "pepo demo: --qtypes: unknown question type(s) ['colour']; choose from "),
])
def test_demo_argument_errors(tmp_path, capsys, monkeypatch, extra, line):
    import pepo.demo

    monkeypatch.setattr(pepo.demo, "run_demo", lambda *a, **k: pytest.fail("the demo ran"))
    assert _run(capsys, ["demo", "--out", str(tmp_path / "demo"), *extra]).startswith(line)


def test_demo_out_is_a_file(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert _run(capsys, ["demo", "--out", str(file)]) == f"pepo demo: --out {file}: is a file; give a folder (see pepo demo --help)"


def test_demo_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    import pepo.demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pepo.demo, "run_demo", interrupted)
    try:
        code = pepo_main(["demo", "--out", str(tmp_path / "demo")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped pepo demo as a traceback")
    assert code == 130
    err = capsys.readouterr().err
    assert err.strip() == f"pepo demo: interrupted; {tmp_path / 'demo'} holds what finished; rerun the same command to start again"


def test_analyze_ctrl_c_is_one_line(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys, monkeypatch):
    import pepo.analysis.cli as analyze_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analyze_cli, "_run", interrupted)
    out = tmp_path / "a"
    try:
        code = pepo_main(["analyze", "--model", str(tiny_vlm_path), "--data", str(synthetic_data_dir / "test.jsonl"),
                          "--out", str(out)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped pepo analyze as a traceback")
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"pepo analyze: interrupted; the sampled questions are in {out / 'samples.jsonl'}; rerun the same command to resume")
