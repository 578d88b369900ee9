"""`pepo eval` killed with SIGKILL mid-run, then rerun: the uninterrupted run's results, no question
lost or duplicated. (In-process resume after an exception: tests/evaluation/test_eval_end_to_end.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pepo.evaluation.cli import results_jsonl_path

ROOT = Path(__file__).resolve().parents[2]


def _eval(model, data, out) -> list[str]:
    return [sys.executable, "-m", "pepo", "eval", "--model", str(model), "--benchmark", "geometry3k", "--data",
            str(data), "--n", "2", "--max-new-tokens", "4", "--batch-size", "1", "--seed", "5", "--limit", "4", "--out", str(out),
            "--no-progress"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_killed_evaluation_resumes_without_losing_or_repeating_questions(tiny_vlm_path, synthetic_data_dir, tmp_path):
    data = synthetic_data_dir / "test.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_out, killed_out = tmp_path / "full.json", tmp_path / "killed.json"
    reference = subprocess.Popen(_eval(tiny_vlm_path, data, full_out), cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_eval(tiny_vlm_path, data, killed_out), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = results_jsonl_path(killed_out)
    deadline = time.monotonic() + 240
    while not (partial.exists() and partial.read_text().count("\n") >= 2):  # header + 1 of 4 questions
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_at_kill = partial.read_text().count("\n") - 1
    assert victim.returncode == -signal.SIGKILL and 1 <= done_at_kill < 4 and not killed_out.exists()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    rerun = subprocess.run(_eval(tiny_vlm_path, data, killed_out), cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming: {done_at_kill} of 4 questions already in" in rerun.stderr

    rows = _rows(results_jsonl_path(killed_out))
    assert "config" in rows[0]
    ids = [row["id"] for row in rows[1:]]
    assert len(ids) == len(set(ids)) == 4  # none lost, none twice
    full, resumed = json.loads(full_out.read_text()), json.loads(killed_out.read_text())
    assert resumed["questions"] == full["questions"] and resumed["totals"] == full["totals"]


def test_a_line_cut_by_the_kill_is_redone_and_the_file_stays_valid(tiny_vlm_path, synthetic_data_dir, tmp_path):
    from pepo.data import load_geometry3k
    from pepo.evaluation import evaluate_model
    from pepo.modeling import load_model_and_processor

    model, processor = load_model_and_processor(tiny_vlm_path)
    records = load_geometry3k(synthetic_data_dir / "test.jsonl").records[:3]
    settings = dict(n=1, max_new_tokens=4, batch_size=1, progress=False)
    path = tmp_path / "run.questions.jsonl"
    fresh = evaluate_model(model, processor, records, results_path=path, **settings)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:25])  # header, question 1, half of question 2
    resumed = evaluate_model(model, processor, records, results_path=path, **settings)
    assert resumed.questions == fresh.questions
    rows = _rows(path)  # every line parses: the cut line was dropped, not glued to the next row
    assert [row["id"] for row in rows[1:]] == [r.id for r in records]
