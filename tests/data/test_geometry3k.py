"""Geometry3K JSONL reading on the real annotation sample, validation, and the TRL dataset."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pepo.data import (
    PROMPT_SUFFIX,
    DataError,
    Record,
    build_prompt,
    load_benchmark,
    load_geometry3k,
    render_prompt,
    to_grpo_dataset,
)

SAMPLE = Path(__file__).parent / "fixtures/geometry3k/train_sample.jsonl"


@pytest.fixture
def geo(tmp_path):
    """The real 6-line sample and stand-in PNGs at the paths it names, under an image root."""
    root = tmp_path / "raw"
    for line in SAMPLE.read_text().splitlines():
        image = root / json.loads(line)["images"][0]
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), "white").save(image)
    data = tmp_path / "train.jsonl"
    shutil.copy(SAMPLE, data)
    return data, root


def _lines(path):
    return path.read_text().splitlines()


def test_reads_the_real_format(geo):
    data, root = geo
    loaded = load_geometry3k(data, image_root=root)
    assert len(loaded) == 6 and loaded.skipped == []
    first = loaded[0]
    assert first.solution == "15" and first.task == "math"
    assert first.images == [str(root / "Geometry3K/train/0/img_diagram.png")]
    content = first.prompt[0]["content"]
    assert content[0] == {"type": "image"}  # the <image> marker became the placeholder
    assert content[1]["text"].startswith("\\triangle R S T \\cong \\triangle X Y Z. Find y.")
    assert content[1]["text"].endswith(PROMPT_SUFFIX)
    assert first.source == f"{data}:1"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "line", "field", "message"),
    [
        ("missing_image", 2, "images[0]", "file not found"),
        ("corrupt_image", 2, "images[0]", "unreadable or corrupt"),
        ("truncated_image", 2, "images[0]", "unreadable or corrupt"),
        ("empty_image", 2, "images[0]", "empty file (0 bytes)"),
        # PIL refuses to decode a 0 x 0 image, so it is reported as unreadable
        ("zero_size_image", 2, "images[0]", "unreadable or corrupt"),
        ("malformed_json", 3, None, "malformed JSON line"),
        ("no_solution", 4, "solution", "missing or empty"),
        ("no_messages", 4, "messages", "missing or empty"),
        ("outside_root", 5, "images[0]", "points outside the image root"),
        ("absolute_path", 5, "images[0]", "absolute image path"),
    ],
)
def test_bad_input_names_file_line_and_field(geo, tmp_path, damage, line, field, message):
    data, root = geo
    lines = _lines(data)
    image_of = lambda i: root / json.loads(lines[i])["images"][0]  # noqa: E731
    if damage == "missing_image":
        image_of(1).unlink()
    elif damage == "corrupt_image":
        image_of(1).write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    elif damage == "truncated_image":
        image_of(1).write_bytes(image_of(1).read_bytes()[:60])
    elif damage == "empty_image":
        image_of(1).write_bytes(b"")
    elif damage == "zero_size_image":
        # a valid PNG header declaring 0 x 0 pixels (PIL refuses to write one)
        import struct
        import zlib

        def chunk(kind, body):
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
        image_of(1).write_bytes(png)
    elif damage == "malformed_json":
        lines[2] = lines[2][:-5]
    elif damage in ("no_solution", "no_messages"):
        record = json.loads(lines[3])
        del record["solution" if damage == "no_solution" else "messages"]
        lines[3] = json.dumps(record)
    elif damage in ("outside_root", "absolute_path"):
        record = json.loads(lines[4])
        record["images"] = ["../../etc/passwd"] if damage == "outside_root" else [str(image_of(0))]
        lines[4] = json.dumps(record)
    _write(data, lines)

    with pytest.raises(DataError) as raised:
        load_geometry3k(data, image_root=root)
    error = raised.value
    assert (error.path, error.line, error.field) == (str(data), line, field)
    assert message in str(error) and str(error).startswith(f"{data}:{line}: ")

    loaded = load_geometry3k(data, image_root=root, skip_invalid=True)
    assert len(loaded) == 5 and len(loaded.skipped) == 1 and loaded.skipped[0].line == line


def test_absolute_paths_are_accepted_when_allowed(geo):
    data, root = geo
    lines = _lines(data)
    record = json.loads(lines[0])
    record["images"] = [str(root / record["images"][0])]
    lines[0] = json.dumps(record)
    _write(data, lines)
    loaded = load_geometry3k(data, image_root=root, allow_absolute_paths=True)
    assert loaded[0].images == record["images"]


def test_default_image_root_is_the_data_folder(synthetic_data_dir):
    loaded = load_geometry3k(synthetic_data_dir / "test.jsonl")
    assert len(loaded) == 8
    assert all(Path(r.images[0]).is_relative_to(synthetic_data_dir) for r in loaded)
    assert {"qtype"} == set(loaded[0].categories)


def test_reference_chain_is_kept_outside_the_question(synthetic_data_dir):
    from pepo.evaluation.resume import question_sha256

    path = synthetic_data_dir / "train.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    loaded = load_geometry3k(path)
    assert [r.reference for r in loaded] == [line["reference"] for line in lines]
    assert loaded[0].reference.startswith("<think>")
    # the chain is not part of the question: eval rows resume across it
    hash_before = question_sha256(loaded[0])
    loaded[0].reference = "<think> other </think> <answer> x </answer>"
    assert question_sha256(loaded[0]) == hash_before


def test_unknown_benchmark_lists_the_known_ones(geo):
    with pytest.raises(KeyError, match="known benchmarks: algopuzzlevqa, fgvc_aircraft, flower102, geometry3k"):
        load_benchmark("mathvista_full", geo[0])


def test_build_prompt_places_images_at_markers():
    assert build_prompt("<image>\nq", 1) == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}]
    two = build_prompt("a <image> b <image>", 2)[0]["content"]
    assert [part["type"] for part in two] == ["text", "image", "text", "image"]
    assert build_prompt("q", 2)[0]["content"][:2] == [{"type": "image"}, {"type": "image"}]
    with pytest.raises(ValueError, match="2 <image> markers but the record has 1"):
        build_prompt("<image><image>", 1)


def test_grpo_dataset_is_what_trl_consumes(geo, tiny_vlm_path):
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    from pepo.modeling import load_model_and_processor

    data, root = geo
    dataset = to_grpo_dataset(load_geometry3k(data, image_root=root))
    assert set(dataset.column_names) == {"id", "prompt", "images", "solution", "task"}
    row = dataset[0]
    assert is_conversational(row)
    assert isinstance(row["images"][0], Image.Image) and row["images"][0].size == (32, 24)
    filled = prepare_multimodal_messages(row["prompt"], images=row["images"])
    assert filled[0]["content"][0]["image"] is row["images"][0]
    assert row["solution"] == "15"

    _, processor = load_model_and_processor(tiny_vlm_path)
    text = render_prompt(processor, row["prompt"])
    # the model's own template: one image block where the <image> marker was, then the question
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert text.index("<|image_pad|>") < text.index("triangle") and text.endswith("<|im_start|>assistant\n")
    assert render_prompt(processor, filled) == text  # same text once TRL has put the images in


def test_grpo_dataset_takes_pil_images_bytes_and_paths(tmp_path):
    # records built in memory (the demo's, or a reader's that decodes) hold PIL images; datasets encodes them
    import io

    import numpy as np

    rgb = Image.fromarray(np.arange(24 * 32 * 3, dtype=np.uint8).reshape(24, 32, 3))
    grey = Image.fromarray(np.arange(20 * 10, dtype=np.uint8).reshape(20, 10), mode="L")
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    path = tmp_path / "on_disk.png"
    grey.save(path)
    prompt = build_prompt("<image> <image> What is shown ?", 2)
    records = [Record(id="pil", prompt=prompt, images=[rgb, grey], solution="a"),
               Record(id="mixed", prompt=prompt, images=[png.getvalue(), str(path)], solution="b")]
    dataset = to_grpo_dataset(records)
    pil_row, mixed_row = dataset[0], dataset[1]
    for decoded, original in zip(pil_row["images"] + mixed_row["images"], [rgb, grey, rgb, grey]):
        assert decoded.size == original.size and decoded.mode == original.mode
        assert np.array_equal(np.asarray(decoded), np.asarray(original))  # lossless: PNG, not JPEG
