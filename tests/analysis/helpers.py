"""Constructed responses for the analysis tests."""

import numpy as np

from pepo.analysis.signals import ResponseTokens


def response(question, sample, correct, similarity, *, tokens=None, entropy=None, shift=None, weight=None):
    """A ResponseTokens with the given cosine similarity (the other measures get a copy)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    n = len(similarity)
    tokens = tokens or [f"w{i}" for i in range(n)]
    shift = None if shift is None else np.asarray(shift, dtype=np.float64)
    return ResponseTokens(
        question_id=question, sample=sample, correct=correct, answer="x", token_ids=list(range(n)), tokens=tokens,
        similarity={"cosine": similarity, "l2": similarity - 10.0},
        entropy=np.asarray(entropy if entropy is not None else np.zeros(n), dtype=np.float64),
        weight=np.asarray(weight if weight is not None else np.ones(n), dtype=np.float64),
        shift_l2=shift, shift_cos=None if shift is None else shift / 10.0,
    )
