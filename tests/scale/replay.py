"""Fixed rollouts for the scale tests: PEPO training whose completions do not come from sampling.

Two things need completions that do not depend on who generated them or where:

* the multi-process test compares 2 processes against 1 with the same global batch, which only
  means something if every completion is the same in both runs (sampling on two processes draws
  from two RNG streams);
* the vLLM test checks that the PEPO path depends only on the completion ids, not on the engine
  that produced them.

Both replace ``GRPOTrainer._generate_single_turn`` (TRL 1.16), the one method where TRL's
back-ends differ (vLLM colocate / server, transformers ``generate``, continuous batching): it takes
the tokenized prompts and images and returns ``(completion_ids, logprobs)``, token-id lists per row.
Everything after it (rewards, advantages, the PEPO forward, the loss) is the trainer's own code.

This file is also the script the multi-process test launches:

    accelerate launch --config_file recipes/accelerate/cpu_2proc_gloo.yaml tests/scale/replay.py \
        --model DIR --out DIR --per_device_train_batch_size 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch
from datasets import Dataset
from PIL import Image

NUM_GENERATIONS = 4
MAX_COMPLETION_LENGTH = 8
COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]
# Timing metrics differ between runs by nature; everything else logged must match.
TIMING_KEYS = ("step_time", "pepo/time_s", "pepo/time_share", "epoch", "total_flos", "train_runtime",
               "train_samples_per_second", "train_steps_per_second")


def image_dataset(n: int = len(COLOURS)) -> Dataset:
    """``n`` prompts with the same text (so every prompt has the same length: no padding
    differences between batch splits) and images of different colours."""
    rows = [
        {
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle ?"}]}],
            "image": Image.new("RGB", (56, 56), COLOURS[i % len(COLOURS)]),
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows)


def length_reward(completions, **kwargs) -> list[float]:
    """Completion length in characters mod 5: varies within a group, needs no meaning."""
    return [float(len(str(c)) % 5) for c in completions]


def constant_for_red_and_green(completions, image=None, **kwargs) -> list[float]:
    """A constant reward for the red and the green prompt (zero-variance groups, which dynamic sampling
    drops), :func:`length_reward` for the others."""
    varied = length_reward(completions)
    return [0.5 if tuple(im.getpixel((0, 0))) in COLOURS[:2] else r for im, r in zip(image, varied)]


def fixed_completion(key: str, index_in_group: int, vocab_size: int, eos_id: int, special_ids: set[int]) -> list[int]:
    """Token ids that depend only on ``key`` (the prompt) and the index within its group: lengths
    3..6, odd indices stopped by EOS, even ones truncated at the length limit."""
    seed = int(hashlib.sha256(f"{key}/{index_in_group}".encode()).hexdigest()[:8], 16)
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
    length = 3 + index_in_group % 4
    ids = allowed[torch.randint(len(allowed), (length,), generator=gen)].tolist()
    return ids + [eos_id] if index_in_group % 2 else ids + allowed[:MAX_COMPLETION_LENGTH - length].tolist()


def image_key(images) -> str:
    image = images[0] if isinstance(images, list) else images
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def install_replay(trainer, completions_by_row=None) -> list:
    """Make ``trainer`` use fixed completions; returns the list every call's ids are appended to.

    ``completions_by_row``: a list of per-call ``completion_ids`` to return in order (a replay of a
    recorded run); ``None`` makes them with :func:`fixed_completion` from the prompt's image and the
    row's index within its group (rows of a group are consecutive, TRL's ``RepeatSampler``).
    """
    tokenizer = trainer.processing_class.tokenizer
    # added tokens: the specials and, above all, the image placeholder (a stray one in a completion
    # would break the model's image-feature scatter)
    special = set(tokenizer.added_tokens_decoder)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    served = []

    def generate(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if completions_by_row is not None:
            ids = completions_by_row[len(served)]
        else:
            ids = [fixed_completion(image_key(images[i]), i % num_generations, len(tokenizer), eos, special)
                   for i in range(len(prompt_ids))]
        served.append(ids)
        return ids, None

    trainer._generate_single_turn = generate
    return served


def config(output_dir, per_device_train_batch_size: int, **overrides):
    from pepo.trainer import PEPOConfig

    fields = dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, activation_checkpointing=False, report_to=[],
        per_device_train_batch_size=per_device_train_batch_size, num_generations=NUM_GENERATIONS,
        max_completion_length=MAX_COMPLETION_LENGTH, max_steps=2, logging_steps=1, save_strategy="no", seed=0,
        disable_tqdm=True, loss_type="grpo", beta=0.02, weighting="pepo", schedule="constant",
        gate_alpha=0.05, gate_temperature=1.8,
        # SGD: the update is lr * gradient, so parameter differences measure gradient differences.
        # (Adam's first step is ~lr * sign(g): float noise on a near-zero gradient flips it.)
        optim="sgd", learning_rate=0.5,
    )
    fields.update(overrides)
    return PEPOConfig(**fields)


def record_pepo_signals(trainer) -> list:
    """Record, per loss forward, each row's perception prior and token weights on its valid
    completion tokens, keyed by ``(optimiser step, completion ids)`` (TRL shuffles rows, and the
    two runs split them differently); returns the list of ``(key, prior, weights)`` it fills."""
    from pepo.trainer import trainer as trainer_module

    records, last_weights = [], []
    token_weights = trainer_module.token_weights

    def recording_token_weights(*args, **kwargs):
        weights = token_weights(*args, **kwargs)
        last_weights.append(weights)
        return weights

    apply = trainer._apply_token_weights

    def recording_apply(inputs, perception, entropies, has_image):
        last_weights.clear()
        apply(inputs, perception, entropies, has_image)
        mask = inputs["completion_mask"].bool()
        for row in range(mask.size(0)):
            ids = inputs["completion_ids"][row][mask[row]].tolist()
            key = f"{trainer.state.global_step + 1}/{' '.join(map(str, ids))}"
            records.append((key, perception[row][mask[row]].tolist(), last_weights[0][row][mask[row]].tolist()))

    trainer_module.token_weights = recording_token_weights
    trainer._apply_token_weights = recording_apply
    return records


def count_hidden_states(trainer) -> list:
    """Number of hidden states the capture hooks hand over in each policy forward of the loss."""
    from pepo.trainer import trainer as trainer_module

    counts = []
    accumulator = trainer_module.PerceptionAccumulator

    class Counting(accumulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            counts.append(0)

        def add(self, hidden):
            counts[-1] += 1
            return super().add(hidden)

    trainer_module.PerceptionAccumulator = Counting
    return counts


def record_dynamic_batches(trainer) -> list:
    """With dynamic sampling: per training batch, the image key of each row and its advantage."""
    from pepo.trainer.dynamic_sampling import unbatch

    batches = []
    sampler = trainer._dynamic_sampler
    if sampler is None:
        return batches
    generate = sampler.generate

    def recording_generate(inputs, rollout):
        out = generate(inputs, rollout)
        rows = unbatch({k: v for k, v in out.items() if k != "num_items_in_batch"})
        batches.append([(hashlib.sha256(row["pixel_values"].numpy().tobytes()).hexdigest()[:16],
                         float(row["advantages"])) for row in rows])
        return out

    sampler.generate = recording_generate
    return batches


def full_parameters(model) -> dict[str, torch.Tensor]:
    """Every parameter, whole (FSDP2 shards are DTensors: ``full_tensor`` all-gathers them, so
    every process must call this at the same point)."""
    from torch.distributed.tensor import DTensor

    return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu().clone()
            for n, p in model.named_parameters()}


class StopAfterCheckpoint:
    """Trainer callback: after the checkpoint of step ``step`` is written, record the parameters
    and this process's summary, wait for every process, then SIGKILL this process (no clean
    shutdown: what a pre-empted node does)."""

    def __new__(cls, step: int, on_stop):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if state.global_step == step:
                    on_stop()
                    if torch.distributed.is_initialized():
                        torch.distributed.barrier()
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Stop()


def run(model_path, output_dir, per_device_train_batch_size: int, kill_after_step: int | None = None,
        resume_from_checkpoint: str | None = None, on_stop=None, snapshot_steps=(), reward=length_reward,
        save_final: str | None = None, **overrides) -> dict:
    """Train the tiny model for ``max_steps`` on fixed completions; returns what the tests compare.

    ``snapshot_steps``: optimiser steps after which the whole parameters are recorded (``"snapshots"``).
    ``save_final``: ``trainer.save_model`` into that folder after training (what ``pepo train`` does).

    ``kill_after_step``: SIGKILL every process once that step's checkpoint is written, after
    calling ``on_stop(result)`` with what this function would have returned at that point.
    """
    from pepo.modeling import load_model_and_processor
    from pepo.trainer import PEPOTrainer

    model, processor = load_model_and_processor(model_path)
    trainer = PEPOTrainer(
        model=model, reward_funcs=[reward], processing_class=processor, train_dataset=image_dataset(),
        args=config(output_dir, per_device_train_batch_size, **overrides),
    )
    served = install_replay(trainer)
    batches = record_dynamic_batches(trainer)
    counts = []  # (valid entries on this process, entries after gathering) per flush of the recorded metrics
    metrics = trainer._device_metrics
    flush = metrics.flush

    def counting_flush(mode, logged, accelerator):
        local = sum(int(valid.sum()) for *_, valid in metrics._entries[mode])
        gathered = flush(mode, logged, accelerator)
        if local or gathered:
            counts.append((local, gathered))
        return gathered

    metrics.flush = counting_flush
    from pepo.trainer import trainer as trainer_module

    saved = trainer_module.token_weights, trainer_module.PerceptionAccumulator

    def restore_module():
        trainer_module.token_weights, trainer_module.PerceptionAccumulator = saved

    signals = record_pepo_signals(trainer)
    hidden_counts = count_hidden_states(trainer)

    def result() -> dict:
        from pepo.trainer.capture import language_model_of
        from torch.distributed.tensor import DTensor

        language_model = language_model_of(trainer.model_wrapped)
        return {
            "rank": trainer.accelerator.process_index,
            "world_size": trainer.accelerator.num_processes,
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "device": str(trainer.accelerator.device),
            "distributed_type": str(trainer.accelerator.distributed_type),
            "wrapper": type(trainer.model_wrapped).__name__,
            "language_model": type(language_model).__name__,
            "language_model_sharded": any(isinstance(p, DTensor) for p in language_model.parameters()),
            "params": full_parameters(trainer.accelerator.unwrap_model(trainer.model)),
            "logs": [{k: v for k, v in entry.items() if k not in TIMING_KEYS} for entry in trainer.state.log_history],
            "completion_ids": served,
            "gather_counts": counts,
            "signals": signals,
            "hidden_states_per_forward": hidden_counts,
            "snapshots": snapshots,
            "dynamic_batches": batches,
        }

    snapshots = {}
    if snapshot_steps:
        from transformers import TrainerCallback

        class Snapshot(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step in snapshot_steps:
                    snapshots[state.global_step] = full_parameters(trainer.accelerator.unwrap_model(trainer.model))

        trainer.add_callback(Snapshot())
    if kill_after_step is not None:
        trainer.add_callback(StopAfterCheckpoint(kill_after_step, lambda: on_stop(result())))
    try:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        if save_final is not None:
            trainer.save_model(save_final)
        return result()
    finally:
        restore_module()


def write_result(result: dict, out: Path) -> None:
    """Rank 0 writes the parameters, every rank its summary ``rank{r}.json``."""
    rank = result["rank"]
    if rank == 0:
        from safetensors.torch import save_file

        save_file({n: p.contiguous() for n, p in result["params"].items()}, str(out / "params.safetensors"))
    summary = {k: v for k, v in result.items() if k not in ("params", "snapshots")}
    (out / f"rank{rank}.json").write_text(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--per_device_train_batch_size", type=int, required=True)
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--constant_lr", action="store_true", help="lr_scheduler_type=constant")
    parser.add_argument("--save_steps", type=int, default=0, help="save a checkpoint every N steps (0: never)")
    parser.add_argument("--kill_after_step", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--save_final", action="store_true", help="trainer.save_model(OUT/final) at the end")
    parser.add_argument("--dynamic_sampling", nargs="*", choices=["pepo", "none"], default=None,
                        help="DAPO dynamic sampling, loss dapo, red/green prompts uninformative; one run per "
                        "weighting given (pepo: PEPO_D, none: DAPO), results under OUT/<weighting>/")
    args = parser.parse_args(argv)
    from pepo.trainer.cpu_sharding import allow_sharding_on_cpu

    allow_sharding_on_cpu()  # what `pepo train` does: FSDP / DeepSpeed configs shard on CPU too
    out = Path(args.out)
    overrides = {"max_steps": args.max_steps}
    if args.constant_lr:
        overrides["lr_scheduler_type"] = "constant"
    if args.save_steps:
        overrides.update(save_strategy="steps", save_steps=args.save_steps)
    if args.dynamic_sampling:
        for weighting in args.dynamic_sampling:
            (out / weighting).mkdir(parents=True, exist_ok=True)
            result = run(args.model, out / weighting / "trainer", args.per_device_train_batch_size,
                         **overrides, **dynamic_sampling_overrides(weighting))
            write_result(result, out / weighting)
        return 0
    result = run(args.model, out / "trainer", args.per_device_train_batch_size, kill_after_step=args.kill_after_step,
                 resume_from_checkpoint=args.resume_from_checkpoint, on_stop=lambda r: write_result(r, out),
                 save_final=str(out / "final") if args.save_final else None, **overrides)
    write_result(result, out)
    return 0


def dynamic_sampling_overrides(weighting: str) -> dict:
    """PEPO_D (``weighting="pepo"``) or DAPO (``"none"``) as the tests run them: ``loss_type="dapo"``
    (normalised by the global token count, so 2 processes = 1 exactly; the paper's ``bnpo`` normalises
    per process), clip-higher, the red and green prompts uninformative."""
    return dict(weighting=weighting, dynamic_sampling=True, dynamic_sampling_max_rounds=4, loss_type="dapo",
                epsilon_high=0.28, reward=constant_for_red_and_green)


if __name__ == "__main__":
    sys.exit(main())
