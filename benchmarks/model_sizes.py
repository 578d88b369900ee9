"""Parameter counts of the models the README and the benchmarks name, built from config as they are.

    python benchmarks/model_sizes.py

Builds the demo's tiny Qwen2.5-VL (``pepo.embedded.build_tiny_vlm`` with its defaults, what
``pepo demo`` trains) and the two models of ``benchmarks/bench_step.py`` (``--quick`` and full
size), counts their parameters (tied embeddings counted once, as ``model.parameters()`` yields
them) and writes ``benchmarks/results/model_sizes.json`` with the command and commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_step import SIZES
    from provenance import command, commit

    from pepo.embedded import build_tiny_vlm
    from pepo.modeling import load_model_and_processor

    models = {"pepo demo (build_tiny_vlm defaults)": {}}
    for name in ("quick", "full"):
        size = SIZES[name]
        models[f"bench_step.py{' --quick' if name == 'quick' else ''}"] = {
            "hidden_size": size["hidden_size"], "num_layers": size["num_layers"], "image_size": size["image_size"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, kwargs) in enumerate(models.items()):
            model, _ = load_model_and_processor(build_tiny_vlm(Path(tmp) / str(i), seed=0, **kwargs))
            rows.append({"model": name, "build_tiny_vlm": kwargs, "parameters": sum(p.numel() for p in model.parameters())})
    RESULTS.mkdir(exist_ok=True)
    result = {"command": command(), "commit": commit(), "models": rows}
    (RESULTS / "model_sizes.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| model | build_tiny_vlm arguments | parameters |\n|---|---|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['build_tiny_vlm'] or 'defaults'} | {row['parameters']:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
