"""benchmarks/warm_start_search.py: every validation check of the warm start is logged as it happens,
with the overridden settings in force (here: the quick settings, 4 steps, a check every 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "warm_start_search.py"


@pytest.mark.slow
def test_logs_each_validation_check_with_the_overrides(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--sft-max-steps", "4",
                           "--sft-eval-every", "2", "--sft-target", "1.01"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    checks = [json.loads(line) for line in (tmp_path / "val_log.jsonl").read_text().splitlines()]
    assert [c["step"] for c in checks] == [2, 4]
    assert all(0.0 <= c["val_accuracy"] <= 1.0 and c["wall_s"] > 0 for c in checks)
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("VAL")] == ["VAL step 2", "VAL step 4"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overrides"] == {"sft_max_steps": 4, "sft_eval_every": 2, "sft_target": 1.01}
    assert summary["stopped_at"] == 4 and summary["torch_threads"] == 1
    assert (tmp_path / "warm_start" / "checkpoint").is_dir()
