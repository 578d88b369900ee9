"""`pepo eval` and `evaluate_model` end to end on the tiny VLM and synthetic questions."""

import json

import pytest

from pepo.cli import main as pepo_main
from pepo.data import load_geometry3k
from pepo.evaluation import evaluate_model, score_answer
from pepo.evaluation.cli import results_jsonl_path
from pepo.modeling import load_model_and_processor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_and_processor(tiny_vlm_path):
    return load_model_and_processor(tiny_vlm_path)


def test_cli_writes_results_and_prints_a_summary(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["eval", "--model", str(tiny_vlm_path), "--benchmark", "geometry3k", "--data",
            str(synthetic_data_dir / "test.jsonl"), "--n", "3", "--max-new-tokens", "8", "--batch-size", "4",
            "--out", str(out), "--no-progress"]
    assert pepo_main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["n"] == 3 and result["config"]["benchmark"] == "geometry3k"
    assert result["totals"]["questions"] == 8 and len(result["questions"]) == 8
    for row in result["questions"]:
        assert len(row["outputs"]) == len(row["answers"]) == len(row["scores"]) == 3
        assert row["score"] == sum(row["scores"]) / 3
        assert all(1 <= t <= 8 for t in row["completion_tokens"])
    assert set(result["totals"]["categories"]) == {"qtype"}
    printed = capsys.readouterr().out
    assert "avg@3 (%)" in printed and "by qtype" in printed
    # a finished run is resumed as a no-op: same rows, nothing generated again
    assert pepo_main(argv) == 0
    assert json.loads(out.read_text())["questions"] == result["questions"]
    assert len(results_jsonl_path(out).read_text().splitlines()) == 1 + 8


def test_cli_bad_benchmark_name(tiny_vlm_path, synthetic_data_dir, tmp_path, capsys):
    assert pepo_main(["eval", "--model", str(tiny_vlm_path), "--benchmark", "nope", "--data",
                      str(synthetic_data_dir / "test.jsonl"), "--out", str(tmp_path / "r.json")]) == 2
    assert "known benchmarks: algopuzzlevqa" in capsys.readouterr().err


def test_interrupted_evaluation_resumes_where_it_stopped(model_and_processor, synthetic_data_dir, tmp_path):
    model, processor = model_and_processor
    records = load_geometry3k(synthetic_data_dir / "test.jsonl").records
    settings = dict(n=2, max_new_tokens=6, batch_size=1, progress=False, seed=1)
    path = tmp_path / "run.questions.jsonl"

    class Killed(Exception):
        pass

    def kill_after_three(row, seen=[]):  # noqa: B006 - counts across calls on purpose
        seen.append(row["id"])
        if len(seen) == 3:
            raise Killed

    with pytest.raises(Killed):
        evaluate_model(model, processor, records, results_path=path, on_question=kill_after_three, **settings)
    assert len(path.read_text().splitlines()) == 1 + 3  # header + three finished questions

    evaluated = []
    resumed = evaluate_model(model, processor, records, results_path=path, on_question=lambda r: evaluated.append(r["id"]), **settings)
    assert evaluated == [r.id for r in records[3:]]  # only the rest was generated
    assert [row["id"] for row in resumed.questions] == [r.id for r in records]
    # per-batch seeding: the resumed rows equal those of an uninterrupted run
    fresh = evaluate_model(model, processor, records, **settings)
    assert [row["outputs"] for row in resumed.questions] == [row["outputs"] for row in fresh.questions]

    with pytest.raises(ValueError, match="holds rows of another run: config.n is 2 there, 3 here"):
        evaluate_model(model, processor, records, results_path=path, **{**settings, "n": 3})


def test_greedy_scores_agree_with_the_answers_they_score(model_and_processor, synthetic_data_dir):
    # Greedy decoding is deterministic: make each question's solution the model's own greedy
    # answer and the same evaluation must score 100%; the real solutions score what
    # score_answer says about each output.
    model, processor = model_and_processor
    records = load_geometry3k(synthetic_data_dir / "test.jsonl").records
    first = evaluate_model(model, processor, records, n=1, max_new_tokens=6, batch_size=4, progress=False)
    assert first.config["decoding"] == "greedy"
    for record, row in zip(records, first.questions):
        assert row["scores"] == [score_answer(record, row["outputs"][0])[1]]
        record.solution = row["answers"][0]
    second = evaluate_model(model, processor, records, n=1, max_new_tokens=6, batch_size=4, progress=False)
    assert [r["outputs"] for r in second.questions] == [r["outputs"] for r in first.questions]
    assert second.totals["avg_at_n"] == 100.0 and second.totals["majority"] == 100.0


def test_a_file_mixing_questions_with_and_without_images_is_evaluated(model_and_processor, synthetic_data_dir):
    # before: "a batch mixes questions with and without images" ValueError mid-run, a traceback from pepo eval
    model, processor = model_and_processor
    records = load_geometry3k(synthetic_data_dir / "test.jsonl").records[:6]
    for record in records[1::2]:  # every second question without its image
        record.images = []
        for message in record.prompt:
            message["content"] = [part for part in message["content"] if part.get("type") != "image"]
    mixed = evaluate_model(model, processor, records, n=1, max_new_tokens=4, batch_size=4, progress=False)
    one_by_one = evaluate_model(model, processor, records, n=1, max_new_tokens=4, batch_size=1, progress=False)
    assert [r["id"] for r in mixed.questions] == [r.id for r in records]
    assert all(len(r["outputs"]) == 1 for r in mixed.questions)
    # greedy decoding: the same outputs whatever the batching (left padding aside, one question per call)
    assert [r["outputs"] for r in mixed.questions] == [r["outputs"] for r in one_by_one.questions]
