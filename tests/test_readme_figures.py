"""Every figure README.md and docs/ quote from a results file is in that file.

The convention (README "Figures and their files"; follow it when adding a figure):

* A figure taken from a results file cites the file by its path from the repository root, in
  backticks, in the same block: the same paragraph, the same list item, or, for a table, the
  paragraph right before it (a table without a citation of its own takes that paragraph's).
  Example: "the demo took **370 s** (`benchmarks/results/demo/report.md`)". Brace lists work:
  `benchmarks/results/bench_methods_{one_fact,two_facts}.md`.
* In a block that cites files, every number outside backticks must be in one of the cited files:
  written as there (m:ss times as m:ss, thousands separators optional, sign ignored), or the file's
  value rounded to the decimals the text shows, or that value x100 (a fraction as a percentage),
  x1000 or /1000 (s and ms, k) or /10^6 (M). Numbers inside backticks (commands, settings, paths,
  commits), dates (2026-11-30), "issue 15" and "arXiv 2506.05433" are not figures. A number glued
  to a word ("2-core", "bf16", "p100", "47ada1e") is not read; write results as numbers standing alone.
  A setting that is not in the file goes in backticks or in words ("four image tokens"), or in
  another paragraph.
* A table column computed from the table's own columns says so in its header, with "/" or
  "x base" ("this / 77436cb", "pepo x base"): its cells are not checked, its inputs are. A figure
  computed from others in running text (a difference, a ratio) is not allowed: quote the inputs.
* The files a block cites name the command and the commit that produced them: a command
  (``python ...``, ``make ...``, ``pepo ...`` or a ``benchmarks/<script>.py``) and a commit (a
  hexadecimal git hash), e.g. a results file and the log of the run that wrote it.

The checks are loose (any number of a cited file may match), but a figure that is in none of its
files, such as a time copied from another run, fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITATION = re.compile(r"`(benchmarks/results/[^`\s]+)`")
CODE_SPAN = re.compile(r"`[^`]*`")
NOT_FIGURES = re.compile(r"\d{4}-\d{2}-\d{2}|\b[Ii]ssue \d+|arXiv \d+\.\d+")
# a number standing alone: not glued to a word, a path or another number on either side
# (ranges such as 47-51 are two figures; "2-core", "AVX-512" are none)
FIGURE = re.compile(r"(?<![\w./])(?<![A-Za-z]-)[+-]?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?(?!\w|-[A-Za-z]|[.,]\d)")
FILE_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
SCALES = (1, 100, 1000, 1e-3, 1e-6)
COMMAND = re.compile(r"python |make |pepo |benchmarks/\w+\.py")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
# blocks whose files name no command or commit, re-measured by other work of issue 25 (the bench_step
# figures): each entry must still lack it, so that it is removed from here once regenerated
KNOWN_WITHOUT_PROVENANCE: set[str] = set()


def blocks(text: str) -> list[list[str]]:
    """Paragraphs, list items and tables, outside fenced code."""
    out, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        starts_item = re.match(r"\s*([*-]|\d+\.) ", line) is not None
        if fenced or not line.strip() or starts_item or (current and line.startswith("|") != current[-1].startswith("|")):
            if current:
                out.append(current)
            current = []
        if not fenced and line.strip():
            current.append(line)
    return out + [current] if current else out


def cited_files(citations: list[str]) -> list[Path]:
    files = []
    for citation in citations:
        braces = re.match(r"(.*)\{(.*)\}(.*)", citation)
        names = [braces[1] + part + braces[3] for part in braces[2].split(",")] if braces else [citation]
        files += [REPO / name for name in names if (REPO / name).is_file()]
    return files


def citing_blocks() -> list[tuple[str, str, list[Path]]]:
    """(document, block text, the files it cites) for every block citing a results file."""
    found = []
    for document in DOCUMENTS:
        previous: list[str] = []
        for block in blocks(document.read_text()):
            text = "\n".join(block)
            citations = CITATION.findall(text)
            if block[0].startswith("|") and not citations:
                citations = previous
            previous = citations
            files = cited_files(citations)
            if files:
                found.append((document.name, text, files))
    return found


DERIVED_COLUMN = re.compile(r"/|x base")


def without_derived_columns(text: str) -> str:
    """A table's rows with the cells of derived columns (header with "/" or "x base") blanked."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("|"):
        return text
    derived = [i for i, cell in enumerate(lines[0].split("|")) if DERIVED_COLUMN.search(cell)]
    return "\n".join("|".join("" if i in derived else cell for i, cell in enumerate(line.split("|"))) for line in lines)


def figures(text: str) -> list[str]:
    text = NOT_FIGURES.sub(" ", CODE_SPAN.sub(" ", without_derived_columns(text)))
    return [m.group() for m in FIGURE.finditer(text)]


def in_file(figure: str, values: set[float]) -> bool:
    shown = figure.replace(",", "").lstrip("+-")
    mantissa, _, exponent = shown.partition("e")
    decimals = (len(mantissa.split(".")[1]) if "." in mantissa else 0) - int(exponent or 0)
    target, tolerance = float(shown), 0.5 * 10**-decimals * (1 + 1e-9)
    return any(abs(abs(value) * scale - target) <= tolerance for value in values for scale in SCALES)


def file_values(files: list[Path]) -> set[float]:
    text = "\n".join(f.read_text(errors="replace") for f in files).replace(",", "")
    return {float(m.group()) for m in FILE_NUMBER.finditer(text)}


def test_the_checker_finds_a_figure_missing_from_its_file(tmp_path):
    values = {566.75, 9.0, 26.75, 0.2180, 19068672.0}
    assert in_file("9:26.75".split(":")[1], values) and in_file("0.22", values) and in_file("21.8", values)
    assert in_file("19,068,672", values) and in_file("19.1", values)  # M
    assert not in_file("557", values) and not in_file("19,068,160", values)
    assert in_file("1.2e-07", {1.1920928955078125e-07}) and not in_file("1.3e-07", {1.1920928955078125e-07})
    text = "took **557 s** (`python x.py`, 2026-11-30, issue 15) on a 2-core machine, 9:26.75 wall, +5.0%"
    assert figures(text) == ["557", "9", "26.75", "+5.0"]
    assert figures("| shape | ms | old ms | ms / old ms |\n|---|---:|---:|---:|\n| tiny | 0.21 | 0.42 | 0.50 |") == [
        "0.21", "0.42"]


@pytest.mark.parametrize("document,text,files", citing_blocks(),
                         ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "")
def test_every_figure_is_in_the_files_it_cites(document, text, files):
    values = file_values(files)
    missing = [figure for figure in figures(text) if not in_file(figure, values)]
    assert not missing, f"{document}: {missing} not in {[str(f.relative_to(REPO)) for f in files]}:\n{text}"


def test_the_files_each_block_cites_name_their_command_and_commit():
    lacking = set()
    for _, _, files in citing_blocks():
        text = "\n".join(file.read_text(errors="replace") for file in files)
        if not (COMMAND.search(text) and COMMIT.search(text)):
            lacking.add(" + ".join(sorted(str(f.relative_to(REPO)) for f in files)))
    assert lacking - KNOWN_WITHOUT_PROVENANCE == set()
    assert KNOWN_WITHOUT_PROVENANCE <= lacking, "regenerated with provenance: remove from KNOWN_WITHOUT_PROVENANCE"
