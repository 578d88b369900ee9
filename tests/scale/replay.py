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
import sys
from pathlib import Path

import torch
from datasets import Dataset
from PIL import Image

NUM_GENERATIONS = 4
MAX_COMPLETION_LENGTH = 8
COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]
# Timing metrics differ between runs by nature; everything else logged must match.
TIMING_KEYS = ("step_time", "pepo/time_s", "pepo/rho", "epoch", "total_flos", "train_runtime",
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


def run(model_path, output_dir, per_device_train_batch_size: int, **overrides) -> dict:
    """Train the tiny model for ``max_steps`` on fixed completions; returns what the tests compare."""
    from pepo.modeling import load_model_and_processor
    from pepo.trainer import PEPOTrainer

    model, processor = load_model_and_processor(model_path)
    trainer = PEPOTrainer(
        model=model, reward_funcs=[length_reward], processing_class=processor, train_dataset=image_dataset(),
        args=config(output_dir, per_device_train_batch_size, **overrides),
    )
    served = install_replay(trainer)
    counts = []  # (entries on this process, entries after gathering) per gathered metric
    gather = trainer._gathered_valid

    def counting_gather(values, valid):
        out = gather(values, valid)
        counts.append((int(valid.sum()), int(out.numel())))
        return out

    trainer._gathered_valid = counting_gather
    trainer.train()
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "rank": trainer.accelerator.process_index,
        "world_size": trainer.accelerator.num_processes,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "device": str(trainer.accelerator.device),
        "params": {n: p.detach().cpu().clone() for n, p in unwrapped.named_parameters()},
        "logs": [{k: v for k, v in entry.items() if k not in TIMING_KEYS} for entry in trainer.state.log_history],
        "completion_ids": served,
        "gather_counts": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--per_device_train_batch_size", type=int, required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    result = run(args.model, out / "trainer", args.per_device_train_batch_size)
    rank = result["rank"]
    if rank == 0:
        from safetensors.torch import save_file

        save_file({n: p.contiguous() for n, p in result["params"].items()}, str(out / "params.safetensors"))
    summary = {k: v for k, v in result.items() if k != "params"}
    (out / f"rank{rank}.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
