"""The ``pepo`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own package and exposes ``main(argv: list[str] | None) -> int``;
this file only dispatches, importing the subcommand lazily so ``pepo --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line help). Later subsystems add their line here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pepo.demo:main", "run the embedded default end to end on CPU"),
    "train": ("pepo.train:main", "train with PEPO / GRPO / DAPO from a YAML recipe (TRL-style arguments)"),
    "recipes": ("pepo.shipped_recipes:main", "list the shipped recipes (pepo recipes) or copy one to edit (pepo recipes cp)"),
    "eval": ("pepo.evaluation.cli:main", "evaluate a local checkpoint on a local benchmark (avg@N, majority)"),
    "analyze": ("pepo.analysis.cli:main", "token-level analysis: similarity / entropy / weights, paper Figures 2, 3, 6"),
}


def _usage() -> str:
    lines = ["usage: pepo <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `pepo <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from pepo import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"pepo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = SUBCOMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
