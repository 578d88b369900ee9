"""Older versions of this repository, side by side with the checkout (``--compare REV`` of
``bench_demo_time.py`` and ``bench_step.py``): a version is a folder holding ``git archive REV``,
run in a subprocess with ``PYTHONPATH=<folder>/src`` and the folder as working directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def version_sources(rev: str, work: Path) -> Path:
    """A folder with the files of commit ``rev`` (extracted once into ``work``)."""
    target = work / f"src_{rev}"
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def commit_of(rev: str = "HEAD") -> str:
    """The full hash of ``rev``; for ``HEAD``, ``+uncommitted changes`` appended when the tree differs,
    or ``$PEPO_BENCH_COMMIT`` where the runner names it (a copy of the tree whose .git is not the tree's)."""
    if rev == "HEAD" and os.environ.get("PEPO_BENCH_COMMIT"):
        return f"{os.environ['PEPO_BENCH_COMMIT']} (PEPO_BENCH_COMMIT)"
    full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True, capture_output=True, text=True).stdout
    dirty = rev == "HEAD" and subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "src", "benchmarks",
                                             ":!benchmarks/results"],
                                            capture_output=True).returncode != 0
    return full.strip() + (" +uncommitted changes" if dirty else "")
