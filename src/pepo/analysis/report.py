"""What ``pepo analyze`` writes: CSV tables, the HTML token view and the markdown report."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pepo.analysis.signals import ResponseTokens
from pepo.data.records import Record, open_image

__all__ = ["fmt", "markdown_table", "response_rows", "token_rows", "weight_colour", "write_csv", "write_html"]


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Rows of dicts as CSV (floats as ``repr``, so the numbers round-trip exactly)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(float(v)) if isinstance(v, (float, np.floating)) else v for k, v in row.items()})
    return path


def token_rows(responses: Sequence[ResponseTokens]) -> list[dict[str, Any]]:
    """One row per response token: ids, text and every signal."""
    rows = []
    for r in responses:
        for t in range(len(r)):
            row = {"question_id": r.question_id, "sample": r.sample, "correct": int(r.correct), "position": t,
                   "token_id": r.token_ids[t], "token": r.tokens[t]}
            row |= {f"similarity_{m}": float(v[t]) for m, v in r.similarity.items()}
            row |= {"entropy": float(r.entropy[t]), "weight": float(r.weight[t])}
            if r.shift_l2 is not None:
                row |= {"shift_l2": float(r.shift_l2[t]), "shift_cos": float(r.shift_cos[t])}
            rows.append(row)
    return rows


def response_rows(responses: Sequence[ResponseTokens], measure: str, k: int) -> list[dict[str, Any]]:
    """One row per response: correctness, length and its Figure 2 view means."""
    from pepo.analysis.tables import view_means

    rows = []
    for r in responses:
        means = view_means(r.similarity[measure], k)
        rows.append({
            "question_id": r.question_id, "sample": r.sample, "correct": int(r.correct), "answer": r.answer,
            "tokens": len(r), **{f"similarity_{v}": m for v, m in means.items()},
            "entropy_mean": float(np.mean(r.entropy)),
            "shift_l2_mean": float(np.mean(r.shift_l2)) if r.shift_l2 is not None else math.nan,
        })
    return rows


def weight_colour(weight: float, full: float = 2.0) -> str:
    """Background colour of a token: red above weight 1, blue below, white at 1; opacity
    ``min(|log w| / log full, 1)`` (so ``w = full`` and ``w = 1 / full`` are full colour)."""
    if not math.isfinite(weight) or weight <= 0:
        return "rgba(120,120,120,0.35)"
    strength = min(abs(math.log(weight)) / math.log(full), 1.0)
    rgb = "220,50,47" if weight > 1 else "38,139,210"
    return f"rgba({rgb},{strength:.3f})"


def _image_data_uri(source, largest_side: int = 512) -> str:
    """An image as a ``data:image/png;base64`` URI (at most ``largest_side`` pixels a side), so the page
    stands alone: nothing it shows is read from a path that may move."""
    image = open_image(source)
    image.thumbnail((largest_side, largest_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _question_text(record: Record) -> str:
    """The text parts of a record's prompt, as the model was given them (images are shown apart)."""
    return "\n".join(part["text"] for turn in record.prompt for part in turn.get("content", [])
                     if isinstance(part, dict) and part.get("type") == "text")


def _question_html(question_id: str, record: Record | None) -> str:
    """A question's heading: its text, images (embedded) and gold answer, when the record is known."""
    heading = f"<h2>question {html.escape(str(question_id))}</h2>"
    if record is None:
        return heading
    images = "".join(f"<img class='image' alt='image {i + 1} of question {html.escape(str(question_id), quote=True)}' "
                     f"src='{_image_data_uri(source)}'>" for i, source in enumerate(record.images))
    return (f"{heading}<div class='question'>{images}<p class='text'>{html.escape(_question_text(record))}</p>"
            f"<p>gold answer: <code class='gold'>{html.escape(str(record.solution))}</code></p></div>")


def _response_html(r: ResponseTokens, measure: str, full: float) -> str:
    verdict = "correct" if r.correct else "incorrect"
    parts = [f"<div class='resp'><b>sample {r.sample}</b>: answer <code>{html.escape(str(r.answer))}</code>, "
             f"<span class='{verdict}'>{verdict}</span><br>"]
    for t in range(len(r)):
        v, h, w = float(r.similarity[measure][t]), float(r.entropy[t]), float(r.weight[t])
        tip = html.escape(f"sim {v:.4f} | entropy {h:.3f} | weight {w:.3f}", quote=True)
        parts.append(f"<span class='tok' style='background:{weight_colour(w, full)}' title=\"{tip}\">"
                     f"{html.escape(r.tokens[t]) or '&nbsp;'}</span>")
    parts.append("</div>")
    return "\n".join(parts)


def write_html(path: Path, responses: Sequence[ResponseTokens], measure: str, title: str = "pepo analyze",
               questions: Mapping[str, Record] | None = None) -> Path:
    """Responses grouped by question, every token coloured by its PEPO weight (full colour at the
    largest ``|log w|`` shown); hover shows the signals. ``questions`` (id -> record) adds each
    question's text, images (embedded as PNG data, so the file stands alone) and gold answer.
    All text from the model or the data is HTML-escaped."""
    spread = max((abs(math.log(w)) for r in responses for w in r.weight if w > 0 and math.isfinite(w)), default=0.0)
    full = math.exp(max(spread, 1e-6))
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".tok{padding:1px 2px;margin:1px;border-radius:3px;display:inline-block;font-family:monospace}"
        ".resp{border:1px solid #ddd;padding:.6em;margin:1em 0}.image{max-width:20em;display:block}"
        ".text{white-space:pre-wrap}.correct{color:#2a7d2a}.incorrect{color:#b02a2a}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Token background: PEPO weight (red &gt; 1, blue &lt; 1, white = 1; full colour at {full:.3g} and "
        f"{1 / full:.3g}, the extremes shown). "
        f"Hover a token for its visual similarity ({html.escape(measure)}), entropy and weight.</p>",
    ]
    by_question: dict[str, list[ResponseTokens]] = {}
    for r in responses:
        by_question.setdefault(r.question_id, []).append(r)
    for question_id, group in by_question.items():
        parts.append(_question_html(question_id, (questions or {}).get(question_id)))
        parts += [_response_html(r, measure, full) for r in group]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a markdown table (``n/a`` for NaN / None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
