"""The paired standard error the demo, `pepo train`'s held-out check and the tiny-recipe search quote."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pepo.evaluation import paired_standard_error


def test_example():
    # differences 1, 0, 0, 0: mean 0.25, sample standard deviation 0.5, over sqrt(4)
    assert paired_standard_error([0, 0, 1, 1], [1, 0, 1, 1]) == pytest.approx(0.25)
    assert paired_standard_error([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert math.isnan(paired_standard_error([1.0], [0.0]))


def test_different_questions_are_refused():
    with pytest.raises(ValueError, match="same questions"):
        paired_standard_error([0.0, 1.0], [1.0])


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=50))
def test_is_the_standard_error_of_the_mean_difference(pairs):
    before, after = [a for a, _ in pairs], [b for _, b in pairs]
    expected = statistics.stdev([b - a for a, b in pairs]) / math.sqrt(len(pairs))
    assert paired_standard_error(before, after) == pytest.approx(expected, abs=1e-12)
