"""PEPO on TRL: :class:`PEPOConfig` (a ``GRPOConfig``) and :class:`PEPOTrainer` (a ``GRPOTrainer``).

>>> from pepo.trainer import PEPOConfig, PEPOTrainer  # doctest: +SKIP
>>> args = PEPOConfig(output_dir="out", weighting="pepo", loss_type="grpo", beta=0.001)  # doctest: +SKIP
>>> PEPOTrainer(model=model, reward_funcs=[...], args=args, train_dataset=ds, processing_class=proc).train()  # doctest: +SKIP

Recipes for PEPO_G, PEPO_D and the baselines are YAML files under ``recipes/``, run with
``pepo train --config recipes/<name>.yaml``.
"""

from pepo.trainer.config import PEPOConfig
from pepo.trainer.trainer import PEPOTrainer

__all__ = ["PEPOConfig", "PEPOTrainer"]
