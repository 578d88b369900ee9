"""What a person sees while training: one progress bar and, every ``logging_steps``, one short line.

Transformers' ``ProgressCallback`` writes every logged dict to the console (for PEPO about 50
quoted values per step). :class:`CompactProgress` keeps its progress bar and writes instead::

    step    3/10  train reward 1.750  length 11.2  vis-sim 0.412  lambda 0.30  2.05 s/step

``train reward`` is the mean reward of the step's sampled completions, on the prompts being trained
on: it says the run is alive, not that the model improved on questions it has not seen (a run can
print 2.0 while its held-out score falls). ``eval_after_train`` prints a held-out figure at the end.

Only the console changes: every metric still goes to ``state.log_history`` (``trainer_state.json``)
and to the backends of ``report_to``, which read the same ``on_log`` event through their own callbacks.
"""

from __future__ import annotations

import math
import warnings

from transformers import PrinterCallback, ProgressCallback, Trainer

__all__ = ["CompactPrinter", "CompactProgress", "compact_line", "filter_unactionable_warnings", "quiet_library_progress",
           "use_compact_console"]

# logged key -> (label, format): the few numbers a person follows during RL. `loss` stands in
# for `reward` where nothing is rewarded (the supervised warm start).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("reward", "train reward", "{:.3f}"),  # on the training prompts: not a held-out score
    ("completions/mean_length", "length", "{:.1f}"),
    ("pepo/visual_similarity", "vis-sim", "{:.3f}"),
    ("pepo/lambda", "lambda", "{:.2f}"),
)
SUPERVISED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("loss", "loss", "{:.4f}"),
    ("mean_token_accuracy", "token acc", "{:.3f}"),
    ("learning_rate", "lr", "{:.2e}"),
)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compact_line(logs: dict, step: int, max_steps: int) -> str:
    """One console line for one logged dict (a training step's metrics, or the end-of-run summary)."""
    if "train_runtime" in logs:
        seconds = _number(logs["train_runtime"]) or 0.0
        return f"trained to step {step}/{max_steps} in {seconds:.0f} s"
    columns = COLUMNS if "reward" in logs else SUPERVISED_COLUMNS
    parts = [f"step {step:>{len(str(max_steps))}}/{max_steps}"]
    for key, label, spec in columns:
        value = _number(logs.get(key))
        if value is not None:
            parts.append(f"{label} {spec.format(value) if math.isfinite(value) else value}")
    step_time = _number(logs.get("step_time"))
    if step_time is not None:
        parts.append(f"{step_time:.2f} s/step")
    if len(parts) == 1:  # neither RL nor supervised metrics (e.g. an evaluation): the numbers, briefly
        parts += [f"{k} {v:.4g}" for k, v in logs.items() if _number(v) is not None][:6]
    return "  ".join(parts)


class CompactProgress(ProgressCallback):
    """Transformers' progress bar, with :func:`compact_line` in place of the logged dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(compact_line(logs, state.global_step, state.max_steps))


class CompactPrinter(PrinterCallback):
    """``disable_tqdm=True``: no bar, the same compact line printed."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(compact_line(logs, state.global_step, state.max_steps), flush=True)


def use_compact_console(trainer: Trainer) -> Trainer:
    """Swap the trainer's console callback (bar or printer) for the compact one; returns ``trainer``."""
    had_bar = any(type(cb) is ProgressCallback for cb in trainer.callback_handler.callbacks)
    for callback in (ProgressCallback, PrinterCallback):
        while any(type(cb) is callback for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(callback)
    trainer.add_callback(CompactProgress if had_bar else CompactPrinter)
    return trainer


def filter_unactionable_warnings() -> None:
    """Hide the warnings a user can do nothing about, each by category, message and module.

    TRL 1.16 still calls transformers' ``gradient_checkpointing_*`` / ``is_gradient_checkpointing``,
    which transformers 5 renamed ``activation_checkpointing_*``: a FutureWarning per call, from
    inside the libraries, whatever the recipe says. TRL's ``GRPOConfig`` sets the old
    ``gradient_checkpointing`` field itself, which warns once per config even where the recipe
    sets ``activation_checkpointing``.
    """
    warnings.filterwarnings(
        "ignore", category=FutureWarning, module=r"transformers\.training_args",
        message=r"`gradient_checkpointing` is deprecated and will be removed in v6",
    )
    warnings.filterwarnings(
        "ignore", category=FutureWarning, module=r"transformers\.modeling_utils",
        message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated and will be removed in v6",
    )


def quiet_library_progress() -> None:
    """Turn off transformers' bars for loading and writing weights: they are not phases of the run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

