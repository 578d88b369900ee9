"""FSDP2 and DeepSpeed on CPU processes (gloo), so a sharded setup can be checked without a GPU.

accelerate 1.15 never shards on CPU: ``PartialState`` turns every multi-process CPU run into
``MULTI_CPU`` (plain DDP), and ``AcceleratorState`` only promotes ``MULTI_GPU``-like states to
``FSDP``, and ``DEEPSPEED`` only when ``cpu`` is false (``accelerate/state.py``). An
``accelerate launch`` with an FSDP or DeepSpeed config and ``use_cpu: true`` therefore trains with
DDP, silently. Without ``use_cpu`` on a machine with no GPU it is worse: the state has one process
while DeepSpeed sees two, and its batch-size check fails.

:func:`allow_sharding_on_cpu` makes the promotion accelerate skips: after ``AcceleratorState`` is
built for a CPU multi-process run whose launcher asked for FSDP (``ACCELERATE_USE_FSDP``) or
DeepSpeed (``ACCELERATE_USE_DEEPSPEED``), the state's ``distributed_type`` becomes ``FSDP`` /
``DEEPSPEED`` with the plugin it was given, exactly what the GPU path sets. From there on
everything is accelerate's own code: ``fsdp2_prepare_model`` (``fully_shard`` per decoder layer),
``deepspeed.initialize``, sharded save and load. torch's ``fully_shard`` and DeepSpeed's CPU
accelerator both run over gloo. ``pepo train`` calls it when ``use_cpu`` is set; on GPUs it does
nothing (accelerate's own promotion has already happened).
"""

from __future__ import annotations

import os

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

from pepo.versions import require_signature

_PATCHED = "_pepo_sharding_on_cpu"
#: accelerate 1.15's AcceleratorState.__init__, which the wrapper calls and then completes
STATE_INIT_PARAMETERS = ("self", "mixed_precision", "cpu", "dynamo_plugin", "deepspeed_plugin", "fsdp_plugin",
                         "torch_tp_plugin", "megatron_lm_plugin", "parallelism_config", "_from_accelerator", "**kwargs")


def _requested_engine() -> DistributedType | None:
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return DistributedType.FSDP
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return DistributedType.DEEPSPEED
    return None


def allow_sharding_on_cpu() -> None:
    """Let ``AcceleratorState`` use the FSDP / DeepSpeed plugin on a multi-process CPU run (idempotent).
    Refuses (one line) an accelerate whose ``AcceleratorState.__init__`` is not the one this was written
    for: without the promotion the run would be plain DDP without a word."""
    if getattr(AcceleratorState.__init__, _PATCHED, False) or _requested_engine() is None:
        return  # installed already, or a plain multi-process CPU run: nothing to promote
    require_signature("cpu_sharding.AcceleratorState.__init__", AcceleratorState.__init__, STATE_INIT_PARAMETERS)
    original = AcceleratorState.__init__

    def __init__(self, *args, deepspeed_plugin=None, fsdp_plugin=None, **kwargs):
        original(self, *args, deepspeed_plugin=deepspeed_plugin, fsdp_plugin=fsdp_plugin, **kwargs)
        engine = _requested_engine()
        if self.distributed_type != DistributedType.MULTI_CPU or engine is None:
            return
        if engine == DistributedType.FSDP and fsdp_plugin is not None:
            self.fsdp_plugin = fsdp_plugin
        elif engine == DistributedType.DEEPSPEED and deepspeed_plugin is not None:
            deepspeed_plugin.set_mixed_precision(self._mixed_precision)
            deepspeed_plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = deepspeed_plugin
        else:
            return
        # every later AcceleratorState() copies PartialState's fields back in: promote both
        self.distributed_type = engine
        PartialState._shared_state["distributed_type"] = engine

    setattr(__init__, _PATCHED, True)
    AcceleratorState.__init__ = __init__
