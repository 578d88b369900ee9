"""Sample, grade, then record every response's per-token signals.

Sampling and grading are :func:`pepo.evaluation.evaluate_model`, the one evaluation code path (so
``--backend vllm`` and resuming come with it). It returns the decoded text of each sample, not its
token ids, so each response is re-encoded with the model's tokenizer before the teacher-forced
forward of :func:`pepo.analysis.signals.run_response`. For the word-level tokenizer of the embedded
model that is the sampled token sequence exactly; a BPE tokenizer may segment a decoded string
differently from how it was sampled in rare cases (the canonical segmentation of the same text).
The end-of-sequence token is not part of the analysed response (it carries no word).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pepo.analysis.signals import ResponseTokens, run_response
from pepo.data.prompts import render_prompt
from pepo.data.records import Record, open_image
from pepo.evaluation import EvalResult, evaluate_model

__all__ = ["collect_responses", "record_responses"]

logger = logging.getLogger(__name__)


def _image_token_id(model, processor) -> int:
    """The model's image token id; ``ValueError`` without one (every perception signal would be 0)."""
    from pepo.image_tokens import resolve_image_token_id

    image_token_id = resolve_image_token_id(model.config, processor)
    if image_token_id is None:
        raise ValueError(
            f"no image token id for {type(model).__name__} (config image_token_id / image_token_index, processor "
            "image_token_id / image_token): the perception signals are read at the image tokens and would all be 0"
        )
    return image_token_id


def record_responses(
    model,
    processor,
    records: Sequence[Record],
    rows: Sequence[dict[str, Any]],
    *,
    temperature: float = 1.0,
    measure: str = "cosine",
    gate_alpha: float = 0.05,
    gate_temperature: float = 1.0,
    weighting: str = "pepo",
    with_shift: bool = True,
    progress: bool = True,
) -> tuple[list[ResponseTokens], int]:
    """Per-token signals of every sampled response in ``rows`` (``evaluate_model``'s per-question
    rows, in the order of ``records``). Returns the responses and the number of empty responses
    skipped (nothing to analyse in them)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    image_token_id = _image_token_id(model, processor)
    by_id = {record.id: record for record in records}
    total = sum(len(row["outputs"]) for row in rows)
    responses: list[ResponseTokens] = []
    empty = 0
    with tqdm(total=total, unit="response", desc="analyze", disable=not progress) as bar:
        for row in rows:
            record = by_id[row["id"]]
            images = [open_image(source) for source in record.images]
            for sample, (text, answer, score) in enumerate(zip(row["outputs"], row["answers"], row["scores"])):
                bar.update(1)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if not ids:
                    empty += 1
                    continue
                signals = run_response(
                    model, processor, record.prompt, images, ids, image_token_id, render=render_prompt,
                    with_shift=with_shift, temperature=temperature, measure=measure, gate_alpha=gate_alpha,
                    gate_temperature=gate_temperature, weighting=weighting,
                )
                responses.append(ResponseTokens(
                    question_id=record.id, sample=sample, correct=score >= 0.5, answer=answer, token_ids=list(ids),
                    tokens=[tokenizer.decode([i]) for i in ids],
                    similarity={k.split("/", 1)[1]: v for k, v in signals.items() if k.startswith("similarity/")},
                    entropy=signals["entropy"], weight=signals["weight"],
                    shift_l2=signals.get("shift_l2"), shift_cos=signals.get("shift_cos"),
                ))
    if empty:
        logger.info("%d empty responses skipped", empty)
    return responses, empty


def collect_responses(
    model,
    processor,
    records: Sequence[Record],
    *,
    n: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 1024,
    batch_size: int = 8,
    seed: int = 0,
    samples_path: str | Path | None = None,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    **signal_settings,
) -> tuple[EvalResult, list[ResponseTokens], int]:
    """Sample ``n`` responses per question with :func:`pepo.evaluation.evaluate_model` (resumable
    through ``samples_path``, whose rows are reused only for the same model, data and settings:
    ``provenance`` as in :func:`~pepo.evaluation.evaluate_model`), grade them, and record each one's
    per-token signals (:func:`record_responses`; ``signal_settings`` go there)."""
    _image_token_id(model, processor)  # before sampling: refused without one
    result = evaluate_model(
        model, processor, records, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        batch_size=batch_size, seed=seed, results_path=samples_path, progress=progress, provenance=provenance,
    )
    responses, empty = record_responses(
        model, processor, records, result.questions, temperature=temperature, progress=progress, **signal_settings
    )
    return result, responses, empty
