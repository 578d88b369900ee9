"""The paper's token-level analysis (its Figures 2, 3 and 6), which its release never published.

``pepo analyze`` samples responses, grades them, and records per-token visual similarity (every
measure), entropy, PEPO weight and the hidden-state shift without the image; then it writes the
figures, the numbers behind them (CSV), an HTML token view and a markdown report.

>>> from pepo.analysis import collect_responses, write_analysis  # doctest: +SKIP
>>> result, responses, _ = collect_responses(model, processor, records, n=8)  # doctest: +SKIP
>>> write_analysis("analysis/", responses, k=10, dynamics=load_runs(["runs/grpo", "runs/pepo_g"]))  # doctest: +SKIP
"""

from pepo.analysis.analyze import write_analysis
from pepo.analysis.collect import collect_responses, record_responses
from pepo.analysis.dynamics import METRIC_KEYS, load_run, load_runs
from pepo.analysis.signals import ResponseTokens, hidden_state_shift, response_signals, run_response
from pepo.analysis.stats import ks_statistic, mann_whitney_u, shift_summary
from pepo.analysis.tables import figure2_per_question, figure2_shift, figure3_shift, word_counts

__all__ = [
    "METRIC_KEYS",
    "ResponseTokens",
    "collect_responses",
    "figure2_per_question",
    "figure2_shift",
    "figure3_shift",
    "hidden_state_shift",
    "ks_statistic",
    "load_run",
    "load_runs",
    "mann_whitney_u",
    "record_responses",
    "response_signals",
    "run_response",
    "shift_summary",
    "word_counts",
    "write_analysis",
]
