"""Tests of the scripts under benchmarks/ (not a package: a test loads its script by path)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextlib.contextmanager
def loaded_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` as module ``name``, registered in ``sys.modules`` while in use
    (dataclasses look their module up there), with benchmarks/ on ``sys.path`` as when the script is
    run (its sibling modules, e.g. ``provenance``, import)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        del sys.modules[name]
