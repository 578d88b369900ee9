"""Math answer grading with a time limit that works anywhere.

``mathruler.grader.grade_answer`` (what the paper's release uses) calls sympy with no time limit,
and some answers make sympy run for minutes; math-verify's own time limit uses ``signal.alarm``,
which only works on the main thread of the main interpreter. A reward function, though, runs
wherever the trainer calls it: a worker thread, a data-loader process, a DeepSpeed rank.

So the grading library runs in a persistent helper process (``_grader_worker.py``, started on
first use, one per calling process) that answers one request at a time over a pipe. Waiting on a
pipe with a timeout works on any thread; when an answer takes longer than the limit, the helper is
killed (the only thing that really stops a runaway sympy call), the answer scores 0, a timeout is
counted, and the next request starts a fresh helper. The limit counts grading only: a helper's
start (importing sympy: seconds on a loaded machine) ends with a ready line before any clock runs.
:func:`grading_stats` returns the counts of the calling process; ``PEPOTrainer`` does not log them
(each timeout is logged as a warning): read them yourself, e.g. from a ``TrainerCallback``'s
``on_log``, to put them in the training logs.

Answers equal after normalisation are correct without asking the helper (every real Geometry3K
solution graded against itself takes this path).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from pepo.rewards.answers import normalize_answer

__all__ = [
    "GRADING_BACKENDS",
    "grade_math",
    "grading_stats",
    "set_grading_timeout",
    "shutdown_grader",
]

logger = logging.getLogger(__name__)

GRADING_BACKENDS = ("mathruler", "math_verify")
_WORKER_SCRIPT = Path(__file__).with_name("_grader_worker.py")
_timeout_s = 5.0
# A helper's start (a Python process importing sympy) is not part of any answer's time limit: on a
# loaded machine it can take longer than the limit itself. It gets this long to say it is ready.
_STARTUP_TIMEOUT_S = 120.0


def set_grading_timeout(seconds: float) -> None:
    """Per-answer time limit in seconds (default 5). An answer that takes longer scores 0."""
    global _timeout_s
    if not seconds > 0:
        raise ValueError(f"grading timeout must be > 0 seconds, got {seconds!r}")
    _timeout_s = float(seconds)


class _GraderProcess:
    """One helper process and the thread that reads its answers."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # sympy warnings are noise here; errors come back as replies
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="pepo-grader-reader").start()
        try:
            line = self.replies.get(timeout=_STARTUP_TIMEOUT_S)
        except queue.Empty:
            line = None
        self.ready = line is not None and json.loads(line).get("ready") is True

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(line)
        self.replies.put(None)  # end of file: the helper died

    def ask(self, request: dict, timeout: float) -> dict | str:
        """The helper's reply, or ``"timeout"`` / ``"died"`` / ``"not started"`` (the caller then kills it)."""
        if not self.ready:
            return "not started"
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            return "timeout"
        except (OSError, ValueError):  # broken pipe: the helper is gone
            return "died"
        return "died" if line is None else json.loads(line)

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:  # already gone
            pass


class _GraderState:
    """Per calling process: the helper, its lock and the counters (a forked child starts anew)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.worker: _GraderProcess | None = None
        self.stats = {"graded": 0, "timeouts": 0, "errors": 0, "worker_starts": 0}


_state: _GraderState | None = None
_state_guard = threading.Lock()


def _get_state() -> _GraderState:
    global _state
    state = _state
    if state is None or state.pid != os.getpid():
        with _state_guard:
            if _state is None or _state.pid != os.getpid():
                _state = _GraderState()
            state = _state
    return state


def grade_math(answer: str | None, solution: str | None, backend: str = "mathruler") -> bool:
    """Whether ``answer`` is mathematically equivalent to ``solution``.

    Both are normalised (``docs/method.md``, Rewards) first; then ``mathruler.grader.grade_answer(answer, solution)``
    (or math-verify's ``verify(parse(solution), parse(answer))`` with ``backend="math_verify"``)
    decides, within the per-answer time limit. Never raises: a timeout, a grading-library error
    or an empty answer is ``False``.
    """
    if backend not in GRADING_BACKENDS:
        raise ValueError(f"unknown grading backend {backend!r}; choose one of {GRADING_BACKENDS}")
    pred, gold = normalize_answer(answer), normalize_answer(solution)
    state = _get_state()
    if not pred or not gold:
        with state.lock:
            state.stats["graded"] += 1
        return False
    if pred == gold:
        with state.lock:
            state.stats["graded"] += 1
        return True
    request = {"pred": pred, "gt": gold, "backend": backend}
    with state.lock:
        state.stats["graded"] += 1
        if state.worker is None:
            state.worker = _GraderProcess()
            state.stats["worker_starts"] += 1
        reply = state.worker.ask(request, _timeout_s)
        if isinstance(reply, str):
            state.worker.kill()
            state.worker = None
            if reply == "timeout":
                state.stats["timeouts"] += 1
                logger.warning("grading %r against %r took over %.1fs: scored 0", pred[:80], gold[:80], _timeout_s)
            else:
                state.stats["errors"] += 1
                logger.warning("the grading helper process %s while grading %r: scored 0",
                               "died" if reply == "died" else f"did not start within {_STARTUP_TIMEOUT_S:.0f}s",
                               pred[:80])
            return False
    if "error" in reply:
        with state.lock:
            state.stats["errors"] += 1
        logger.debug("grading %r against %r failed: %s", pred[:80], gold[:80], reply["error"])
    return bool(reply["ok"])


def grading_stats(reset: bool = False) -> dict[str, int]:
    """Counters of this process since the last reset: ``graded`` answers, ``timeouts`` (scored 0),
    ``errors`` (grading-library exceptions or helper deaths, scored 0), ``worker_starts``.
    With ``reset=True`` the counters restart from 0 after being read (log them once per step)."""
    state = _get_state()
    with state.lock:
        stats = dict(state.stats)
        if reset:
            state.stats = dict.fromkeys(state.stats, 0)
    return stats


def math_verify_available() -> bool:
    return importlib.util.find_spec("math_verify") is not None


def shutdown_grader() -> None:
    """Stop this process's grading helper (it restarts on the next request)."""
    state = _state
    if state is not None and state.pid == os.getpid():
        with state.lock:
            if state.worker is not None:
                state.worker.kill()
                state.worker = None


atexit.register(shutdown_grader)
