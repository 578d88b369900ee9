"""pepo.embedded.synthetic: reproducible, correct, balanced problems in the Geometry3K layout."""

from __future__ import annotations

import collections
import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pepo.embedded.synthetic import (
    CHAIN_STYLES,
    COLOURS,
    DEFAULT_QUESTION_TYPES,
    POSITIONS,
    PROMPT_SUFFIX,
    QUESTION_TYPES,
    SHAPES,
    TASKS,
    TWO_FACT_QUESTION_TYPES,
    generate_dataset,
    generate_split,
    make_problem,
    render,
)
from pepo.rewards import choice_reward, format_reward

CHAIN = re.compile(r"^<think> (?P<think>.+) </think> <answer> (?P<answer>[^<]+) </answer>$")


def _expected_answer(problem) -> str:
    """The answer re-derived from the scene, independently of the generator's templates."""
    objects = [c for c in problem.scene.cells if c is not None]
    words = problem.question.split()
    if problem.qtype == "colour_of_shape":  # What colour is the <shape> ?
        (match,) = [o for o in objects if o[1] == words[4]]
        return match[0]
    if problem.qtype == "shape_of_colour":  # Which shape is <colour> ?
        (match,) = [o for o in objects if o[0] == words[3]]
        return match[1]
    if problem.qtype == "shape_at":  # What shape is at the <v> <h> ?
        return problem.scene.cells[POSITIONS.index(" ".join(words[5:7]))][1]
    if problem.qtype == "count_shape":  # How many <shapes> are there ?
        return str(sum(o[1] + "s" == words[2] for o in objects))
    if problem.qtype == "count_shape_pair":  # How many <shapes> and <shapes> are there ?
        return str(sum(o[1] + "s" in (words[2], words[4]) for o in objects))
    if problem.qtype == "count_colour_pair":  # How many <colour> and <colour> shapes are there ?
        return str(sum(o[0] in (words[2], words[4]) for o in objects))
    if problem.qtype == "count_colour_shape":  # How many <colour> <shapes> are there ?
        return str(sum(o == (words[2], words[3][:-1]) for o in objects))
    return str(sum(o[0] == words[2] for o in objects))  # How many <colour> shapes are there ?


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), qtype=st.sampled_from(QUESTION_TYPES), chain=st.sampled_from(CHAIN_STYLES))
def test_answer_follows_from_the_scene(seed, qtype, chain):
    problem = make_problem(random.Random(seed), qtype, chain=chain)
    assert problem.qtype == qtype
    assert problem.answer == _expected_answer(problem)
    match = CHAIN.match(problem.chain)
    assert match and match["answer"] == problem.answer
    assert 2 <= sum(c is not None for c in problem.scene.cells) <= 4


def test_chain_styles():
    # Same draw, two styles: the short chain states the one fact; the long one names its position.
    # Hand-worked: seed 0 -> "What colour is the square ?" with a purple square at the bottom left.
    short = make_problem(random.Random(0), "colour_of_shape", chain="short")
    long = make_problem(random.Random(0), "colour_of_shape", chain="long")
    assert short.scene == long.scene and short.answer == long.answer
    shape, colour = short.question.split()[4], short.answer
    assert short.chain == f"<think> The {shape} is {colour} . </think> <answer> {colour} </answer>"
    (pos,) = long.scene.where(shape=shape)
    assert long.chain.startswith(f"<think> The {shape} is at the {pos} . It is {colour} .")
    count = make_problem(random.Random(3), "count_shape", chain="short")
    n = int(count.answer)
    noun = count.question.split()[2] if n != 1 else count.question.split()[2][:-1]
    assert count.chain == f"<think> There {'is' if n == 1 else 'are'} {n} {noun} . </think> <answer> {n} </answer>"


def test_default_question_types_leave_out_positions():
    rng = random.Random(0)
    assert {make_problem(rng).qtype for _ in range(400)} == set(DEFAULT_QUESTION_TYPES)
    assert "shape_at" not in DEFAULT_QUESTION_TYPES
    rng = random.Random(0)
    assert {make_problem(rng, qtypes=QUESTION_TYPES).qtype for _ in range(400)} == set(QUESTION_TYPES)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_render_draws_each_cell_in_its_colour(seed):
    problem = make_problem(random.Random(seed))
    image = render(problem)
    assert image.size == (56, 56) and image.mode == "RGB"
    for i, cell in enumerate(problem.scene.cells):
        centre = ((i % 2) * 28 + 14 + problem.jitter[3 * i], (i // 2) * 28 + 14 + problem.jitter[3 * i + 1])
        expected = COLOURS[cell[0]] if cell is not None else (245, 245, 245)
        assert image.getpixel(centre) == expected, (i, cell)
    assert render(problem, blank=True).getcolors() == [(56 * 56, (245, 245, 245))]


def test_reference_chain_earns_full_reward():
    rng = random.Random(0)
    problems = [make_problem(rng) for _ in range(50)]
    completions = [[{"role": "assistant", "content": p.chain}] for p in problems]
    solutions = [p.answer for p in problems]
    assert format_reward(completions) == [1.0] * 50
    assert choice_reward(completions, solution=solutions) == [1.0] * 50
    wrong = ["7" if p.answer != "7" else "8" for p in problems]
    assert choice_reward(completions, solution=wrong) == [0.0] * 50


def test_answers_are_balanced_so_the_image_is_needed():
    rng = random.Random(0)
    answers = collections.defaultdict(collections.Counter)
    for _ in range(3000):
        problem = make_problem(rng, qtypes=QUESTION_TYPES)
        answers[problem.qtype][problem.answer] += 1
    assert set(answers) == set(QUESTION_TYPES)
    expected_options = {"colour_of_shape": 5, "shape_of_colour": 4, "shape_at": 4, "count_shape": 4, "count_colour": 4,
                        "count_shape_pair": 5, "count_colour_pair": 5, "count_colour_shape": 3}
    for qtype, counts in answers.items():
        assert len(counts) == expected_options[qtype], (qtype, counts)
        total = sum(counts.values())
        # The most frequent answer is at most 1.35x uniform: guessing without the image stays near chance.
        assert max(counts.values()) / total <= 1.35 / len(counts), (qtype, counts)


def test_split_files_are_geometry3k_records(synthetic_data_dir):
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        lines = (synthetic_data_dir / f"{split}.jsonl").read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            record = json.loads(line)
            assert set(record) == {"images", "messages", "solution", "reference", "qtype"}
            (image_path,) = record["images"]
            with Image.open(synthetic_data_dir / image_path) as image:
                assert image.size == (56, 56)
            (message,) = record["messages"]
            assert message["role"] == "user"
            assert message["content"].startswith("<image>\n") and message["content"].endswith("\n\n" + PROMPT_SUFFIX)
            assert CHAIN.match(record["reference"])["answer"] == record["solution"]


def test_generation_is_reproducible(tmp_path):
    a = generate_split(tmp_path / "a", "val", 6, seed=1)
    b = generate_split(tmp_path / "b", "val", 6, seed=1)
    c = generate_split(tmp_path / "c", "val", 6, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    for i in range(6):
        rel = f"images/val/{i:06d}.png"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_splits_use_different_streams(tmp_path):
    paths = generate_dataset(tmp_path, n_train=20, n_val=20, n_test=20, seed=0)
    questions = {s: [json.loads(line)["messages"][0]["content"] for line in p.read_text().splitlines()] for s, p in paths.items()}
    assert questions["train"] != questions["val"] != questions["test"]


def test_unknown_question_type_or_chain_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown question type"):
        make_problem(random.Random(0), "colour_of_everything")
    with pytest.raises(ValueError, match="unknown question type"):
        generate_split(tmp_path, "val", 2, seed=0, qtypes=("shape_at", "size_of_shape"))
    with pytest.raises(ValueError, match="unknown chain style"):
        make_problem(random.Random(0), chain="medium")


# --- the two_facts task: questions whose answer needs two facts read from the image ----------------


def test_two_facts_task_draws_only_its_question_types():
    rng = random.Random(0)
    assert {make_problem(rng, qtypes=TASKS["two_facts"]).qtype for _ in range(300)} == set(TWO_FACT_QUESTION_TYPES)
    assert TASKS["one_fact"] == DEFAULT_QUESTION_TYPES
    assert not set(TWO_FACT_QUESTION_TYPES) & set(DEFAULT_QUESTION_TYPES)


def test_two_fact_chains_state_both_facts():
    # Hand-worked: seed 1 draws a yellow diamond, a yellow square and two red diamonds, and asks for
    # triangles and squares: 0 + 1.
    problem = make_problem(random.Random(1), "count_shape_pair", chain="short")
    assert problem.scene.cells == (("yellow", "diamond"), ("yellow", "square"), ("red", "diamond"), ("red", "diamond"))
    assert problem.question == "How many triangles and squares are there ?"
    assert problem.chain == "<think> 0 triangles and 1 square . </think> <answer> 1 </answer>"
    long = make_problem(random.Random(1), "count_shape_pair", chain="long")
    assert long.scene == problem.scene and long.question == problem.question
    assert long.chain.startswith("<think> I see no triangle . The square is at the top right . So the answer is 1 .")


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_colour_and_shape_question_needs_both(seed):
    # "How many red circles ?" answered 0 always has a red shape and a circle in the scene (on
    # different objects), so seeing the colour alone or the shape alone never answers it.
    problem = make_problem(random.Random(seed), "count_colour_shape")
    colour, shape = problem.question.split()[2], problem.question.split()[3][:-1]
    assert colour in COLOURS and shape in SHAPES
    objects = [c for c in problem.scene.cells if c is not None]
    if problem.answer == "0":
        assert any(o[0] == colour for o in objects) and any(o[1] == shape for o in objects)


def test_two_facts_splits_are_reproducible(tmp_path):
    a = generate_split(tmp_path / "a", "val", 6, seed=1, qtypes=TASKS["two_facts"])
    b = generate_split(tmp_path / "b", "val", 6, seed=1, qtypes=TASKS["two_facts"])
    assert a.read_bytes() == b.read_bytes()
    records = [json.loads(line) for line in a.read_text().splitlines()]
    assert {r["qtype"] for r in records} <= set(TWO_FACT_QUESTION_TYPES)
    for i, record in enumerate(records):
        rel = f"images/val/{i:06d}.png"
        assert record["images"] == [rel] and (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert CHAIN.match(record["reference"])["answer"] == record["solution"]
