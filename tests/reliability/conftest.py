"""The trainer tests' fixtures (tiny Qwen2.5-VL, 4-prompt image dataset, trainer builder), reused; `pepo train`
stopped where it would build the trainer."""

import pytest

from tests.trainer.conftest import fresh_model, make_trainer, tiny_model_and_processor  # noqa: F401


class Built(Exception):
    """Raised by `pepo train` in place of building the trainer: every check passed. ``args`` holds
    ``(script_args, training_args, model_args)``."""


@pytest.fixture
def train_stops_before_the_model(monkeypatch):
    """`pepo train` raises :class:`Built` where it would build the trainer; building or loading a model
    before that fails the test."""
    import pepo.modeling
    import pepo.train
    import pepo.trainer.cli as train_cli

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built or loaded before the arguments were checked")

    for name in ("_embedded_model", "embedded_warm_start"):
        monkeypatch.setattr(pepo.train, name, refuse)
    monkeypatch.setattr(pepo.modeling, "load_model_and_processor", refuse)
    monkeypatch.setattr(pepo.modeling, "load_processor", refuse)

    def built(script_args, training_args, model_args):
        raise Built(script_args, training_args, model_args)

    monkeypatch.setattr(train_cli, "build_trainer", built)
