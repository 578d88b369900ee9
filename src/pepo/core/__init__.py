"""PEPO's math as pure functions on tensors (torch only; no TRL, no config objects).

Shape legend used in every docstring of this package:

* ``B``: completions in the micro-batch (rows)
* ``S``: full sequence length, prompt + completion
* ``T``: completion length (``logits_to_keep``); completion position ``t`` is sequence position
  ``S - T + t``
* ``V``: vocabulary size
* ``D``: hidden size
* ``L + 1``: number of hidden-state tensors (embedding output plus every decoder layer)

PAPO (arXiv 2507.06448) and VPPO (arXiv 2510.09285), compared beside PEPO, are in
:mod:`pepo.core.perception_aware`.

Reference: Li, Kuang et al., "Perception-Exploration Policy Optimization", arXiv 2603.22847 (2026),
and ``docs/method.md`` (Perception prior to Schedule and token-level advantage).
"""

from pepo.core.chunking import default_chunk_bytes
from pepo.core.entropy import token_entropy
from pepo.core.perception import PERCEPTION_MEASURES, PerceptionAccumulator, perception_scores
from pepo.core.perception_aware import (
    entropy_penalty,
    k3_estimate,
    masked_token_mean,
    papo_regulariser,
    top_dependency_mask,
    trajectory_scale,
    visual_dependency,
    vppo_advantages,
)
from pepo.core.schedule import loss_multiplier, progressive_lambda
from pepo.core.weights import WEIGHTING_MODES, WeightingMode, register_weighting_mode, token_weights

__all__ = [
    "PERCEPTION_MEASURES",
    "WEIGHTING_MODES",
    "PerceptionAccumulator",
    "WeightingMode",
    "default_chunk_bytes",
    "entropy_penalty",
    "k3_estimate",
    "loss_multiplier",
    "masked_token_mean",
    "papo_regulariser",
    "perception_scores",
    "progressive_lambda",
    "register_weighting_mode",
    "token_entropy",
    "token_weights",
    "top_dependency_mask",
    "trajectory_scale",
    "visual_dependency",
    "vppo_advantages",
]
