"""pepo: Perception-Exploration Policy Optimization for vision-language models.

The method's math is in :mod:`pepo.core` (torch only) and re-exported here:

>>> import pepo
>>> pepo.perception_scores, pepo.token_entropy, pepo.token_weights  # doctest: +ELLIPSIS
(<function perception_scores at ...>, <function token_entropy at ...>, <function token_weights at ...>)

Reference: Li, Kuang et al., "Perception-Exploration Policy Optimization", arXiv 2603.22847 (2026).
"""

from pepo.core import (
    WEIGHTING_MODES,
    loss_multiplier,
    perception_scores,
    progressive_lambda,
    register_weighting_mode,
    token_entropy,
    token_weights,
)

__version__ = "0.1.0"

__all__ = [
    "WEIGHTING_MODES",
    "__version__",
    "loss_multiplier",
    "perception_scores",
    "progressive_lambda",
    "register_weighting_mode",
    "token_entropy",
    "token_weights",
]
