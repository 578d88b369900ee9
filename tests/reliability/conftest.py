"""The trainer tests' fixtures (tiny Qwen2.5-VL, 4-prompt image dataset, trainer builder), reused."""

from tests.trainer.conftest import fresh_model, make_trainer, tiny_model_and_processor  # noqa: F401
