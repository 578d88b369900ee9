"""What training prints (one compact line per logging step) and where the metrics still go
(trainer_state.json's log history and the report_to backends: TensorBoard event files here)."""

from __future__ import annotations

import warnings

import pytest
from transformers import PrinterCallback, ProgressCallback

from pepo.trainer.progress import (
    CompactPrinter,
    CompactProgress,
    compact_line,
    filter_unactionable_warnings,
    use_compact_console,
)

RL_LOGS = {"loss": 0.0033, "grad_norm": 0.4, "reward": 1.75, "reward_std": 0.3, "completions/mean_length": 11.25,
           "pepo/visual_similarity": 0.41234, "pepo/lambda": 0.3, "pepo/weight/p0": 0.9, "step_time": 2.049,
           "entropy": 3.1, "epoch": 0.1}


def test_compact_line_holds_the_numbers_a_person_follows():
    assert compact_line(RL_LOGS, 3, 10) == (
        "step  3/10  train reward 1.750  length 11.2  vis-sim 0.412  lambda 0.30  2.05 s/step")
    # a baseline logs no lambda / similarity: those columns are left out, not shown as 0
    assert compact_line({"reward": 0.5, "completions/mean_length": 9.0, "step_time": 1.0}, 12, 200) == (
        "step  12/200  train reward 0.500  length 9.0  1.00 s/step")
    assert compact_line({"loss": 1.483, "mean_token_accuracy": 0.699, "learning_rate": 5.13e-4}, 60, 120) == (
        "step  60/120  loss 1.4830  token acc 0.699  lr 5.13e-04")
    assert compact_line({"train_runtime": 39.6, "train_loss": 0.0}, 10, 10) == "trained to step 10/10 in 40 s"


def test_console_callback_is_swapped_for_the_compact_one(make_trainer):
    bar = use_compact_console(make_trainer(disable_tqdm=False))
    kinds = [type(cb) for cb in bar.callback_handler.callbacks]
    assert CompactProgress in kinds and ProgressCallback not in kinds and PrinterCallback not in kinds
    printer = use_compact_console(make_trainer(disable_tqdm=True))
    kinds = [type(cb) for cb in printer.callback_handler.callbacks]
    assert CompactPrinter in kinds and PrinterCallback not in kinds and ProgressCallback not in kinds


@pytest.mark.slow
def test_training_prints_compact_lines_and_tensorboard_gets_the_pepo_scalars(make_trainer, tmp_path, capsys):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard not installed (pip install -e '.[test]' installs it)")
    logs = tmp_path / "out"  # transformers' TensorBoardCallback writes under output_dir/runs/
    trainer = use_compact_console(make_trainer(weighting="pepo", max_steps=2, report_to=["tensorboard"]))
    assert trainer.args.output_dir == str(logs)
    trainer.train()

    printed = capsys.readouterr().out.splitlines()
    steps = [line for line in printed if line.startswith("step ")]
    assert len(steps) == 2 and all("reward" in line and "lambda" in line and "s/step" in line for line in steps)
    assert not any("'grad_norm'" in line or "pepo/weight/p0" in line for line in printed)  # no raw dict

    history = {k for row in trainer.state.log_history for k in row}  # trainer_state.json keeps every metric
    assert {"pepo/weight/p0", "pepo/entropy/p100", "pepo/lambda", "grad_norm", "reward"} <= history

    events = list(logs.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {logs}"
    scalars = set()
    for event_file in events:
        accumulator = event_accumulator.EventAccumulator(str(event_file))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
    pepo = {tag for tag in scalars if "pepo/" in tag}
    assert {"train/pepo/lambda", "train/pepo/visual_similarity", "train/pepo/weight/p0"} <= pepo, sorted(scalars)


def test_only_the_renamed_checkpointing_warnings_are_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        filter_unactionable_warnings()
        hidden = "`gradient_checkpointing_enable` is deprecated and will be removed in v6. Use ..."
        warnings.warn_explicit(hidden, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("`gradient_checkpointing` is deprecated and will be removed in v6. Use ...",
                               FutureWarning, "training_args.py", 1, module="transformers.training_args")
        # the same words from another module, another category, another message: all still shown
        warnings.warn_explicit(hidden, FutureWarning, "mine.py", 1, module="mine")
        warnings.warn_explicit(hidden, UserWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("`foo` is deprecated", FutureWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
    assert [(w.category, w.filename) for w in caught] == [
        (FutureWarning, "mine.py"), (UserWarning, "modeling_utils.py"), (FutureWarning, "modeling_utils.py")]
