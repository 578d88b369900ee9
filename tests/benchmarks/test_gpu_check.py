"""benchmarks/gpu_check.py runs: its CPU smoke mode exercises the same code as the GPU run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_kernel_tables_smoke(tmp_path):
    out = tmp_path / "check.json"
    proc = run("--device", "cpu", "--tiny", "--skip", "update", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and "no GPU" in result["machine"]
    # what the timed functions compute, relative to float64 references of the same bf16 inputs: a kernel
    # off by 0.1% fails (measured on the CPU: perception <= 2e-7, token_entropy 5.4e-5)
    agreement = result["agreement"]
    for measure in ("cosine", "dot", "l2", "l1"):
        assert agreement[f"perception_{measure}"] < 1e-5, agreement
    assert agreement["entropy_vs_float64"] < 2e-4, agreement
    gpu_check = load_script()
    assert [row["shape"] for row in result["perception"]] == [list(s) for s in gpu_check.PERCEPTION_SHAPES["tiny"]]
    assert [row["shape"] for row in result["entropy"]] == [list(s) for s in gpu_check.ENTROPY_SHAPES["tiny"]]
    assert "perception prior" in proc.stdout and "token_entropy" in proc.stdout and "agreement" in proc.stdout


def test_timed_is_the_median_of_reps_calls_after_one_warm_up():
    gpu_check = load_script()
    calls, sleeps = [], iter([0.2, 0.001, 0.08, 0.001])  # warm-up, then three timed calls
    median_ms, extra_mib = gpu_check.timed(lambda: calls.append(time.sleep(next(sleeps))), 3, "cpu")
    assert len(calls) == 4 and extra_mib is None  # no memory figure on the CPU
    assert 1.0 <= median_ms < 20.0, median_ms  # the middle of 1, 80 and 1 ms: not their mean, nor the warm-up


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


@pytest.mark.slow
def test_gpu_run_script_smoke_writes_every_part(tmp_path):
    # benchmarks/gpu_run.sh as issue 29's device call runs it, on the CPU with the tiny sizes: every part
    # writes its JSON, and the pepo train part trains GRPO, PEPO_G and GRPO again with PEPO's share logged
    repo = SCRIPT.parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "WHEELS": "none", "PEPO_BENCH_COMMIT": "0123abc"}
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_run.sh"), str(tmp_path), "--device", "cpu", "--tiny"],
                          cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for part in ("gpu_check_kernels", "gpu_check_update", "train"):
        assert f"{part}: exit 0" in proc.stdout, proc.stdout[-3000:]
        assert json.loads((tmp_path / f"{part}.json").read_text())["commit"].startswith("0123abc")
    assert "perception" in json.loads((tmp_path / "gpu_check_kernels.json").read_text())
    assert "update" in json.loads((tmp_path / "gpu_check_update.json").read_text())
    runs = json.loads((tmp_path / "train.json").read_text())["runs"]
    assert list(runs) == ["grpo", "pepo_g", "grpo_again"]
    for name, run in runs.items():
        assert run["exit"] == 0 and len(run["step_time_s"]) == 2, (name, run)
        assert bool(run["pepo_time_share"]) == (name == "pepo_g"), (name, run)
