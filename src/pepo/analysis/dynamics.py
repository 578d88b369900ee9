"""Training dynamics (paper Figure 6) from the logs a run leaves behind.

Hugging Face's ``Trainer`` keeps every logged dict in ``TrainerState.log_history``, saved as
``trainer_state.json`` in each ``checkpoint-N`` folder (and in the output directory by
``trainer.save_state()``). :class:`pepo.trainer.PEPOTrainer` logs its metrics there through TRL's
``GRPOTrainer.log``; :data:`METRIC_KEYS` is the one table that maps each curve of the figure to
the logged key.

A run is given as a directory (its ``trainer_state.json``, else the one in its highest
``checkpoint-N``), a ``trainer_state.json`` file, a JSON list of log dicts, or a JSONL file of log
dicts; every dict needs a ``step``. ``pepo demo``'s ``metrics.json`` (or its output folder) holds
the logs of several runs under ``rl_logs``: each method becomes one run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = ["METRIC_KEYS", "find_log_file", "load_run", "load_runs"]

# curve -> (logged key, axis label). Keys: TRL's GRPOTrainer ("reward", "completions/mean_length",
# "entropy": the mean token entropy of the policy forward) and PEPOTrainer ("pepo/visual_similarity":
# the mean cosine similarity of valid response tokens of rows with an image; logged only when the
# weighting uses perception, i.e. "pepo" or "perception").
METRIC_KEYS: dict[str, tuple[str, str]] = {
    "reward": ("reward", "mean reward"),
    "response_length": ("completions/mean_length", "mean response length (tokens)"),
    "visual_similarity": ("pepo/visual_similarity", "mean visual similarity"),
    "entropy": ("entropy", "mean token entropy (nats)"),
}

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def find_log_file(run: str | Path) -> Path:
    """The file holding a run's log history (see the module docstring)."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory or log file")
    if (run / "trainer_state.json").is_file():
        return run / "trainer_state.json"
    checkpoints = sorted(
        (int(m.group(1)), p) for p in run.iterdir() if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()
    )
    if checkpoints:
        return checkpoints[-1][1] / "trainer_state.json"
    if (run / "metrics.json").is_file():  # pepo demo's output folder
        return run / "metrics.json"
    raise FileNotFoundError(
        f"{run}: no trainer_state.json in it or in a checkpoint-N folder, and no pepo demo metrics.json (call "
        "trainer.save_state() at the end of training, or keep save_strategy on)"
    )


def _read_histories(path: Path) -> dict[str | None, list]:
    """``{None: log history}`` of one run, or ``{method: log history}`` of a pepo demo ``metrics.json``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        history = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: malformed JSON line ({error.msg})") from None
        return {None: history}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("rl_logs"), dict):
        return dict(data["rl_logs"])
    if isinstance(data, dict):
        if "log_history" not in data:
            raise ValueError(f"{path}: log_history: missing (is this a Hugging Face trainer_state.json?)")
        data = data["log_history"]
    return {None: data}


def _curves(path: Path, field: str, history: list) -> list[dict]:
    if not isinstance(history, list):
        raise ValueError(f"{path}: {field}: expected a list of log dicts, got {type(history).__name__}")
    rows = []
    for index, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {field}[{index}]: expected a dict, got {type(entry).__name__}")
        if not any(key in entry for key, _ in METRIC_KEYS.values()):
            continue  # e.g. the final train_runtime summary
        if "step" not in entry:
            raise ValueError(f"{path}: {field}[{index}]: step: missing")
        for curve, (key, _) in METRIC_KEYS.items():
            value = entry.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"step": int(entry["step"]), "curve": curve, "key": key, "value": float(value)})
    return rows


def load_run(run: str | Path) -> dict[str | None, list[dict]]:
    """Rows ``{step, curve, key, value}`` (one per logged value of a :data:`METRIC_KEYS` key) of
    the run(s) in ``run``: ``{None: rows}``, or ``{method: rows}`` for a pepo demo ``metrics.json``."""
    path = find_log_file(run)
    return {
        name: _curves(path, "log_history" if name is None else f"rl_logs.{name}", history)
        for name, history in _read_histories(path).items()
    }


def _label(run: Path) -> str:
    run = run.resolve()
    if run.is_file():
        run = run.parent
    if _CHECKPOINT.match(run.name) or run.name == "checkpoint":
        run = run.parent
    return run.name


def load_runs(runs: Sequence[str | Path]) -> list[dict]:
    """:func:`load_run` of every run, each row tagged with ``run`` (the directory's name, or the
    method of a pepo demo ``metrics.json``, made unique with ``#2``, ``#3`` ...)."""
    rows: list[dict] = []
    seen: Counter[str] = Counter()
    for run in runs:
        for name, curves in load_run(run).items():
            label = _label(Path(run)) if name is None else str(name)
            seen[label] += 1
            if seen[label] > 1:
                label = f"{label}#{seen[label]}"
            rows += [{"run": label, **row} for row in curves]
    return rows

