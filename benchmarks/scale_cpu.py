"""Measured numbers of the sharded / multi-process CPU runs that docs/scaling.md quotes.

Runs what tests/scale/test_sharded.py and test_dynamic_sampling_ranks.py run (the same launcher,
configs and fixed completions), once, and prints and writes how far 2 processes are from 1:

    PYTHONPATH=src python benchmarks/scale_cpu.py   # writes benchmarks/results/scale_cpu.md

Per configuration: max |parameter difference| against one process with the same global batch, how
far the parameters moved, max |perception prior / weight difference| per row (rows matched by
step and completion ids), the largest logged-metric difference, and the wall time of the launch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import provenance  # noqa: E402  (benchmarks/, this script's folder)
from tests.scale import replay  # noqa: E402
from tests.scale.test_multiprocess import GLOO_CONFIG  # noqa: E402
from tests.scale.test_sharded import FSDP2_CONFIG, ZERO2_CONFIG, launch, results  # noqa: E402

SKIP_LOG_KEYS = ("dynamic_sampling/groups_moved",)


def differences(ranks, params, single, single_params, initial, steps) -> dict:
    def max_diff(a, b):
        return max(abs(x - y) for x, y in zip(a, b, strict=True)) if a else 0.0

    two = {key: (p, w) for r in ranks for key, p, w in r["signals"]}
    one = {key: (p, w) for key, p, w in single["signals"] if int(key.split("/")[0]) in steps}
    assert two.keys() == one.keys(), "different rows"
    logs_two = [e for e in ranks[0]["logs"] if "loss" in e and e["step"] in steps]
    logs_one = [e for e in single["logs"] if "loss" in e and e["step"] in steps]
    metric = max(abs(a[k] - b[k]) for a, b in zip(logs_two, logs_one, strict=True) for k in b if k not in SKIP_LOG_KEYS)
    return {
        "param_diff": max((params[n] - single_params[n]).abs().max().item() for n in params),
        "param_moved": max((single_params[n] - initial[n]).abs().max().item() for n in params),
        "prior_diff": max((max_diff(two[k][0], one[k][0]) for k in one), default=0.0),
        "weight_diff": max((max_diff(two[k][1], one[k][1]) for k in one), default=0.0),
        "metric_diff": metric,
        "rows_compared": len(one),
    }


def main() -> int:
    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_model_and_processor

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_vlm(tmp / "tiny", seed=0)
        initial = {n: p.detach().clone() for n, p in load_model_and_processor(model)[0].named_parameters()}
        single = replay.run(model, tmp / "one", per_device_train_batch_size=8, max_steps=3,
                            lr_scheduler_type="constant", snapshot_steps=(2,))

        def timed(name, config, out, *args):
            start = time.perf_counter()
            proc = launch(config, model, out, *args)
            return proc, time.perf_counter() - start

        proc, seconds = timed("fsdp2", FSDP2_CONFIG, tmp / "killed", "--max_steps", "3", "--save_steps", "2",
                              "--kill_after_step", "2")
        ranks, params = results(tmp / "killed")
        rows.append(("FSDP2, 2 procs, steps 1-2 (then SIGKILL)", seconds,
                     differences(ranks, params, single, single["snapshots"][2], initial, {1, 2})))
        proc, seconds = timed("fsdp2 resumed", FSDP2_CONFIG, tmp / "resumed", "--max_steps", "3", "--save_steps", "2",
                              "--resume_from_checkpoint", str(tmp / "killed" / "trainer" / "checkpoint-2"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranks, params = results(tmp / "resumed")
        rows.append(("FSDP2, resumed from the sharded step-2 checkpoint, step 3", seconds,
                     differences(ranks, params, single, single["params"], initial, {3})))
        proc, seconds = timed("zero2", ZERO2_CONFIG, tmp / "zero2", "--max_steps", "2")
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranks, params = results(tmp / "zero2")
        rows.append(("DeepSpeed ZeRO-2, 2 procs, steps 1-2", seconds,
                     differences(ranks, params, single, single["snapshots"][2], initial, {1, 2})))

        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        from tests.scale.test_multiprocess import free_port

        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(GLOO_CONFIG), "--main_process_port",
             str(free_port()), str(Path(replay.__file__)), "--model", str(model), "--out", str(tmp / "dyn"),
             "--per_device_train_batch_size", "4", "--constant_lr", "--dynamic_sampling", "pepo", "none"],
            capture_output=True, text=True, env=env, cwd=ROOT)
        seconds = time.perf_counter() - start
        assert proc.returncode == 0, proc.stderr[-3000:]
        for weighting, name in (("pepo", "PEPO_D"), ("none", "DAPO")):
            one = replay.run(model, tmp / f"dyn_one_{weighting}", per_device_train_batch_size=8,
                             lr_scheduler_type="constant", **replay.dynamic_sampling_overrides(weighting))
            ranks, params = results(tmp / "dyn" / weighting)
            found = differences(ranks, params, one, one["params"], initial, {1, 2})
            logs = [e for e in ranks[0]["logs"] if "loss" in e]
            found["refill_prompts"] = sum(e["dynamic_sampling/refill_prompts"] for e in logs)
            found["groups_moved"] = sum(e["dynamic_sampling/groups_moved"] for e in logs)
            rows.append((f"{name} dynamic sampling, DDP 2 procs, steps 1-2 (launch runs both)", seconds, found))

    lines = ["| run (tiny Qwen2.5-VL, CPU, gloo) | launch s | max param diff vs 1 proc | params moved | "
             "max prior diff | max weight diff | max logged-metric diff | rows |",
             "|---|---|---|---|---|---|---|---|"]
    for name, seconds, d in rows:
        extra = f" (refill prompts {d['refill_prompts']:.0f}, groups moved {d['groups_moved']:.0f})" if "groups_moved" in d else ""
        lines.append(f"| {name}{extra} | {seconds:.0f} | {d['param_diff']:.1e} | {d['param_moved']:.1e} | "
                     f"{d['prior_diff']:.1e} | {d['weight_diff']:.1e} | {d['metric_diff']:.1e} | {d['rows_compared']} |")
    load = os.getloadavg()[0]
    text = "\n".join(lines) + f"\n\nCommand: `PYTHONPATH=src python benchmarks/scale_cpu.py`; commit {provenance.commit()}; 1-minute load average at the end {load:.1f} (2 cores shared).\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "scale_cpu.md"
    out.write_text("# benchmarks/scale_cpu.py\n\n" + text)
    (out.with_suffix(".json")).write_text(json.dumps([{"run": n, "seconds": s, **d} for n, s, d in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
