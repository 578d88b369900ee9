"""What the family tests check of a PEPO_G training and of ``pepo eval`` / ``pepo analyze`` on a saved
checkpoint, in one place (tests/families, tests/scale)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch

from pepo.cli import main as pepo_main


def train_and_check_pepo_g(trainer, out: Path, steps: int) -> None:
    """Train ``trainer`` (PEPO_G, ``steps`` optimiser steps), save it to ``out``, and check every step's log:
    the perception prior on the family's image tokens, token weights spread around 1, a gradient, changed weights."""
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    trainer.save_model(str(out))
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == steps
    # the perception prior was computed on the family's image tokens in every step (logged only then)
    assert all(0 < e["pepo/visual_similarity"] <= 1 and e["pepo/weight/p0"] < 1 < e["pepo/weight/p100"] for e in logs)
    assert all(e["grad_norm"] > 0 for e in logs)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def evaluate_and_check(checkpoint: Path, data_dir: Path, tmp_path: Path) -> dict:
    """``pepo eval`` of ``checkpoint`` on ``data_dir``'s 8 test questions, 2 samples each; returns its results."""
    results = tmp_path / "results.json"
    assert pepo_main(["eval", "--model", str(checkpoint), "--benchmark", "geometry3k", "--data",
                      str(data_dir / "test.jsonl"), "--n", "2", "--max-new-tokens", "8", "--batch-size", "4",
                      "--out", str(results), "--no-progress"]) == 0
    result = json.loads(results.read_text())
    assert result["totals"]["questions"] == 8 and all(len(q["scores"]) == 2 for q in result["questions"])
    return result


def analyse_and_check(checkpoint: Path, data_dir: Path, tmp_path: Path) -> list[dict]:
    """``pepo analyze`` of ``checkpoint`` on 2 of ``data_dir``'s test questions; returns tokens.csv's rows."""
    analysis = tmp_path / "analysis"
    assert pepo_main(["analyze", "--model", str(checkpoint), "--data", str(data_dir / "test.jsonl"), "--n", "2",
                      "--limit", "2", "--max-new-tokens", "8", "--top-k", "2", "--out", str(analysis),
                      "--no-progress"]) == 0
    assert (analysis / "report.md").is_file()
    with open(analysis / "tokens.csv", newline="") as f:
        tokens = list(csv.DictReader(f))
    # the responses' tokens, each with its similarity to the family's image tokens (found: not all 0)
    similarities = [float(t["similarity_cosine"]) for t in tokens]
    assert tokens and all(math.isfinite(s) and -1 <= s <= 1 for s in similarities) and any(similarities)
    return tokens
