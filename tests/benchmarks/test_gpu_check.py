"""benchmarks/gpu_check.py runs: its CPU smoke mode exercises the same code as the GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_kernel_tables_smoke(tmp_path):
    out = tmp_path / "check.json"
    proc = run("--device", "cpu", "--tiny", "--skip", "update", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and "no GPU" in result["machine"]
    for row in result["perception"]:
        for key in ("reference_bf16_loop", "cosine", "dot", "l2", "l1", "one_read"):
            assert row[key][0] > 0
    for row in result["entropy"]:
        assert row["pepo"][0] > 0 and row["trl"][0] > 0
        assert row["max_abs_difference_vs_trl"] < 0.1  # TRL's CPU path works in bf16; ours in float32
    assert "perception prior" in proc.stdout and "token_entropy" in proc.stdout


@pytest.mark.slow
def test_whole_smoke_run_with_update(tmp_path):
    out = tmp_path / "check.json"
    proc = run("--device", "cpu", "--tiny", "--reps", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["method"] for r in result["update"]] == ["none", "pepo", "high_entropy", "none_control"]
    assert result["update_model"]["completion_tokens"] == 8
    assert "rho vs GRPO" in proc.stdout


def test_bad_arguments_exit_2_in_one_line(tmp_path):
    proc = run("--device", "cpu", "--tiny", "--reps", "0")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--reps" in proc.stderr


def test_missing_dependency_says_what_to_install(tmp_path):
    # a sitecustomize that hides trl from importlib's finder, as on a machine without it
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'trl' else _find(name, *a)\n"
    )
    proc = run("--device", "cpu", "--tiny", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing trl" in proc.stderr and "pip install" in proc.stderr
