"""``evaluate_model``: sample N answers per question, score them, write them as they come.

The one evaluation code path of pepo: ``pepo eval`` and the demo both call :func:`evaluate_model`.

Generation backends (same results either way):

* ``transformers`` (default): ``model.generate`` on batches of questions, left padding,
  ``num_return_sequences = n``; sampling at ``temperature``/``top_p`` when ``n > 1``, greedy when
  ``n == 1`` (spec 8). Works on CPU.
* ``vllm`` (optional extra): ``model`` is a ``vllm.LLM``; one ``SamplingParams(n=...)`` request per
  question.

Resuming: with ``results_path``, each finished question is appended to that JSONL file at once
(after a header line holding the settings), and a later call with the same file skips the
questions already there, so a killed evaluation continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from pepo.data.prompts import render_prompt
from pepo.data.records import Record, open_image
from pepo.evaluation.scoring import majority_vote, score_answer, summarize

__all__ = ["EvalResult", "evaluate_model"]

logger = logging.getLogger(__name__)

# Settings that must match for a results file to be resumed.
_RESUME_KEYS = ("n", "temperature", "top_p", "max_new_tokens", "blank_images")


@dataclass
class EvalResult:
    """Per-question rows (``outputs``, ``answers``, ``scores``, ``score``, ``majority_answer``,
    ``majority_correct``, ``categories``, ...) and their :func:`summarize` totals."""

    questions: list[dict[str, Any]]
    totals: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "totals": self.totals, "questions": self.questions}


def _images(record: Record, blank: bool) -> list[Image.Image]:
    images = [open_image(source) for source in record.images]
    if blank:  # the control that shows a task needs its image
        images = [Image.new("RGB", image.size, (245, 245, 245)) for image in images]
    return images


def _batch_seed(seed: int, records: list[Record]) -> int:
    """A seed fixed by the questions of a batch, so a question's samples do not depend on the order
    of the run (given the same batch)."""
    digest = hashlib.sha256(f"{seed}|{'|'.join(r.id for r in records)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@torch.no_grad()
def _generate_transformers(model, processor, records, *, n, temperature, top_p, max_new_tokens, blank_images, seed):
    """``[(completions, completion token counts)]`` per record, one ``generate`` call."""
    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [render_prompt(processor, record.prompt) for record in records]
    images = [_images(record, blank_images) for record in records]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    try:
        has_images = any(images)
        if has_images and not all(images):
            raise ValueError("a batch mixes questions with and without images; evaluate them with batch_size=1")
        inputs = processor(text=texts, images=images if has_images else None, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    inputs = inputs.to(model.device)
    torch.manual_seed(_batch_seed(seed, records))
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if n > 1 else dict(do_sample=False)
    output = model.generate(
        **inputs, max_new_tokens=max_new_tokens, num_return_sequences=n,
        pad_token_id=tokenizer.pad_token_id, **sampling,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    texts_out = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    # tokens up to and including the first end-of-sequence / padding
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stop_ids = {tokenizer.pad_token_id, tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
    stop = torch.zeros_like(new_tokens, dtype=torch.bool)
    for token_id in stop_ids:
        stop |= new_tokens == token_id
    lengths = torch.where(stop.any(1), stop.int().argmax(1) + 1, torch.full_like(stop[:, 0], new_tokens.shape[1], dtype=torch.long))
    return [(texts_out[i * n : (i + 1) * n], lengths[i * n : (i + 1) * n].tolist()) for i in range(len(records))]


def _generate_vllm(llm, processor, records, *, n, temperature, top_p, max_new_tokens, blank_images, seed):
    from vllm import SamplingParams  # optional extra: pip install 'pepo[vllm]'

    params = SamplingParams(
        n=n, temperature=temperature if n > 1 else 0.0, top_p=top_p if n > 1 else 1.0,
        max_tokens=max_new_tokens, seed=seed,
    )
    requests = [
        {"prompt": render_prompt(processor, r.prompt), "multi_modal_data": {"image": _images(r, blank_images)}}
        for r in records
    ]
    outputs = llm.generate(requests, sampling_params=params, use_tqdm=False)
    return [([o.text for o in out.outputs], [len(o.token_ids) for o in out.outputs]) for out in outputs]


_BACKENDS = {"transformers": _generate_transformers, "vllm": _generate_vllm}


def _drop_partial_last_line(results_path: Path) -> None:
    """Cut a last line that a kill left without its newline, so that appended rows start on a
    line of their own (appending after it would glue two rows into one malformed line)."""
    if not results_path.exists():
        return
    with results_path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning("%s: incomplete last line (%d bytes) dropped; that question is redone",
                           results_path, len(data) - keep)
            handle.truncate(keep)


def _read_done(results_path: Path, config: dict[str, Any]) -> dict[str, dict]:
    """Rows already in a results file written with the same settings."""
    done: dict[str, dict] = {}
    if not results_path.exists():
        return done
    with results_path.open(encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a line cut short by the kill: redo that question
                logger.warning("%s:%d: incomplete last line ignored", results_path, number)
                continue
            raise ValueError(f"{results_path}:{number}: malformed results line; delete the file to start over") from None
        if "config" in row:
            old = {k: row["config"].get(k) for k in _RESUME_KEYS}
            new = {k: config.get(k) for k in _RESUME_KEYS}
            if old != new:
                raise ValueError(
                    f"{results_path} was written with {old}, this run uses {new}: "
                    "use another output path or delete the file to start over"
                )
        else:
            done[row["id"]] = row
    return done


def evaluate_model(
    model: Any,
    processor: Any,
    records: Iterable[Record],
    *,
    n: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 1024,
    batch_size: int = 8,
    backend: str = "transformers",
    results_path: str | Path | None = None,
    blank_images: bool = False,
    seed: int = 0,
    progress: bool = True,
    on_question: Callable[[dict[str, Any]], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``records`` with avg@``n`` and majority vote (spec 8).

    Args:
        model: a Hugging Face VLM (``backend="transformers"``) or a ``vllm.LLM`` (``"vllm"``).
        processor: the model's processor (its chat template renders the prompts).
        records: from :func:`pepo.data.load_benchmark` (or built in memory).
        n: samples per question; ``n=1`` decodes greedily.
        temperature, top_p, max_new_tokens: sampling settings (paper: 1.0, 1.0, 1024).
        batch_size: questions per ``generate`` call (each expanded to ``n`` sequences).
        results_path: JSONL file each finished question is appended to; questions already in it
            are skipped (resume).
        blank_images: replace every image by a blank one (does the task need the image?).
        seed: sampling seed (per batch of questions).
        progress: show a progress bar (questions/s).
        on_question: called with each finished row, after it is written.

    Returns:
        :class:`EvalResult`, rows in the order of ``records``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(_BACKENDS)}")
    records = list(records)
    config = {
        "n": n, "temperature": temperature if n > 1 else 0.0, "top_p": top_p if n > 1 else 1.0,
        "max_new_tokens": max_new_tokens, "blank_images": blank_images, "backend": backend, "seed": seed,
        "decoding": "sampling" if n > 1 else "greedy",
    }
    done: dict[str, dict] = {}
    sink = None
    if results_path is not None:
        results_path = Path(results_path)
        _drop_partial_last_line(results_path)
        done = _read_done(results_path, config)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not results_path.exists() or results_path.stat().st_size == 0
        sink = results_path.open("a", encoding="utf-8")
        if fresh:
            sink.write(json.dumps({"config": config}) + "\n")
            sink.flush()
    todo = [record for record in records if record.id not in done]
    if done:
        logger.info("resuming: %d of %d questions already in %s", len(records) - len(todo), len(records), results_path)
    generate = _BACKENDS[backend]
    bar = tqdm(total=len(records), initial=len(records) - len(todo), unit="question", desc="eval", disable=not progress)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            samples = generate(
                model, processor, batch, n=n, temperature=temperature, top_p=top_p,
                max_new_tokens=max_new_tokens, blank_images=blank_images, seed=seed,
            )
            for record, (outputs, lengths) in zip(batch, samples):
                row = _score_question(record, outputs, lengths)
                if sink is not None:
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    sink.flush()
                done[record.id] = row
                bar.update(1)
                if on_question is not None:
                    on_question(row)
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    rows = [done[record.id] for record in records]
    return EvalResult(questions=rows, totals=summarize(rows), config=config)


def _score_question(record: Record, outputs: list[str], lengths: list[int]) -> dict[str, Any]:
    answers, scores = zip(*(score_answer(record, text) for text in outputs))
    majority_answer, majority_correct = majority_vote(list(answers), list(scores))
    return {
        "id": record.id,
        "source": record.source,
        "solution": record.solution,
        "categories": record.categories,
        "outputs": outputs,
        "answers": list(answers),
        "scores": list(scores),
        "score": sum(scores) / len(scores),
        "majority_answer": majority_answer,
        "majority_correct": majority_correct,
        "completion_tokens": lengths,
    }
