"""The embedded default: a tiny Qwen2.5-VL and a synthetic visual-reasoning task it can learn on CPU.

* :func:`build_tiny_vlm` writes a real, reloadable Qwen2.5-VL checkpoint (388,992 parameters:
  ``benchmarks/model_sizes.py``), or a tiny model of another family of :data:`TINY_FAMILIES`
  (``family="qwen3_vl"``; :mod:`pepo.embedded.tiny_families`);
* :mod:`pepo.embedded.synthetic` generates the task (PIL-rendered 2 x 2 grids, Geometry3K JSONL).
"""

from pepo.embedded.synthetic import generate_dataset, generate_split, make_problem, render
from pepo.embedded.tiny_families import TINY_FAMILIES, build_tiny_vlm

__all__ = ["TINY_FAMILIES", "build_tiny_vlm", "generate_dataset", "generate_split", "make_problem", "render"]
