"""Fixtures of the model-family tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def length_reward_registered():
    """A reward with spread on a random model (accuracy and format are 0 for every completion)."""
    from pepo.rewards import REWARD_FUNCTIONS, register_reward

    register_reward("test_length_mod_5", lambda completions, **kwargs: [float(len(str(c)) % 5) for c in completions])
    yield "test_length_mod_5"
    REWARD_FUNCTIONS.pop("test_length_mod_5")
