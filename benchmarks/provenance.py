"""What a results file records about where it came from: the command and the commit measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The commit measured: ``$PEPO_BENCH_COMMIT`` where the runner names it (a copy of the tree on
    another machine, whose .git, if any, need not be the tree's); else the checkout's short commit,
    ``+dirty`` when tracked files outside benchmarks/results differ from it (then the figures are of
    uncommitted code), or ``unknown`` outside git."""
    given = os.environ.get("PEPO_BENCH_COMMIT")
    if given:
        return f"{given} (PEPO_BENCH_COMMIT)"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command() -> str:
    """The command line that ran this script, as the README quotes it (``python benchmarks/...``)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return " ".join(["python", str(shown), *sys.argv[1:]])
