"""Grading worker: reads JSON requests on stdin, writes JSON answers on stdout, one per line.

Run as a script by :mod:`pepo.rewards.math_grader` (never imported by the package), so it imports
only the standard library and the grading library, not torch. The parent kills it when one answer
takes longer than its time limit: a runaway sympy simplification cannot be interrupted from
another thread, but a process can always be killed.

First line written, once the grading libraries are imported: ``{"ready": true}`` (the parent's
per-answer clock starts after it, so a slow start on a loaded machine never fails an answer).
Request: ``{"pred": str, "gt": str, "backend": "mathruler" | "math_verify"}``.
Answer:  ``{"ok": bool}`` or ``{"ok": false, "error": "..."}``.
"""

import json
import os
import sys

# Run as a script, Python puts this file's folder first on sys.path; drop it so that no module
# of the package can shadow a standard-library one.
sys.path.pop(0)


def _grade(request):
    backend = request.get("backend", "mathruler")
    if backend == "mathruler":
        from mathruler.grader import grade_answer

        return bool(grade_answer(request["pred"], request["gt"]))
    if backend == "math_verify":
        from math_verify import parse, verify

        # math-verify's own signal-based limits work here: this is the main thread of a process.
        return bool(verify(parse(request["gt"]), parse(request["pred"])))
    raise ValueError(f"unknown grading backend {backend!r}")


def _import_backends():
    """Import what grading needs now, not inside the first answer's time limit."""
    for module in ("mathruler.grader", "math_verify"):
        try:
            __import__(module)
        except ImportError:  # math-verify is optional; a missing mathruler is reported per answer
            pass


def main():
    # Answers go to a private copy of stdout; anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr
    _import_backends()
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            reply = {"ok": _grade(json.loads(line))}
        except Exception as exc:  # a grading library error is a wrong answer, never a crash
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        channel.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
