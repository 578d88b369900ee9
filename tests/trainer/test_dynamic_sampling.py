"""DAPO dynamic sampling: zero-variance groups are dropped and refilled with fresh prompts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
import torch

from pepo.trainer.dynamic_sampling import rebatch, unbatch

from .conftest import image_dataset, length_reward, rollout


def red_gets_constant_reward(completions, image=None, **kwargs):
    """Constant reward for prompts whose image is red (a zero-variance group), else length mod 3."""
    varied = length_reward(completions)
    return [0.5 if im.getpixel((0, 0))[0] == 200 and im.getpixel((0, 0))[1] == 0 else r for im, r in zip(image, varied)]


def test_unbatch_rebatch_round_trip(make_trainer):
    trainer = make_trainer(weighting="none")
    batch = rollout(trainer)
    rows = unbatch(batch)
    assert len(rows) == batch["prompt_ids"].size(0)
    again = rebatch(rows, trainer._tokenizer.pad_token_id)
    for key, value in batch.items():
        if key == "num_items_in_batch":
            continue
        if isinstance(value, torch.Tensor):
            assert torch.equal(again[key], value), key
        else:
            assert again[key] == value, key


def test_rebatch_repads_rows_of_different_rollouts(make_trainer):
    trainer = make_trainer(weighting="none")
    a, b = rollout(trainer, seed=0), rollout(trainer, seed=1)
    b = {**b, "prompt_ids": torch.cat([b["prompt_ids"][:, :1] * 0 + trainer._tokenizer.pad_token_id, b["prompt_ids"]], 1),
         "prompt_mask": torch.cat([b["prompt_mask"][:, :1] * 0, b["prompt_mask"]], 1),
         "mm_token_type_ids": torch.cat([b["mm_token_type_ids"][:, :1] * 0, b["mm_token_type_ids"]], 1)}
    merged = rebatch(unbatch(a)[:2] + unbatch(b)[:2], trainer._tokenizer.pad_token_id)
    P = a["prompt_ids"].size(1) + 1
    assert merged["prompt_ids"].shape == (4, P)
    assert torch.equal(merged["prompt_ids"][0, 1:], a["prompt_ids"][0]) and torch.equal(merged["prompt_ids"][2], b["prompt_ids"][0])
    assert merged["mm_token_type_ids"].shape == (4, P + merged["completion_ids"].size(1))
    assert merged["pixel_values"].size(0) == 4 * 16 and merged["image_grid_thw"].size(0) == 4


def test_zero_variance_groups_are_dropped_and_refilled(make_trainer):
    # prompts 0 (red) and 1 (green); the red group is always uninformative
    dataset = image_dataset(4)
    trainer = make_trainer(weighting="none", dynamic_sampling=True, per_device_train_batch_size=8,
                           reward_funcs=[red_gets_constant_reward], dataset=dataset, dynamic_sampling_max_rounds=4)
    examples = [dataset[i // 4] for i in range(8)]
    trainer.model.train()
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(examples)
    assert out["prompt_ids"].size(0) == 8 and out["advantages"].shape == (8,)
    dropped = trainer._metrics["train"]["dynamic_sampling/frac_groups_dropped"][-1]
    rounds = trainer._metrics["train"]["dynamic_sampling/rounds"][-1]
    assert dropped > 0 and rounds >= 1
    # every kept group carries signal: its advantages are not all zero
    groups = out["advantages"].view(-1, 4)
    assert (groups.abs().amax(1) > 0).all()
    assert out["num_items_in_batch"] == out["completion_mask"].sum()


def test_batch_is_completed_with_dropped_groups_when_rounds_run_out(make_trainer):
    trainer = make_trainer(weighting="none", dynamic_sampling=True, dynamic_sampling_max_rounds=0,
                           reward_funcs=[lambda completions, **kw: [1.0] * len(completions)])
    trainer.model.train()
    with pytest.warns(UserWarning, match="zero-advantage"):
        out = trainer._generate_and_score_completions([trainer.train_dataset[0]] * 4)
    assert out["prompt_ids"].size(0) == 4
    assert trainer._metrics["train"]["dynamic_sampling/frac_batch_filled_with_dropped"][-1] == 1.0


# ---- across processes: dealing whole groups out (the 2-process run is tests/scale/test_dynamic_sampling_ranks.py)


def test_assign_groups_keeps_own_groups_and_moves_only_the_surplus():
    from pepo.trainer.dynamic_sampling import assign_groups

    # round 0: rank 0's group dropped, rank 1's kept; round 1: both informative (rank 1 has 2 now)
    selected = [(0, 1), (1, 0), (1, 1)]
    owner = {(0, 0): 0, (0, 1): 1, (1, 0): 0, (1, 1): 1}
    assert assign_groups(selected[:2], owner, 1, 2) == [[(1, 0)], [(0, 1)]]  # nothing moves
    owner = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 1}
    assert assign_groups(selected[:2], owner, 1, 2) == [[(1, 0)], [(0, 1)]]  # rank 1's surplus goes to rank 0


@given(owners=st.lists(st.integers(0, 3), min_size=1, max_size=24), per_process=st.integers(1, 3),
       processes=st.integers(1, 4))
def test_assign_groups_deals_every_group_once_and_moves_as_few_as_possible(owners, per_process, processes):
    from pepo.trainer.dynamic_sampling import assign_groups

    owners = [o % processes for o in owners]
    target = per_process * processes
    if len(owners) < target:
        return
    selected = [(0, g) for g in range(target)]
    owner = {(0, g): owners[g] for g in range(target)}
    plan = assign_groups(selected, owner, per_process, processes)
    assert [len(groups) for groups in plan] == [per_process] * processes
    assert sorted(g for groups in plan for g in groups) == sorted(selected)
    moved = sum(owner[g] != rank for rank, groups in enumerate(plan) for g in groups)
    own = [sum(owner[g] == rank for g in selected) for rank in range(processes)]
    assert moved == sum(max(per_process - n, 0) for n in own)


def test_a_group_split_across_processes_is_refused():
    from types import SimpleNamespace

    from pepo.trainer.dynamic_sampling import DynamicSampler

    trainer = SimpleNamespace(train_dataset=image_dataset(2), num_generations=4,
                              args=SimpleNamespace(generation_batch_size=4, seed=0),
                              accelerator=SimpleNamespace(num_processes=2, process_index=0))
    with pytest.raises(ValueError, match="split across processes"):
        DynamicSampler(trainer)
    trainer.args.generation_batch_size = 8
    DynamicSampler(trainer)
