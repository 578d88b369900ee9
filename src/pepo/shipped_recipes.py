"""The recipes shipped with pepo, and ``pepo recipes`` to list them and copy one to edit.

    pepo recipes                          # (or: pepo recipes ls) every shipped recipe by name
    pepo recipes cp pepo_g_tiny my.yaml   # a copy to edit; then: pepo train --config my.yaml
    pepo train --config pepo_g_tiny       # a shipped recipe by name (paper/... for recipes/paper/)

The recipe files live in the repository's ``recipes/`` and ship in the wheel as the package data
of ``pepo.recipes`` (``pyproject.toml`` maps the one onto the other), so the same names work from a
source checkout and from ``pip install``.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

__all__ = ["find_recipe", "main", "recipe_names", "recipes_dir"]

ACCELERATE = "accelerate"  # accelerate launch configs, not pepo train recipes: listed apart


def recipes_dir() -> Path | None:
    """The folder of the shipped recipes: ``pepo/recipes`` of an installed wheel, else the ``recipes/``
    of the source tree pepo is imported from (``<repo>/src/pepo`` -> ``<repo>/recipes``); ``None`` if
    neither is there."""
    package = Path(str(resources.files("pepo")))
    installed = package / "recipes"
    if installed.is_dir():
        return installed
    repository = package.parents[1]
    if package.parent.name == "src" and (repository / "pyproject.toml").is_file() and (repository / "recipes").is_dir():
        return repository / "recipes"
    return None


def recipe_names(folder: Path | None = None) -> list[str]:
    """Every shipped recipe's name: its path under the recipes folder without ``.yaml``
    (``pepo_g_tiny``, ``paper/pepo_g_qwen2_5_vl_3b_puzzles``, ``accelerate/ddp``)."""
    folder = recipes_dir() if folder is None else folder
    if folder is None:
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def find_recipe(name: str) -> Path | None:
    """The shipped recipe ``name`` names (``pepo_g_tiny``, ``pepo_g_tiny.yaml``, ``paper/...``,
    ``recipes/pepo_g_tiny.yaml``), or ``None``."""
    folder = recipes_dir()
    if folder is None:
        return None
    stem = name.removeprefix("recipes/").removesuffix(".yaml")
    return folder / f"{stem}.yaml" if stem in recipe_names(folder) else None


def _listing() -> str:
    folder = recipes_dir()
    names = recipe_names(folder)
    if not names:
        return "pepo recipes: no shipped recipes found (this pepo install has no recipes folder)"
    groups = {
        "tiny Qwen2.5-VL on CPU (minutes)": [n for n in names if n.endswith("_tiny")],
        "Qwen2.5-VL-3B on Geometry3K (GPU)": [n for n in names if "/" not in n and not n.endswith("_tiny")],
        "the paper's other models and tasks (GPU)": [n for n in names if n.startswith("paper/")],
        "accelerate launch configs (accelerate launch --config_file ...)": [
            n for n in names if n.startswith(f"{ACCELERATE}/")],
    }
    lines = [f"Recipes shipped with pepo, in {folder}:"]
    for title, group in groups.items():
        lines += ["", f"{title}:", *(f"  {n}" for n in group)]
    lines += ["", "Run one:    pepo train --config pepo_g_tiny",
              "Edit one:   pepo recipes cp pepo_g_tiny my_recipe.yaml   then   pepo train --config my_recipe.yaml"]
    return "\n".join(lines)


def _copy(name: str, destination: str) -> int:
    source = find_recipe(name)
    if source is None:
        print(f"pepo recipes cp: no shipped recipe {name!r}; pepo recipes lists them", file=sys.stderr)
        return 2
    target = Path(destination)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        print(f"pepo recipes cp: {target} exists; choose another file name (nothing was overwritten)", file=sys.stderr)
        return 2
    if not target.parent.is_dir():
        print(f"pepo recipes cp: {target.parent} is not a folder; create it or choose another path", file=sys.stderr)
        return 2
    try:
        shutil.copyfile(source, target)
    except OSError as error:
        print(f"pepo recipes cp: cannot write {target}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"pepo recipes: copied {name} to {target}; edit it, then: pepo train --config {target}")
    return 0


USAGE = """usage: pepo recipes [ls]                 list the shipped recipes
       pepo recipes cp NAME DEST.yaml    copy one to a file to edit (DEST may be a folder)"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in ([], ["ls"]):
        print(_listing())
        return 0
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "cp" and len(argv) == 3:
        return _copy(argv[1], argv[2])
    print(f"pepo recipes: unexpected arguments {' '.join(argv)}\n{USAGE}", file=sys.stderr)
    return 2
