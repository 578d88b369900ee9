"""The import layers of the developers' guide stay true (read from the source, nothing is imported):
``pepo.core`` imports nothing but torch and the standard library, and no module imports from a
higher layer, lazily inside a function or not:

    core  <  data, rewards, modeling, families, image_tokens, image_sharing, prompt_sharing, mrope, patch_masking,
             cli_checks, shipped_recipes versions
          <  trainer, evaluation  <  embedded, analysis  <  demo, cli, train
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# first name under pepo -> layer; "" is pepo/__init__.py (it re-exports pepo.core)
LAYERS = {
    "": 0, "core": 0,
    "data": 1, "rewards": 1, "modeling": 1, "families": 1, "image_tokens": 1, "image_sharing": 1, "prompt_sharing": 1, "mrope": 1,
    "patch_masking": 1, "cli_checks": 1, "shipped_recipes": 1, "versions": 1,
    "trainer": 2, "evaluation": 2,
    "embedded": 3, "analysis": 3,
    "demo": 4, "cli": 4, "train": 4, "__main__": 4,
}


def _modules() -> dict[str, Path]:
    """``pepo.x.y`` -> its file, for every module of the package."""
    out = {}
    for path in sorted((SRC / "pepo").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            found.append((node.lineno, module))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else ""]


def test_every_module_has_a_layer():
    unplaced = sorted({name.split(".")[1] if "." in name else "" for name in _modules()} - set(LAYERS))
    assert not unplaced, f"place these in LAYERS of {Path(__file__).name} and the guide: {unplaced}"


def test_core_imports_only_torch():
    allowed = {"torch", "pepo", "__future__", *sys.stdlib_module_names}
    wrong = [f"{path.relative_to(SRC)}:{line}: {module}"
             for name, path in _modules().items() if _layer(name) == 0
             for line, module in _imports(name, path)
             if module.split(".")[0] not in allowed or (module.startswith("pepo") and _layer(module) > 0)]
    assert not wrong, "pepo.core (and pepo/__init__.py) may import only torch, the standard library and pepo.core:\n" + "\n".join(wrong)


def test_no_module_imports_from_a_higher_layer():
    wrong = [f"{path.relative_to(SRC)}:{line}: {name} (layer {_layer(name)}) imports {module} (layer {_layer(module)})"
             for name, path in _modules().items()
             for line, module in _imports(name, path)
             if module.split(".")[0] == "pepo" and _layer(module) > _layer(name)]
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_no_import_cycle_between_parts():
    """Within a layer, parts may import each other one way only (no A -> B -> A, lazily or not)."""
    edges: dict[str, set[str]] = {}
    for name, path in _modules().items():
        part = name.split(".")[1] if "." in name else ""
        for _, module in _imports(name, path):
            other = module.split(".")[1] if module.startswith("pepo.") else None
            if other is not None and other != part:
                edges.setdefault(part, set()).add(other)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in edges.get(start, ()))

    cycles = sorted(part for part in edges if reaches(part, part, {part}))
    assert not cycles, f"parts in an import cycle: {cycles}; {({p: sorted(edges[p]) for p in cycles})}"
