"""``evaluate_model``: sample N answers per question, score them, write them as they come.

The one evaluation code path of pepo: ``pepo eval`` and the demo both call :func:`evaluate_model`.

Generation backends (same results either way):

* ``transformers`` (default): ``model.generate`` on batches of questions, left padding,
  ``num_return_sequences = n``; sampling at ``temperature``/``top_p`` when ``n > 1``, greedy when
  ``n == 1`` (``docs/method.md``, Data and evaluation). Works on CPU.
* ``vllm`` (optional extra): ``model`` is a ``vllm.LLM``; one ``SamplingParams(n=...)`` request per
  question.

Resuming: with ``results_path``, each finished question is appended to that JSONL file at once
(after a header line recording the settings and what produced the rows), and a later call with the
same file skips the questions already there, so a killed evaluation continues where it stopped. Rows
of another model, data, seed or setting are refused, never reused (:mod:`pepo.evaluation.resume`).
"""

from __future__ import annotations

import hashlib
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
from pepo.evaluation.resume import RowWriter, drop_partial_last_line, loaded_model_fingerprint, question_sha256, read_rows, row_key
from pepo.evaluation.scoring import majority_vote, score_answer, summarize
from pepo.prompt_sharing import generate_with_shared_prompts

__all__ = ["EvalResult", "eval_config", "evaluate_model", "results_header"]

logger = logging.getLogger(__name__)

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
            raise ValueError("a batch mixes questions with and without images (question_batches keeps them apart)")
        inputs = processor(text=texts, images=images if has_images else None, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    inputs = inputs.to(model.device)
    torch.manual_seed(_batch_seed(seed, records))
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if n > 1 else dict(do_sample=False)
    output = generate_with_shared_prompts(  # each question's prompt prefilled once for its n samples
        model, **inputs, max_new_tokens=max_new_tokens, num_return_sequences=n,
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


def eval_config(*, n: int, temperature: float, top_p: float, max_new_tokens: int, blank_images: bool, backend: str,
                seed: int) -> dict[str, Any]:
    """The settings an evaluation's rows depend on (sampling ones only when sampling: n > 1)."""
    return {
        "n": n, "temperature": temperature if n > 1 else 0.0, "top_p": top_p if n > 1 else 1.0,
        "max_new_tokens": max_new_tokens, "blank_images": blank_images, "backend": backend, "seed": seed,
        "decoding": "sampling" if n > 1 else "greedy",
    }


def results_header(config: dict[str, Any], provenance: dict[str, Any] | None, model: Any = None,
                   backend: str = "transformers") -> dict[str, Any]:
    """The header line of a results file: the settings and what produced the rows."""
    provenance = dict(provenance or {})
    if "model" not in provenance:
        if backend != "transformers" or model is None:
            raise ValueError("resuming a vllm evaluation needs provenance={'model': {'path': ..., 'sha256': ...}} "
                             "(pepo.evaluation.resume.model_fingerprint)")
        provenance["model"] = {"sha256": loaded_model_fingerprint(model)}
    if "dtype" not in provenance and model is not None and hasattr(model, "dtype"):
        provenance["dtype"] = str(model.dtype).removeprefix("torch.")
    return {"config": config, "provenance": provenance}


def _check_settings(n: int, batch_size: int, temperature: float, backend: str) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n > 1 and temperature <= 0:
        raise ValueError(f"sampling n={n} answers needs temperature > 0, got {temperature} (n=1 decodes greedily)")
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(_BACKENDS)}")


def _open_results(results_path: str | Path, header: dict[str, Any]) -> tuple[dict[str, dict], RowWriter]:
    """The rows already in ``results_path`` (written under the same ``header``; a half-written last
    line is dropped) and the writer that appends the next ones."""
    results_path = Path(results_path)
    drop_partial_last_line(results_path)
    return read_rows(results_path, header), RowWriter(results_path, header)


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
    provenance: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``records`` with avg@``n`` and majority vote (``docs/method.md``, Data and evaluation).

    Args:
        model: a Hugging Face VLM (``backend="transformers"``) or a ``vllm.LLM`` (``"vllm"``).
        processor: the model's processor (its chat template renders the prompts).
        records: from :func:`pepo.data.load_benchmark` (or built in memory).
        n: samples per question; ``n=1`` decodes greedily.
        temperature, top_p, max_new_tokens: sampling settings (paper: 1.0, 1.0, 1024).
        batch_size: questions per ``generate`` call (each expanded to ``n`` sequences).
        results_path: JSONL file each finished question is appended to; questions already in it
            are skipped (resume) if it was written with the same settings and provenance, else
            :class:`pepo.evaluation.resume.ResumeMismatch` is raised.
        blank_images: replace every image by a blank one (does the task need the image?).
        seed: sampling seed (per batch of questions).
        progress: show a progress bar (questions/s).
        on_question: called with each finished row, after it is written.
        provenance: what produced the rows, recorded in the results file's header and compared on
            resume: ``pepo eval`` passes the model and data paths with their fingerprints, benchmark,
            image root and dtype (:func:`results_header`). Without a ``"model"`` entry the loaded
            model's parameters are fingerprinted (transformers backend).

    Returns:
        :class:`EvalResult`, rows in the order of ``records``.
    """
    _check_settings(n, batch_size, temperature, backend)
    records = list(records)
    config = eval_config(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         blank_images=blank_images, backend=backend, seed=seed)
    hashes = {record.id: question_sha256(record) for record in records}
    keys = {question_id: row_key(question_id, sha256) for question_id, sha256 in hashes.items()}
    done, sink = {}, None
    if results_path is not None:
        done, sink = _open_results(results_path, results_header(config, provenance, model, backend))
    todo = [record for record in records if keys[record.id] not in done]
    if done:
        logger.info("resuming: %d of %d questions already in %s", len(records) - len(todo), len(records), results_path)
    sampling = dict(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    blank_images=blank_images, seed=seed)
    bar = tqdm(total=len(records), initial=len(records) - len(todo), unit="question", desc="eval", disable=not progress)
    try:
        for record, (outputs, lengths) in _sample(_BACKENDS[backend], model, processor, todo, batch_size, sampling):
            row = _score_question(record, outputs, lengths) | {"sha256": hashes[record.id]}
            if sink is not None:
                sink.write(row)
            done[keys[record.id]] = row
            bar.update(1)
            if on_question is not None:
                on_question(row)
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    rows = [done[keys[record.id]] for record in records]
    return EvalResult(questions=rows, totals=summarize(rows), config=config)


def question_batches(records: list[Record], batch_size: int):
    """The questions in their order, at most ``batch_size`` a batch, a batch never mixing questions
    with and without images (a processor call takes images for all of its prompts or none): a file
    that mixes them is batched at each change, the rest as before."""
    batch: list[Record] = []
    for record in records:
        if batch and (len(batch) == batch_size or bool(batch[0].images) != bool(record.images)):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def _sample(generate, model, processor, records: list[Record], batch_size: int, sampling: dict[str, Any]):
    """``(record, (outputs, completion token counts))`` per question, one call of the backend's
    ``generate`` per :func:`question_batches` batch."""
    for batch in question_batches(records, batch_size):
        yield from zip(batch, generate(model, processor, batch, **sampling))


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
