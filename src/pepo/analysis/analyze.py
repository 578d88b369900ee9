"""From recorded responses and run logs to the report folder of ``pepo analyze``.

:func:`write_analysis` computes the tables of :mod:`pepo.analysis.tables` and
:mod:`pepo.analysis.dynamics`, writes each as CSV, draws the PNGs, the HTML token view, and the
markdown report that links them and quotes the key numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pepo.analysis import plots
from pepo.analysis.dynamics import METRIC_KEYS
from pepo.analysis.report import markdown_table, response_rows, token_rows, write_csv, write_html
from pepo.analysis.signals import ResponseTokens
from pepo.analysis.tables import figure2_per_question, figure2_shift, figure3_shift, word_counts
from pepo.data.records import Record

__all__ = ["pick_html_responses", "write_analysis"]

FIG2_COLUMNS = ["measure", "view", "questions_correct", "questions_incorrect", "mean_correct", "mean_incorrect",
                "mean_diff", "u", "auc", "z", "p_value", "ks_d", "paired_questions", "paired_mean_diff",
                "paired_share_correct_higher"]
FIG3_COLUMNS = ["metric", "measure", "tokens_high", "tokens_rest", "mean_high", "mean_rest", "mean_diff", "u", "auc",
                "z", "p_value", "ks_d", "spearman_similarity_shift"]


def pick_html_responses(responses: Sequence[ResponseTokens], count: int) -> list[ResponseTokens]:
    """Up to ``count`` responses for the HTML view: first one correct and one incorrect response
    of each question that has both (in question order), then the rest in order."""
    by_question: dict[str, list[ResponseTokens]] = {}
    for r in responses:
        by_question.setdefault(r.question_id, []).append(r)
    chosen: list[ResponseTokens] = []
    for group in by_question.values():
        correct = [r for r in group if r.correct]
        incorrect = [r for r in group if not r.correct]
        if correct and incorrect:
            chosen += [correct[0], incorrect[0]]
    chosen += [r for r in responses if all(r is not c for c in chosen)]
    return chosen[:count]


def _settings_lines(settings: dict[str, Any]) -> list[str]:
    return [f"- {key}: `{value}`" for key, value in settings.items()]


def _figure2_section(out: Path, responses, measures, measure, k) -> list[str]:
    per_question = figure2_per_question(responses, measures, k)
    shift = figure2_shift(per_question)
    write_csv(out / "fig2_per_question.csv", per_question, ["question_id", "measure", "view", "group", "value", "n_responses"])
    write_csv(out / "fig2_shift.csv", shift, FIG2_COLUMNS)
    plots.plot_similarity(per_question, shift, measure, k, out / "fig2_similarity.png")
    n_correct = sum(r.correct for r in responses)
    lines = [
        "## Figure 2: visual similarity of correct vs incorrect responses", "",
        f"Per response: mean {measure} similarity over (a) all tokens, (b) its top-{k}, (c) its bottom-{k} tokens; "
        "per question: the mean over its correct (resp. incorrect) responses. `mean_diff` = correct - incorrect; "
        "`auc` = Mann-Whitney U / (n_correct n_incorrect) (0.5: no shift), `p_value` its two-sided normal "
        "approximation, `ks_d` the Kolmogorov-Smirnov statistic; `paired_*` over questions with both.", "",
        "![Figure 2](fig2_similarity.png)", "",
        markdown_table([r for r in shift if r["measure"] == measure], FIG2_COLUMNS[1:]), "",
    ]
    if n_correct == 0 or n_correct == len(responses):
        lines += [f"**No shift can be measured**: {n_correct} of {len(responses)} responses are correct; Figure 2 needs "
                  "both correct and incorrect responses.", ""]
    lines += ["Every measure: [fig2_shift.csv](fig2_shift.csv); per question: [fig2_per_question.csv](fig2_per_question.csv); "
              "per response: [responses.csv](responses.csv); per token: [tokens.csv](tokens.csv).", ""]
    return lines


def _figure3_section(out: Path, responses, measure, k, top_words) -> list[str]:
    lines = ["## Figure 3: hidden-state shift without the image, and the words", ""]
    shift = figure3_shift(responses, measure, k)
    if shift:
        write_csv(out / "fig3_shift.csv", shift, FIG3_COLUMNS)
        plots.plot_hidden_shift(responses, measure, k, out / "fig3_hidden_shift.png")
        lines += [
            "Each response re-run with the image removed from the prompt; per token, the mean over decoder layers of "
            f"the L2 (`shift_l2`) and cosine (`shift_cos`) distance of its hidden states. High = the top-{k} tokens "
            f"of each response by {measure} similarity; rest = the others.", "",
            "![Figure 3: hidden-state shift](fig3_hidden_shift.png)", "",
            markdown_table(shift, [c for c in FIG3_COLUMNS if c != "measure"]), "",
            "Numbers: [fig3_shift.csv](fig3_shift.csv).", "",
        ]
    else:
        lines += ["Hidden-state shift not computed (`--no-shift`).", ""]
    entropy_words = word_counts(responses, "entropy", k, top_words)
    similarity_words = word_counts(responses, f"similarity/{measure}", k, top_words)
    write_csv(out / "fig3_words_entropy.csv", entropy_words, ["word", "count", "share", "lift"])
    write_csv(out / "fig3_words_similarity.csv", similarity_words, ["word", "count", "share", "lift"])
    plots.plot_words(entropy_words, similarity_words, k, out / "fig3_words.png")

    def listing(rows):
        return ", ".join(f"{r['word']} ({r['count']}, lift {r['lift']:.2f})" for r in rows[:15]) or "(none)"

    lines += [
        f"Most frequent words among each response's top-{k} tokens by entropy and by similarity "
        "(count, lift = share among selected / share among all tokens):", "",
        "![Figure 3: words](fig3_words.png)", "",
        f"- high entropy: {listing(entropy_words)}",
        f"- high similarity: {listing(similarity_words)}", "",
        "Numbers: [fig3_words_entropy.csv](fig3_words_entropy.csv), [fig3_words_similarity.csv](fig3_words_similarity.csv).", "",
    ]
    return lines


def _figure6_section(out: Path, dynamics: Sequence[dict] | None) -> list[str]:
    lines = ["## Figure 6: training dynamics", ""]
    if dynamics is None:
        return lines + ["Not produced: no `--runs` given.", ""]
    write_csv(out / "fig6_dynamics.csv", dynamics, ["run", "step", "curve", "key", "value"])
    plots.plot_dynamics(dynamics, out / "fig6_dynamics.png")
    summary = []
    for run in dict.fromkeys(r["run"] for r in dynamics):
        for curve, (key, _) in METRIC_KEYS.items():
            points = sorted((r["step"], r["value"]) for r in dynamics if r["run"] == run and r["curve"] == curve)
            summary.append({"run": run, "curve": curve, "key": key, "steps": len(points),
                            "first": points[0][1] if points else None, "last": points[-1][1] if points else None})
    return lines + [
        "![Figure 6](fig6_dynamics.png)", "",
        markdown_table(summary, ["run", "curve", "key", "steps", "first", "last"]), "",
        "A curve with 0 steps was not logged by that run (`pepo/visual_similarity` is logged only by the weightings "
        "that use perception). Numbers: [fig6_dynamics.csv](fig6_dynamics.csv).", "",
    ]


def write_analysis(
    out: str | Path,
    responses: Sequence[ResponseTokens] | None,
    *,
    measure: str = "cosine",
    k: int = 10,
    settings: dict[str, Any] | None = None,
    dynamics: Sequence[dict] | None = None,
    html_responses: int = 8,
    top_words: int = 30,
    questions: Mapping[str, Record] | None = None,
) -> Path:
    """Write the report folder; returns the path of ``report.md``.

    Args:
        out: the folder (created).
        responses: from :func:`pepo.analysis.collect_responses`; ``None`` for a dynamics-only report.
        measure: the similarity measure of the figures (the CSVs hold every measure).
        k: K of the top-K / bottom-K views and of the word lists.
        settings: listed at the top of the report.
        dynamics: rows of :func:`pepo.analysis.load_runs`, or ``None``.
        html_responses: responses shown in ``responses.html``.
        questions: question id -> record, for the question text, image and gold answer in ``responses.html``.
        top_words: words kept per word list.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# pepo analyze", "", "Token-level analysis of PEPO (Li, Kuang et al., arXiv 2603.22847, Figures 2, 3, 6).", ""]
    lines += _settings_lines(settings or {}) + [""]
    if responses:
        measures = list(responses[0].similarity)
        n_correct = sum(r.correct for r in responses)
        write_csv(out / "tokens.csv", token_rows(responses))
        write_csv(out / "responses.csv", response_rows(responses, measure, k))
        lines += [
            f"Analysed {len(responses)} responses to {len({r.question_id for r in responses})} questions, "
            f"{n_correct} correct ({100 * n_correct / len(responses):.1f} %), "
            f"{sum(len(r) for r in responses)} tokens.", "",
        ]
        lines += _figure2_section(out, responses, measures, measure, k)
        lines += _figure3_section(out, responses, measure, k, top_words)
        write_html(out / "responses.html", pick_html_responses(responses, html_responses), measure,
                   questions=questions)
    elif responses is not None:
        lines += ["No non-empty responses to analyse.", ""]
    lines += _figure6_section(out, dynamics)
    if responses:
        lines += ["## Responses", "",
                  f"[responses.html](responses.html): {min(html_responses, len(responses))} responses, each token "
                  "coloured by its PEPO weight.", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report

