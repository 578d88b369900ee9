"""Figure 6: reading training curves from Hugging Face trainer_state.json log histories."""

import json

import pytest

from pepo.analysis.dynamics import METRIC_KEYS, find_log_file, load_run, load_runs
from tests.trainer.conftest import fresh_model, make_trainer, tiny_model_and_processor  # noqa: F401


def _state(path, history):
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": len(history), "log_history": history}))


HISTORY = [
    {"step": 1, "reward": 0.25, "completions/mean_length": 40.0, "pepo/visual_similarity": 0.11, "entropy": 2.5, "loss": 0.1},
    {"step": 2, "reward": 0.5, "completions/mean_length": 38.0, "pepo/visual_similarity": 0.13, "entropy": 2.25},
    {"step": 2, "train_runtime": 10.0, "train_loss": 0.2},  # the final summary: no curve
]


def test_load_run_reads_every_curve(tmp_path):
    _state(tmp_path / "pepo_g", HISTORY)
    rows = load_run(tmp_path / "pepo_g")[None]
    assert len(rows) == 8
    values = {(r["curve"], r["step"]): r["value"] for r in rows}
    assert values["reward", 2] == 0.5 and values["response_length", 1] == 40.0
    assert values["visual_similarity", 2] == 0.13 and values["entropy", 1] == 2.5


def test_the_highest_checkpoint_wins_numerically(tmp_path):
    _state(tmp_path / "run" / "checkpoint-2", HISTORY[:1])
    _state(tmp_path / "run" / "checkpoint-10", HISTORY[:2])  # "checkpoint-10" < "checkpoint-2" as text
    assert find_log_file(tmp_path / "run") == tmp_path / "run" / "checkpoint-10" / "trainer_state.json"
    assert {r["run"] for r in load_runs([tmp_path / "run" / "checkpoint-10"])} == {"run"}


def test_grpo_run_without_similarity_and_duplicate_labels(tmp_path):
    grpo = [{k: v for k, v in entry.items() if k != "pepo/visual_similarity"} for entry in HISTORY]
    _state(tmp_path / "a" / "grpo", grpo)
    _state(tmp_path / "b" / "grpo", HISTORY)
    rows = load_runs([tmp_path / "a" / "grpo", tmp_path / "b" / "grpo"])
    assert {r["run"] for r in rows} == {"grpo", "grpo#2"}
    assert not [r for r in rows if r["run"] == "grpo" and r["curve"] == "visual_similarity"]


def test_jsonl_and_list_logs(tmp_path):
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(e) for e in HISTORY[:2]) + "\n")
    (tmp_path / "log.json").write_text(json.dumps(HISTORY[:2]))
    assert load_run(tmp_path / "log.jsonl") == load_run(tmp_path / "log.json")
    assert len(load_run(tmp_path / "log.json")[None]) == 8


def test_pepo_demo_metrics_json_holds_one_run_per_method(tmp_path):
    grpo = [{k: v for k, v in entry.items() if k != "pepo/visual_similarity"} for entry in HISTORY[:2]]
    (tmp_path / "metrics.json").write_text(json.dumps({"rows": [], "rl_logs": {"grpo": grpo, "pepo_g": HISTORY[:2]}}))
    rows = load_runs([tmp_path])  # the demo's output folder
    assert {r["run"] for r in rows} == {"grpo", "pepo_g"}
    assert [r["value"] for r in rows if r["run"] == "pepo_g" and r["curve"] == "visual_similarity"] == [0.11, 0.13]
    assert [r["value"] for r in rows if r["run"] == "grpo" and r["curve"] == "entropy"] == [2.5, 2.25]
    (tmp_path / "metrics.json").write_text(json.dumps({"rl_logs": {"grpo": [{"reward": 1.0}]}}))
    with pytest.raises(ValueError, match=r"metrics.json: rl_logs.grpo\[0\]: step: missing"):
        load_runs([tmp_path / "metrics.json"])


def test_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trainer_state.json"):
        find_log_file(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"global_step": 3}))
    with pytest.raises(ValueError, match=r"bad.json: log_history: missing"):
        load_run(tmp_path / "bad.json")
    (tmp_path / "nostep.json").write_text(json.dumps([{"reward": 1.0}]))
    with pytest.raises(ValueError, match=r"nostep.json: log_history\[0\]: step: missing"):
        load_run(tmp_path / "nostep.json")
    (tmp_path / "cut.jsonl").write_text('{"step": 1, "reward": 1}\n{"step": 2, "rew')
    with pytest.raises(ValueError, match=r"cut.jsonl:2: malformed"):
        load_run(tmp_path / "cut.jsonl")


def test_metric_keys_are_the_keys_the_trainers_log(make_trainer, tmp_path):
    """The table must follow the trainer: one PEPO step (TRL's own logging) logs every key, and
    load_run reads every curve back from the trainer_state.json it saves."""
    trainer = make_trainer(weighting="pepo", max_steps=1)
    trainer.train()
    logged = {key for entry in trainer.state.log_history for key in entry}
    for key, _ in METRIC_KEYS.values():
        assert key in logged, key
    trainer.save_state()
    rows = load_run(tmp_path / "out")[None]
    assert {r["curve"] for r in rows} == set(METRIC_KEYS)
    assert all(r["step"] == 1 for r in rows)
