"""pepo.embedded.recipe: the trainers' datasets hand back the rows' in-memory images."""

from __future__ import annotations

import pytest

from pepo.embedded.recipe import load_rows, rl_train, rows_dataset


def test_rows_dataset_hands_back_the_loaded_images(synthetic_data_dir):
    rows = load_rows(synthetic_data_dir / "train.jsonl")
    dataset = rows_dataset(rows, ("prompt", "images", "solution"))
    assert len(dataset) == len(rows)
    assert set(dataset.column_names) == {"prompt", "images", "solution"}  # trainers' column filters keep "images"
    first = next(iter(dataset))  # what TRL's SFTTrainer inspects
    assert first["images"][0] == rows[0]["images"][0]  # PIL: same mode, size and pixels
    batch = dataset.__getitems__([5, 2, 5])  # what the DataLoader fetches
    assert [example["images"][0] for example in batch] == [rows[i]["images"][0] for i in (5, 2, 5)]
    assert all(example["images"][0].mode == "RGB" for example in batch)
    assert [example["solution"] for example in batch] == [rows[i]["solution"] for i in (5, 2, 5)]
    assert batch[0]["prompt"][0]["content"][1]["text"] == rows[5]["prompt"][0]["content"][1]["text"]


def test_rows_dataset_fingerprints_one_pixel_array_not_each_image(synthetic_data_dir, monkeypatch):
    """datasets hashes the transform by pickling what it holds: one array, not a PIL image per row."""
    from PIL import Image

    rows = load_rows(synthetic_data_dir / "train.jsonl")
    pickled, getstate = [], Image.Image.__getstate__
    monkeypatch.setattr(Image.Image, "__getstate__", lambda self: pickled.append(1) or getstate(self))
    rows_dataset(rows, ("prompt", "images"))
    assert pickled == []
    # images of mixed sizes: the rows' own images, handed back as they are
    mixed = [{**rows[0], "images": [Image.new("RGB", (28, 56))]}, *rows[1:3]]
    dataset = rows_dataset(mixed, ("prompt", "images"))
    assert dataset[0]["images"][0] is mixed[0]["images"][0] and dataset[2]["images"][0] is mixed[2]["images"][0]


def test_rows_dataset_without_images(synthetic_data_dir):
    rows = load_rows(synthetic_data_dir / "train.jsonl", limit=3)
    dataset = rows_dataset(rows, ("prompt", "solution"))
    assert "images" not in dataset[0] and dataset[2]["solution"] == rows[2]["solution"]


@pytest.mark.parametrize("micro", [0, 3])
def test_rl_train_refuses_a_micro_batch_that_does_not_divide_the_step(tmp_path, micro):
    with pytest.raises(ValueError, match="micro_batch_size"):
        rl_train(tmp_path / "no_model_needed", [], tmp_path / "out", "grpo", prompts_per_step=2, num_generations=4,
                 micro_batch_size=micro)


def test_load_rows_are_the_records_pepo_data_reads(synthetic_data_dir, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from pepo.data import DataError, load_geometry3k

    path = synthetic_data_dir / "train.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    rows, records = load_rows(path, limit=5), load_geometry3k(path).records[:5]
    assert [r["prompt"] for r in rows] == [r.prompt for r in records]
    assert [r["completion"][0]["content"] for r in rows] == [line["reference"] for line in lines[:5]]
    assert [(r["solution"], r["qtype"]) for r in rows] == [(line["solution"], line["qtype"]) for line in lines[:5]]
    decoded = Image.open(synthetic_data_dir / lines[0]["images"][0]).convert("RGB")
    assert np.array_equal(np.asarray(rows[0]["images"][0]), np.asarray(decoded))
    # a record without its chain cannot be a warm-start row: named by file and line
    del lines[1]["reference"]
    broken = tmp_path / "train.jsonl"
    broken.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n")
    (tmp_path / "images").symlink_to(synthetic_data_dir / "images")
    with pytest.raises(DataError, match=r"train\.jsonl:2: reference: missing"):
        load_rows(broken)
