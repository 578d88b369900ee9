"""Each benchmark reader on a small fixture in its published format, built here."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pepo.data import BENCHMARKS, DataError, load_benchmark, open_image


def png(color="red", size=(20, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def save_png(path, color="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(color))


def test_registry_covers_the_papers_benchmarks():
    assert {"geometry3k", "mathvista", "mathverse", "logicvista", "refcoco", "lisa_grounding", "fgvc_aircraft",
            "flower102", "puzzlevqa", "algopuzzlevqa"} <= set(BENCHMARKS)


def test_mathvista_parquet_with_embedded_images(tmp_path):
    # AI4Math/MathVista testmini as exported by `datasets`: decoded_image is {"bytes", "path"}
    rows = [
        {"pid": "1", "query": "Hint: ... Question: Which is larger?\nChoices:\n(A) a\n(B) b", "image": "images/1.jpg",
         "decoded_image": {"bytes": png("blue"), "path": "1.jpg"}, "choices": ["a", "b"], "answer": "b",
         "question_type": "multi_choice", "answer_type": "text", "precision": None,
         "metadata": {"skills": ["logical reasoning", "arithmetic reasoning"], "task": "figure question answering",
                      "context": "bar chart", "grade": "daily life", "category": "math-targeted-vqa",
                      "source": "x", "language": "english"}},
        {"pid": "2", "query": "Question: What is x?", "image": "images/2.jpg",
         "decoded_image": {"bytes": png(), "path": "2.jpg"}, "choices": None, "answer": "1.5",
         "question_type": "free_form", "answer_type": "float", "precision": 1.0,
         "metadata": {"skills": ["algebraic reasoning"], "task": "math word problem", "context": "function plot",
                      "grade": "college", "category": "math-targeted-vqa", "source": "y", "language": "english"}},
    ]
    path = tmp_path / "testmini-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = load_benchmark("mathvista", path)
    first, second = loaded
    assert (first.id, first.task, first.choices, first.solution) == ("1", "choice", ["a", "b"], "b")
    assert first.categories["skills"] == ["logical reasoning", "arithmetic reasoning"]
    assert first.categories["question_type"] == "multi_choice"
    assert open_image(first.images[0]).getpixel((0, 0)) == (0, 0, 255)
    assert first.prompt[0]["content"][1]["text"].startswith("Hint: ...")
    assert (second.task, second.meta["answer_type"], second.meta["precision"]) == ("math", "float", 1.0)


def test_mathvista_github_json_keyed_by_pid(tmp_path):
    save_png(tmp_path / "images/7.jpg")
    (tmp_path / "testmini.json").write_text(json.dumps({"7": {
        "pid": "7", "query": "Q?", "image": "images/7.jpg", "answer": "3", "question_type": "free_form",
        "answer_type": "integer", "metadata": {"skills": ["arithmetic reasoning"]}}}))
    (record,) = load_benchmark("mathvista", tmp_path / "testmini.json")
    assert record.images == [str(tmp_path / "images/7.jpg")] and record.solution == "3"
    (tmp_path / "bad.json").write_text(json.dumps({"8": {"pid": "8", "query": "Q?", "answer": "3"}}))
    with pytest.raises(DataError, match=r"bad.json:record 8: image: missing"):
        load_benchmark("mathvista", tmp_path / "bad.json")


def test_mathverse_keeps_choice_questions_like_the_release(tmp_path):
    rows = [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Vision Only", "question": "",
         "image": {"bytes": png(), "path": None}, "answer": "B", "question_type": "multi-choice",
         "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}},
        {"sample_index": "2", "problem_index": "1", "problem_version": "Text Dominant", "question": "Find x.",
         "image": {"bytes": png(), "path": None}, "answer": "5", "question_type": "free-form",
         "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Length"}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "testmini.parquet")
    choice_only = load_benchmark("mathverse", tmp_path / "testmini.parquet", skip_invalid=True)
    # row 1 has an empty question: a located error, skipped and counted
    assert len(choice_only) == 0 and "row 1: question: missing or empty" in str(choice_only.skipped[0])
    rows[0]["question"] = "Which angle? Choices: A:30 B:60"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "testmini.parquet")
    (record,) = load_benchmark("mathverse", tmp_path / "testmini.parquet")
    assert record.task == "choice" and record.categories == {"problem_version": "Vision Only", "subject": "Plane Geometry", "subfield": "Angle"}
    assert "Answer with the option's letter" in record.prompt[0]["content"][1]["text"]
    assert len(load_benchmark("mathverse_all", tmp_path / "testmini.parquet")) == 2


def test_logicvista_github_json(tmp_path):
    save_png(tmp_path / "images/0.jpg")
    (tmp_path / "dataset.json").write_text(json.dumps({"0": {
        "imagename": "0.jpg", "question": "Which one? A. x B. y", "answer": "B", "reasoning": "...",
        "skill": ["inductive"], "broad_capability": "diagram", "specific_capability": "patterns"}}))
    (record,) = load_benchmark("logicvista", tmp_path / "dataset.json", image_root=tmp_path / "images")
    assert record.task == "choice" and record.solution == "B" and record.categories["skill"] == ["inductive"]


def test_refcoco_vlm_r1_json_and_lmms_parquet(tmp_path):
    save_png(tmp_path / "coco/a.jpg")
    (tmp_path / "refcoco_val.json").write_text(json.dumps([{
        "image": "a.jpg", "problem": "Please provide the bounding box coordinate of the region this sentence describes: man.",
        "solution": [1, 2, 11, 12], "normal_caption": "man"}]))
    (record,) = load_benchmark("refcoco", tmp_path / "refcoco_val.json", image_root=tmp_path / "coco")
    assert record.task == "grounding" and record.solution == [1.0, 2.0, 11.0, 12.0]
    # lmms-lab/RefCOCO: COCO [x, y, w, h] boxes become [x1, y1, x2, y2]
    pq.write_table(pa.Table.from_pylist([{"question_id": "q1", "image": {"bytes": png(), "path": None},
                                          "answer": ["man on the left"], "bbox": [1.0, 2.0, 10.0, 10.0]}]),
                   tmp_path / "val.parquet")
    (record,) = load_benchmark("lisa_grounding", tmp_path / "val.parquet")
    assert record.solution == [1.0, 2.0, 11.0, 12.0] and "man on the left" in record.prompt[0]["content"][1]["text"]


def test_few_shot_classification_visual_rft_jsonl(tmp_path):
    save_png(tmp_path / "fgvc/0.jpg")
    (tmp_path / "fgvc_4shot.jsonl").write_text(json.dumps({
        "image": "fgvc/0.jpg", "problem": "This is an image containing an aircraft. Which model is it?",
        "solution": "<answer>707-320</answer>"}) + "\n")
    (record,) = load_benchmark("fgvc_aircraft", tmp_path / "fgvc_4shot.jsonl")
    assert (record.task, record.solution, record.choices) == ("choice", "707-320", None)


def test_puzzlevqa_folder_of_json_lines(tmp_path):
    for puzzle in ("circle_size_numbers", "color_hexagon"):
        save_png(tmp_path / f"images/{puzzle}/{puzzle}_0000.png")
        lines = [json.dumps({"question": "What is the missing size?", "options": ["1", "2", "3", "4"], "answer": "3",
                             "image": f"images/{puzzle}/{puzzle}_0000.png", "caption": "...", "explanation": "..."})] * 2
        (tmp_path / f"{puzzle}.json").write_text("\n".join(lines) + "\n")
    loaded = load_benchmark("puzzlevqa", tmp_path)
    assert len(loaded) == 4 and len({r.id for r in loaded}) == 4
    assert [r.categories["puzzle"] for r in loaded] == ["circle_size_numbers"] * 2 + ["color_hexagon"] * 2
    assert loaded[0].choices == ["1", "2", "3", "4"] and "(C) 3" in loaded[0].prompt[0]["content"][1]["text"]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_benchmark("mathvista", tmp_path / "nope.parquet")
