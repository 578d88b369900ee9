"""A synthetic visual-reasoning task in the spirit of PuzzleVQA, rendered with PIL.

Each image is a 2 x 2 grid of cells (56 x 56 pixels: one cell per image token of the tiny VLM);
two to four cells hold a coloured shape. Questions ask what can only be read from the image:

* ``colour_of_shape``  "What colour is the triangle ?"          -> ``purple``
* ``shape_of_colour``  "Which shape is red ?"                   -> ``circle``
* ``shape_at``         "What shape is at the top left ?"        -> ``square``
* ``count_shape``      "How many circles are there ?"           -> ``2``
* ``count_colour``     "How many blue shapes are there ?"       -> ``1``

Those five need one visual fact each. The ``two_facts`` task (:data:`TASKS`) asks questions whose
answer needs two facts read from the image, so that perception decides more of the answer:

* ``count_shape_pair``   "How many circles and squares are there ?"  -> ``3`` (two counts added)
* ``count_colour_pair``  "How many red and blue shapes are there ?"  -> ``2``
* ``count_colour_shape`` "How many red circles are there ?"          -> ``1`` (colour and shape of
  each object together: when the answer is 0 the scene still holds a red shape and a circle)

They use only words the one-fact questions already have, so the embedded tokenizer (trained on the
one-fact text, :func:`corpus`) and the tiny model built from it are the same for both tasks.

The demo's default (:data:`DEFAULT_QUESTION_TYPES`) is the four types without ``shape_at``, with
short chains: on the tiny VLM that regime let RL lift avg@8 by about 10 points, while position
questions and long chains left RL little to improve (both stay available: ``qtypes=``, ``chain=``).

The answer is balanced over its options by construction (the scene is drawn first, the asked
object uniformly among the valid ones), so a model that cannot see does no better than chance.

Every record carries a reference chain of thought ``<think> ... </think> <answer> ... </answer>``.
``chain="short"`` states the one fact seen (``The triangle is purple .``); ``chain="long"``
names positions, colours and shapes (the visual words PEPO's perception prior should find) and
reasons over them (``So``, ``Therefore``: the turns its entropy signal should find). Records are written in the Geometry3K JSONL layout (``docs/method.md``, Data and evaluation), with images on
disk and paths relative to the JSONL's folder, plus two extra fields, ``reference`` (the chain)
and ``qtype``.

Text is written word by word with spaces around punctuation: the embedded tokenizer is word-level.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from pepo.data.prompts import PROMPT_SUFFIX  # the training suffix (docs/method.md, Rewards)

__all__ = [
    "CHAIN_STYLES",
    "COLOURS",
    "DEFAULT_QUESTION_TYPES",
    "POSITIONS",
    "QUESTION_TYPES",
    "SHAPES",
    "TASKS",
    "Scene",
    "ONE_FACT_QUESTION_TYPES",
    "Problem",
    "TWO_FACT_QUESTION_TYPES",
    "corpus",
    "generate_dataset",
    "generate_split",
    "make_problem",
    "render",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (150, 60, 190),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
ONE_FACT_QUESTION_TYPES = ("colour_of_shape", "shape_of_colour", "shape_at", "count_shape", "count_colour")
TWO_FACT_QUESTION_TYPES = ("count_shape_pair", "count_colour_pair", "count_colour_shape")
QUESTION_TYPES = ONE_FACT_QUESTION_TYPES + TWO_FACT_QUESTION_TYPES
DEFAULT_QUESTION_TYPES = ("colour_of_shape", "shape_of_colour", "count_shape", "count_colour")
# task variant -> its question types (``pepo demo --task``)
TASKS: dict[str, tuple[str, ...]] = {"one_fact": DEFAULT_QUESTION_TYPES, "two_facts": TWO_FACT_QUESTION_TYPES}
# The answer drawn before the scene, uniform over these (inclusive) ranges: 0-3 for the one-fact
# counts; two counts added reach 4; three equal objects (colour and shape) are too rare to ask for.
_ANSWER_RANGE = {"count_shape_pair": (0, 4), "count_colour_pair": (0, 4), "count_colour_shape": (0, 2)}
CHAIN_STYLES = ("short", "long")
IMAGE_SIZE = 56  # 2 x 2 cells of 28 px = 2 x 2 merged 14 px patches of Qwen2-VL = 4 image tokens
_CELL = IMAGE_SIZE // 2
_BACKGROUND = (245, 245, 245)


@dataclass(frozen=True)
class Scene:
    """``cells[i]`` is ``(colour, shape)`` or ``None`` for ``POSITIONS[i]``."""

    cells: tuple[tuple[str, str] | None, ...]

    def where(self, colour: str | None = None, shape: str | None = None) -> list[str]:
        """Positions whose object matches the given colour and/or shape."""
        return [
            POSITIONS[i]
            for i, cell in enumerate(self.cells)
            if cell is not None and (colour is None or cell[0] == colour) and (shape is None or cell[1] == shape)
        ]


@dataclass(frozen=True)
class Problem:
    scene: Scene
    qtype: str
    question: str
    answer: str
    chain: str  # "<think> ... </think> <answer> ... </answer>"
    jitter: tuple[int, ...]  # per cell: dx, dy, size offset (rendering only)


def _listing(positions: list[str]) -> str:
    """``the top left , the top right and the bottom left``."""
    items = [f"the {p}" for p in positions]
    return items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]


def _where_sentence(n: int, singular: str, plural: str, positions: list[str]) -> str:
    """``The circles are at the top left and the bottom right .`` (``I see no circle .`` for none)."""
    if n == 0:
        return f"I see no {singular} ."
    if n == 1:
        return f"The {singular} is at {_listing(positions)} ."
    return f"The {plural} are at {_listing(positions)} ."


def _count_chain(n: int, singular: str, plural: str, positions: list[str]) -> str:
    # Naming where each object is gives the model a step per cell (counting by looking).
    conclusion = f"there is 1 {singular}" if n == 1 else f"there are {n} {plural}"
    return f"{_where_sentence(n, singular, plural, positions)} Therefore {conclusion} ."


def _check(qtypes: tuple[str, ...], chain: str) -> None:
    unknown = [q for q in qtypes if q not in QUESTION_TYPES]
    if unknown or not qtypes:
        raise ValueError(f"unknown question type(s) {unknown or qtypes!r}; expected a non-empty subset of {QUESTION_TYPES}")
    if chain not in CHAIN_STYLES:
        raise ValueError(f"unknown chain style {chain!r}; expected one of {CHAIN_STYLES}")


def make_problem(
    rng: random.Random,
    qtype: str | None = None,
    *,
    qtypes: tuple[str, ...] = DEFAULT_QUESTION_TYPES,
    chain: str = "short",
) -> Problem:
    """Draw one problem. ``qtype=None`` draws the question type uniformly from ``qtypes``;
    ``chain`` is the reference chain's style (``"short"`` or ``"long"``)."""
    _check((qtype,) if qtype else tuple(qtypes), chain)
    qtype = qtype or rng.choice(tuple(qtypes))
    # Counts are drawn before the scene (uniform, 0 to 3 unless _ANSWER_RANGE says otherwise) so
    # that no count is a free guess; the rejection loop below then redraws scenes until one has it.
    count = rng.randint(*_ANSWER_RANGE.get(qtype, (0, 3)))
    while True:  # rejection: redraw scenes that cannot pose this question
        n_objects = rng.randint(2, 4)
        occupied = set(rng.sample(range(4), n_objects))
        cells = tuple(
            (rng.choice(list(COLOURS)), rng.choice(SHAPES)) if i in occupied else None for i in range(4)
        )
        scene = Scene(cells)
        problem = _pose(rng, scene, qtype, count, chain == "short")
        if problem is not None:
            break
    jitter = tuple(rng.randint(-2, 2) for _ in range(12))
    question, answer, think = problem
    chain = f"<think> {think} </think> <answer> {answer} </answer>"
    return Problem(scene, qtype, question, answer, chain, jitter)


def _short_count(n: int, singular: str, plural: str) -> str:
    return f"There is 1 {singular} ." if n == 1 else f"There are {n} {plural} ."


def _pose(rng: random.Random, scene: Scene, qtype: str, n: int, short: bool) -> tuple[str, str, str] | None:
    if qtype in TWO_FACT_QUESTION_TYPES:
        return _pose_two_facts(rng, scene, qtype, n, short)
    objects = [c for c in scene.cells if c is not None]
    if qtype == "colour_of_shape":
        unique = [s for s in SHAPES if sum(o[1] == s for o in objects) == 1]
        if not unique:
            return None
        shape = rng.choice(unique)
        (pos,) = scene.where(shape=shape)
        colour = next(o[0] for o in objects if o[1] == shape)
        think = (f"The {shape} is {colour} ." if short
                 else f"The {shape} is at the {pos} . It is {colour} . So the answer is {colour} .")
        return f"What colour is the {shape} ?", colour, think
    if qtype == "shape_of_colour":
        unique = [c for c in COLOURS if sum(o[0] == c for o in objects) == 1]
        if not unique:
            return None
        colour = rng.choice(unique)
        (pos,) = scene.where(colour=colour)
        shape = next(o[1] for o in objects if o[0] == colour)
        think = (f"The {colour} shape is a {shape} ." if short
                 else f"The {colour} shape is at the {pos} . It is a {shape} . So the answer is {shape} .")
        return f"Which shape is {colour} ?", shape, think
    if qtype == "shape_at":
        pos = rng.choice(scene.where())
        colour, shape = scene.cells[POSITIONS.index(pos)]
        think = (f"At the {pos} there is a {shape} ." if short
                 else f"At the {pos} there is a {colour} {shape} . So the answer is {shape} .")
        return f"What shape is at the {pos} ?", shape, think
    if qtype == "count_shape":
        options = [s for s in SHAPES if len(scene.where(shape=s)) == n]
        if not options:
            return None
        shape = rng.choice(options)
        think = (_short_count(n, shape, PLURALS[shape]) if short
                 else _count_chain(n, shape, PLURALS[shape], scene.where(shape=shape)))
        return f"How many {PLURALS[shape]} are there ?", str(n), think
    # count_colour
    options = [c for c in COLOURS if len(scene.where(colour=c)) == n]
    if not options:
        return None
    colour = rng.choice(options)
    think = (_short_count(n, f"{colour} shape", f"{colour} shapes") if short
             else _count_chain(n, f"{colour} shape", f"{colour} shapes", scene.where(colour=colour)))
    return f"How many {colour} shapes are there ?", str(n), think


def _pose_two_facts(rng: random.Random, scene: Scene, qtype: str, n: int, short: bool) -> tuple[str, str, str] | None:
    """The two-fact questions with answer ``n``, or None when ``scene`` cannot pose one."""
    if qtype == "count_colour_shape":
        # n = 0 only where the colour and the shape are both in the scene, on different objects:
        # seeing either alone never answers it.
        options = [(c, s) for c in COLOURS for s in SHAPES if len(scene.where(colour=c, shape=s)) == n
                   and (n > 0 or (scene.where(colour=c) and scene.where(shape=s)))]
        if not options:
            return None
        colour, shape = rng.choice(options)
        singular, plural = f"{colour} {shape}", f"{colour} {PLURALS[shape]}"
        think = (_short_count(n, singular, plural) if short else
                 f"{_where_sentence(n, singular, plural, scene.where(colour=colour, shape=shape))} So the answer is {n} .")
        return f"How many {plural} are there ?", str(n), think
    by_shape = qtype == "count_shape_pair"
    kinds = SHAPES if by_shape else tuple(COLOURS)
    found = {k: scene.where(shape=k) if by_shape else scene.where(colour=k) for k in kinds}
    pairs = [(a, b) for a in kinds for b in kinds if a != b and len(found[a]) + len(found[b]) == n]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    nouns = {k: (k, PLURALS[k]) if by_shape else (f"{k} shape", f"{k} shapes") for k in (a, b)}
    question = f"How many {PLURALS[a]} and {PLURALS[b]} are there ?" if by_shape else f"How many {a} and {b} shapes are there ?"
    if short:  # both counts in one clause: the whole completion stays within the demo's 16 tokens
        counted = [f"{len(found[k])} {nouns[k][0] if len(found[k]) == 1 else nouns[k][1]}" for k in (a, b)]
        return question, str(n), f"{counted[0]} and {counted[1]} ."
    facts = [_where_sentence(len(found[k]), *nouns[k], found[k]) for k in (a, b)]
    return question, str(n), f"{facts[0]} {facts[1]} So the answer is {n} ."


def render(problem: Problem, blank: bool = False) -> Image.Image:
    """The problem's image (RGB, 56 x 56). ``blank=True`` gives the empty background only
    (the blank-image check: a model that needs the image must fall to chance on it)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _BACKGROUND)
    if blank:
        return image
    draw = ImageDraw.Draw(image)
    for i, cell in enumerate(problem.scene.cells):
        if cell is None:
            continue
        colour, shape = cell
        dx, dy, ds = problem.jitter[3 * i : 3 * i + 3]
        cx = (i % 2) * _CELL + _CELL // 2 + dx
        cy = (i // 2) * _CELL + _CELL // 2 + dy
        r = 9 + ds // 2  # half-size 8..10 px: the shape stays inside its cell
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "square":
            draw.rectangle([cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1], fill=fill)
        elif shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return image


def prompt_text(question: str) -> str:
    """The user turn of the Geometry3K layout: image marker, question, blank line, suffix."""
    return f"<image>\n{question}\n\n{PROMPT_SUFFIX}"


def generate_split(
    out_dir: str | Path,
    split: str,
    n: int,
    seed: int,
    *,
    qtypes: tuple[str, ...] = DEFAULT_QUESTION_TYPES,
    chain: str = "short",
) -> Path:
    """Write ``n`` problems to ``out_dir/<split>.jsonl`` and their images to
    ``out_dir/images/<split>/``; image paths in the records are relative to ``out_dir``.
    The same ``(split, n, seed, qtypes, chain)`` writes the same bytes."""
    _check(tuple(qtypes), chain)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"pepo-synthetic/{split}/{seed}")
    path = out_dir / f"{split}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            problem = make_problem(rng, qtypes=qtypes, chain=chain)
            rel = f"images/{split}/{i:06d}.png"
            render(problem).save(out_dir / rel)
            record = {
                "images": [rel],
                "messages": [{"role": "user", "content": prompt_text(problem.question)}],
                "solution": problem.answer,
                "reference": problem.chain,
                "qtype": problem.qtype,
            }
            f.write(json.dumps(record) + "\n")
    return path


def generate_dataset(
    out_dir: str | Path,
    *,
    n_train: int = 4096,
    n_val: int = 256,
    n_test: int = 512,
    seed: int = 0,
    qtypes: tuple[str, ...] = DEFAULT_QUESTION_TYPES,
    chain: str = "short",
) -> dict[str, Path]:
    """Write the train / val / test splits (different random streams, same seed)."""
    return {
        split: generate_split(out_dir, split, n, seed, qtypes=qtypes, chain=chain)
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test))
    }


def corpus(n_samples: int = 2000, seed: int = 0) -> list[str]:
    """Text the embedded tokenizer is trained on: every word the task can produce (an explicit
    word list, so rare combinations are covered) plus sampled prompts and chains of every one-fact
    question type and chain style. One tokenizer serves every task variant: the two-fact questions
    use only these words (tested), and leaving them out of the sample keeps the tokenizer, hence
    the tiny model, what it was before they existed."""
    words = (
        list(COLOURS) + list(SHAPES) + list(PLURALS.values())
        + [w for p in POSITIONS for w in p.split()] + [str(n) for n in range(10)]
    )
    lines = [" ".join(words), PROMPT_SUFFIX, "system user assistant You are a helpful assistant ."]
    rng = random.Random(f"pepo-corpus/{seed}")
    for i in range(n_samples):
        problem = make_problem(rng, qtypes=ONE_FACT_QUESTION_TYPES, chain=CHAIN_STYLES[i % 2])
        lines.append(problem.question + " " + problem.chain)
    return lines
