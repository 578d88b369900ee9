"""Argument checks of :mod:`pepo.core`'s public functions: one ``ValueError`` naming the function,
the argument and its value. NaN fails every ``<``/``>`` comparison, so a range check alone lets it
through (``nan < 0`` is False): every number is checked to be finite first."""

from __future__ import annotations

import math


def check_finite(where: str, name: str, value: float) -> None:
    """Raise ``ValueError("<where>: <name> must be a finite number, got <value>")`` for NaN, inf or a non-number."""
    try:
        finite = math.isfinite(value)
    except TypeError:
        finite = False
    if not finite:
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
