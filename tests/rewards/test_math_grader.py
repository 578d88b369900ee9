"""Math grading on the real Geometry3K solutions, and the time limit that works anywhere."""

import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mathruler.grader import grade_answer

from pepo.rewards import grade_math, grading_stats, normalize_answer, set_grading_timeout
from pepo.rewards import math_grader

SOLUTIONS = json.loads((Path(__file__).parents[1] / "data/fixtures/geometry3k/solutions.json").read_text())
# A real sympy hang: grade_answer("9**9**9", "\\sqrt{2}") builds a 369-million-digit integer.
RUNAWAY = ("9**9**9", "\\sqrt{2}")


def test_fixture_holds_every_distinct_geometry3k_solution():
    assert len(SOLUTIONS) == 839
    assert {"15", "6.45", "21 \\sqrt { 3 }", "\\frac { 17 } { 2 } \\sqrt { 3 }", "10 \\pi"} <= set(SOLUTIONS)


def test_every_real_solution_is_correct_against_itself(monkeypatch):
    # grade_math(s, s) stops at the string-equality shortcut; "{s}" is the same value written
    # otherwise (never string-equal after normalisation), so mathruler in the helper decides.
    asked = []
    ask = math_grader._GraderProcess.ask
    monkeypatch.setattr(math_grader._GraderProcess, "ask", lambda self, request, timeout: asked.append(request) or ask(self, request, timeout))
    assert all(grade_math(s, s) for s in SOLUTIONS) and asked == []  # the shortcut
    rewritten = [grade_math("{" + s + "}", s) for s in SOLUTIONS]
    assert len(asked) == len(SOLUTIONS)  # every one reached the helper
    assert all(rewritten)


def test_real_solutions_without_spaces_grade_as_mathruler_says():
    # The model rarely copies the dataset's spaced LaTeX; "21\sqrt{3}" must match "21 \sqrt { 3 }".
    ours = [grade_math(s.replace(" ", ""), s) for s in SOLUTIONS]
    theirs = [grade_answer(normalize_answer(s.replace(" ", "")), normalize_answer(s)) for s in SOLUTIONS]
    assert ours == theirs
    assert all(ours)  # measured: mathruler accepts all 839


@pytest.mark.parametrize(
    ("answer", "solution", "expected"),
    [
        ("15.0", "15", True),
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "\\frac{1}{2}", True),
        ("2\\sqrt{3}", "2 \\sqrt { 3 }", True),
        ("8.5\\sqrt{3}", "\\frac { 17 } { 2 } \\sqrt { 3 }", True),
        ("10π", "10 \\pi", True),
        ("15.", "15", True),  # trailing full stop stripped
        ("16", "15", False),
        ("6.4", "6.45", False),
        ("2\\sqrt{2}", "2 \\sqrt { 3 }", False),
        ("", "15", False),
        (None, "15", False),
        ("15", None, False),
    ],
)
def test_reformattings_and_wrong_answers(answer, solution, expected):
    assert grade_math(answer, solution) is expected
    if answer and solution:  # exactly what mathruler says on the normalised strings
        assert grade_answer(normalize_answer(answer), normalize_answer(solution)) is expected


def test_wrong_numeric_answers_are_wrong():
    numeric = [s for s in SOLUTIONS if s.replace(".", "", 1).isdigit()]
    assert len(numeric) > 300
    assert not any(grade_math(str(float(s) + 1), s) for s in numeric[:100])


@pytest.fixture
def short_timeout():
    set_grading_timeout(1.0)
    yield
    set_grading_timeout(5.0)


def test_runaway_sympy_times_out_scores_zero_and_is_counted(short_timeout):
    grading_stats(reset=True)
    assert grade_math(*RUNAWAY) is False
    stats = grading_stats(reset=True)
    assert stats["timeouts"] == 1
    # the helper was killed; the next answer starts a fresh one and grades normally
    assert grade_math("\\frac{1}{2}", "0.5") is True
    stats = grading_stats()
    assert stats["timeouts"] == 0 and stats["worker_starts"] == 1


def test_time_limit_works_off_the_main_thread(short_timeout):
    grading_stats(reset=True)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda pair: grade_math(*pair), [RUNAWAY, ("15.0", "15"), ("0.5", "\\frac{1}{2}")]))
    assert results == [False, True, True]
    assert grading_stats()["timeouts"] == 1
    assert threading.current_thread() is threading.main_thread()


def _grade_in_child(pairs):
    set_grading_timeout(1.0)
    return [grade_math(*pair) for pair in pairs], grading_stats()


def test_time_limit_works_in_a_daemonic_worker_process():
    # Pool workers are daemonic (they may not start multiprocessing children) and, forked, inherit
    # this process's grader state, which they must not reuse;
    # the helper is a plain subprocess, so grading works there too.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        results, stats = pool.apply(_grade_in_child, ([RUNAWAY, ("\\frac{1}{2}", "0.5")],))
    assert results == [False, True]
    assert stats["timeouts"] == 1


def _slow_start_worker(tmp_path: Path, delay_s: float) -> Path:
    """The real helper, started ``delay_s`` late: a loaded machine importing sympy."""
    script = tmp_path / "slow_worker.py"
    script.write_text(f"import runpy, time\ntime.sleep({delay_s})\n"
                      f"runpy.run_path({str(math_grader._WORKER_SCRIPT)!r}, run_name='__main__')\n")
    return script


def test_a_slow_helper_start_is_not_counted_in_the_first_answers_time_limit(short_timeout, tmp_path, monkeypatch):
    math_grader.shutdown_grader()
    monkeypatch.setattr(math_grader, "_WORKER_SCRIPT", _slow_start_worker(tmp_path, delay_s=2.0))
    grading_stats(reset=True)
    assert grade_math("\\frac{1}{2}", "0.5") is True  # the limit is 1 s; the start alone takes 2 s
    assert grading_stats()["timeouts"] == 0
    math_grader.shutdown_grader()


def test_a_helper_that_never_starts_scores_zero_as_an_error(tmp_path, monkeypatch):
    math_grader.shutdown_grader()
    monkeypatch.setattr(math_grader, "_WORKER_SCRIPT", _slow_start_worker(tmp_path, delay_s=60.0))
    monkeypatch.setattr(math_grader, "_STARTUP_TIMEOUT_S", 0.5)
    grading_stats(reset=True)
    assert grade_math("\\frac{1}{2}", "0.5") is False
    stats = grading_stats()
    assert stats["errors"] == 1 and stats["timeouts"] == 0
    math_grader.shutdown_grader()


def test_unknown_backend_and_bad_timeout_are_refused():
    with pytest.raises(ValueError, match="unknown grading backend"):
        grade_math("1", "2", backend="nope")
    with pytest.raises(ValueError, match="> 0"):
        set_grading_timeout(0)


def test_math_verify_backend():
    # math-verify is in the test extra (pyproject.toml, constraints/cpu.txt): this runs, never skips
    assert math_grader.math_verify_available()
    assert grade_math("\\frac{1}{2}", "0.5", backend="math_verify") is True
    assert grade_math("3", "0.5", backend="math_verify") is False
    # set equality up to order: math-verify says equal, mathruler does not, so this shows which one graded
    assert grade_math("$\\{1,2\\}$", "$\\{2,1\\}$", backend="math_verify") is True
    assert grade_math("$\\{1,2\\}$", "$\\{2,1\\}$", backend="mathruler") is False
