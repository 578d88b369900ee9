"""Evaluation with the paper's conventions: avg@N, majority vote, per-category breakdown.

:func:`evaluate_model` is the one evaluation code path (``pepo eval`` and the demo use it).
"""

from pepo.evaluation.evaluator import EvalResult, eval_config, evaluate_model, results_header
from pepo.evaluation.scoring import majority_vote, paired_standard_error, score_answer, summarize

__all__ = ["EvalResult", "eval_config", "evaluate_model", "results_header", "majority_vote", "paired_standard_error", "score_answer", "summarize"]
