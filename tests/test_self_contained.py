"""The repository stands on its own: no file cites a specification or folder outside it (issue 28),
and every citation of docs/method.md names one of its sections."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# spelled in pieces so that this file does not cite them itself
OUTSIDE = ("PEPO" + "_SPEC", "../" + "shared", "/work/" + "shared")
METHOD = ROOT / "docs" / "method.md"
# "docs/method.md, Rewards", "``docs/method.md``, Token weights to Base algorithms", "docs/method.md (Training setup)"
CITATION = re.compile(r"docs/method\.md(?:``)?(?:, | \()([A-Z][A-Za-z -]*?)(?=[)\n:;.]|, )")


def repository_files() -> list[Path]:
    """Every file git tracks or would track (untracked but not ignored): what a clone holds."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary files (images, checkpoints) cite nothing


def outside_citations(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{shown(path)}:{number}: {marker}" for marker in OUTSIDE if marker in line]
    return found


def method_sections() -> set[str]:
    return {line[3:].strip() for line in METHOD.read_text().splitlines() if line.startswith("## ")}


def unknown_sections(files: list[Path]) -> list[str]:
    sections, found = method_sections(), []
    for path in files:
        text = text_of(path)
        for match in CITATION.finditer(text or ""):
            named = [part.strip() for part in match.group(1).split(" to ")]
            found += [f"{shown(path)}: docs/method.md has no section {n!r}" for n in named if n not in sections]
    return found


def test_no_file_cites_a_specification_outside_the_repository():
    files = repository_files()
    assert len(files) > 100 and METHOD in files
    assert outside_citations(files) == []


def test_every_citation_of_method_md_names_one_of_its_sections():
    found = unknown_sections(repository_files())
    assert found == [], "\n".join(found)
    assert len(method_sections()) >= 10


def test_the_checks_catch_what_they_guard_against(tmp_path):
    stray = tmp_path / "stray.py"
    method = "docs/" + "method.md"  # spelled in pieces: this file's own text must pass the check above
    stray.write_text(f'"""Weights ({OUTSIDE[0]}.md section 4, {OUTSIDE[1]}/x) and {method}, Fusion weights."""\n')
    assert outside_citations([stray]) == [f"stray.py:1: {OUTSIDE[0]}", f"stray.py:1: {OUTSIDE[1]}"]
    assert unknown_sections([stray]) == ["stray.py: docs/method.md has no section 'Fusion weights'"]
    stray.write_text(f"({method}, Token weights to Base algorithms) and {method} (Training setup).\n")
    assert outside_citations([stray]) == [] and unknown_sections([stray]) == []
