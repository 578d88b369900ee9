"""Every code example of the README runs, or is listed here with the reason it does not run on CPU.

Each ```bash command and ```python block of README.md must be classified below: run as written,
run with a documented CPU override (extra arguments appended, a later option winning, or names a
Python snippet presumes), or skipped with its reason. A new example that is not classified fails
`test_every_readme_example_is_classified`; an example that fails fails CI.
"""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# CPU override of the training examples: the random tiny model (no warm-start build), one short step
TINY_TRAIN = ["--model_name_or_path", "embedded", "--max_steps", "1", "--max_train_samples", "4",
              "--per_device_train_batch_size", "4", "--num_generations", "4", "--eval_after_train", "none",
              "--max_completion_length", "4", "--activation_checkpointing", "false", "--disable_tqdm", "true",
              "--output_dir", "{tmp}/run"]
DEMO_OUTPUT = "reads the full `pepo demo`'s output (runs/demo, ~10 min on 2 cores); the same commands on " \
              "`pepo demo --quick`'s output run in tests/embedded/test_demo.py (the `--help` examples)"
# command (whitespace normalised, comment dropped) -> extra arguments, or a skip reason (a str)
COMMANDS: dict[str, list[str] | str] = {
    "make demo": "the full demo (~10 min); `pepo demo --quick` runs in tests/embedded/test_demo.py",
    "make test": "the test suite itself",
    "pip install torch": "downloads packages",
    "pip install -e .": "downloads packages; tests/test_shipped_recipes.py installs the built wheel offline",
    "pip install -e .[peft,deepspeed,vllm,math-verify,tensorboard]": "downloads packages",
    "pepo demo": "the full demo (~10 min on 2 cores)",
    "pepo demo --quick": "tests/embedded/test_demo.py runs it",
    "pepo demo --methods grpo,pepo_g,dapo,pepo_d --jobs 2": "the full demo, four methods",
    "python benchmarks/bench_demo_seeds.py --from runs/demo --methods grpo --seeds 0 1 2": DEMO_OUTPUT,
    "python benchmarks/bench_demo_seeds.py --from runs/demo --methods pepo_g --seeds 0 1 2": DEMO_OUTPUT,
    "pepo demo --task two_facts --out runs/demo_two_facts": "the full demo on the second task",
    "python benchmarks/bench_methods.py --task one_fact --split val --label sizing --methods grpo,pepo_g --seeds 0":
        "a benchmark (hours); tests/benchmarks/test_bench_methods.py runs it shrunk",
    "python benchmarks/bench_methods.py --task one_fact --seeds 0 1 2 3 4": "a benchmark (hours)",
    "python benchmarks/bench_methods.py --task two_facts --seeds 0 1 2 3 4": "a benchmark (hours)",
    "python benchmarks/bench_methods.py --task one_fact --report-only": "reads the benchmark's rows (hours to make)",
    "pepo train --help": [],
    "pepo recipes": [],
    "pepo train --config pepo_g_tiny": TINY_TRAIN,
    "pepo train --config recipes/pepo_g_tiny.yaml": TINY_TRAIN,
    "pepo train --config recipes/pepo_g_tiny.yaml --gate_alpha 0.1": TINY_TRAIN,
    "accelerate launch --config_file recipes/accelerate/deepspeed_zero2.yaml -m pepo train "
    "--config recipes/pepo_d_qwen2_5_vl_3b_geometry3k.yaml":
        "8 GPUs and Qwen2.5-VL-3B; tests/scale/test_paper_recipes.py validates the recipe without weights",
    "pepo eval --model /ckpt/qwen2.5-vl-3b-pepo --benchmark geometry3k --data geometry3k/test.jsonl "
    "--image-root /data/Geometry3K-raw --n 8 --temperature 1.0 --top-p 1.0 --max-new-tokens 1024 --batch-size 8 "
    "--out results/geo3k_test.json": "a user's own Qwen2.5-VL-3B checkpoint and Geometry3K copy",
    "pepo analyze --model runs/demo/pepo_g/checkpoint --benchmark geometry3k --data runs/demo/data/test.jsonl "
    "--n 8 --top-k 10 --limit 200 --runs runs/demo --out analysis/": DEMO_OUTPUT,
    "pepo analyze --model runs/demo/pepo_g/checkpoint --data runs/demo/data/test.jsonl --n 8 --top-k 3 "
    "--max-new-tokens 16 --limit 128 --runs runs/demo --out analysis/pepo_g": DEMO_OUTPUT,
}
# first line of a ```python block -> the code run before it (the names the snippet presumes), or a skip reason
PYTHON_PRELUDES: dict[str, str] = {
    "import pepo": (  # the core math on random tensors of the documented shapes
        "import torch\ntorch.manual_seed(0)\nB, S, T, V, D, L = 2, 12, 5, 11, 8, 2\n"
        "hidden_states = [torch.randn(B, S, D) for _ in range(L + 1)]\n"
        "vision_mask = torch.zeros(B, S, dtype=torch.bool); vision_mask[:, 2:5] = True\n"
        "logits_to_keep = T\ncompletion_logits = torch.randn(B, T, V)\ncompletion_mask = torch.ones(B, T)\n"
        "global_step, max_steps = 3, 10\n"
    ),
    '@pepo.register_weighting_mode("my_mode", needs_entropy=False)': "import pepo\n",
    "import torch": "",  # the PEPOConfig / PEPOTrainer example runs as written (a tiny model, 2 steps)
}


def _examples() -> list[tuple[str, str]]:
    """``(language, code)``: every bash command (continuations joined, comment dropped) and python block."""
    found = []
    for language, body in re.findall(r"```(bash|python)\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        if language == "python":
            found.append(("python", body))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("#")[0].split())
            if command:
                found.append(("bash", command))
    return found


def test_every_readme_example_is_classified():
    unclassified = [code for language, code in _examples()
                    if (language == "bash" and code not in COMMANDS)
                    or (language == "python" and code.splitlines()[0] not in PYTHON_PRELUDES)]
    assert not unclassified, f"classify these README examples in {Path(__file__).name}: {unclassified}"
    stale = set(COMMANDS) - {code for language, code in _examples() if language == "bash"}
    assert not stale, f"no longer in the README: {stale}"


RUN = [(code, extra) for language, code in _examples() if language == "bash"
       for extra in [COMMANDS.get(code, "unclassified")] if not isinstance(extra, str)]


@pytest.mark.slow
@pytest.mark.parametrize(("command", "extra"), RUN, ids=[c for c, _ in RUN])
def test_readme_command_runs(command, extra, tmp_path, monkeypatch):
    from pepo.cli import main as pepo_main

    argv = shlex.split(command)
    assert argv[0] == "pepo", "only pepo commands run here"
    monkeypatch.chdir(ROOT)  # the README's commands run from the repository root
    assert pepo_main([*argv[1:], *(a.format(tmp=tmp_path) for a in extra)]) == 0


PYTHON = [code for language, code in _examples() if language == "python"]


@pytest.mark.slow
@pytest.mark.parametrize("code", PYTHON, ids=[c.splitlines()[0] for c in PYTHON])
def test_readme_python_runs(code, tmp_path, monkeypatch):
    script = tmp_path / "example.py"
    script.write_text(PYTHON_PRELUDES[code.splitlines()[0]] + code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
