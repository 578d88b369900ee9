"""`pepo analyze` on the tiny VLM: the per-token signals line up with the tokens they describe,
and the report's numbers are consistent with each other."""

import csv
import json
import re
from collections import defaultdict

import numpy as np
import pytest
import torch

from pepo.analysis.signals import run_response
from pepo.cli import main as pepo_main
from pepo.core import perception_scores, token_entropy
from pepo.data import load_geometry3k, render_prompt
from pepo.data.records import open_image
from pepo.modeling import load_model_and_processor

pytestmark = pytest.mark.slow


def _read_csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_signals_belong_to_the_token_at_their_position(tiny_vlm_path, synthetic_data_dir):
    """Entropy at t comes from the logits that predicted token t, similarity at t from token t's
    own hidden states: check both against forwards of the response cut after t (causal model)."""
    model, processor = load_model_and_processor(tiny_vlm_path)
    record = load_geometry3k(synthetic_data_dir / "test.jsonl").records[0]
    images = [open_image(s) for s in record.images]
    tokenizer = processor.tokenizer
    ids = tokenizer("<think> the red circle is at the top left </think>", add_special_tokens=False)["input_ids"]
    out = run_response(model, processor, record.prompt, images, ids, processor.image_token_id, render=render_prompt,
                       temperature=0.7)
    prompt = processor(text=[render_prompt(processor, record.prompt)], images=images, return_tensors="pt")
    for t in (0, 3, len(ids) - 1):
        full = torch.cat([prompt["input_ids"], torch.tensor([ids[: t + 1]])], dim=1)
        extra = torch.zeros(1, t + 1, dtype=torch.long)
        with torch.no_grad():
            res = model(input_ids=full, attention_mask=torch.ones_like(full),
                        mm_token_type_ids=torch.cat([prompt["mm_token_type_ids"], extra], dim=1),
                        pixel_values=prompt["pixel_values"], image_grid_thw=prompt["image_grid_thw"],
                        output_hidden_states=True)
        entropy = token_entropy(res.logits[:, -2:-1], temperature=0.7)[0, 0].item()
        similarity = perception_scores(res.hidden_states, full == processor.image_token_id, 1)[0, 0].item()
        assert out["entropy"][t] == pytest.approx(entropy, abs=1e-4)
        assert out["similarity/cosine"][t] == pytest.approx(similarity, abs=1e-4)
    assert out["weight"].mean() == pytest.approx(1.0, abs=1e-5)
    assert (out["shift_l2"] > 0).all()  # the tiny model's hidden states do depend on the image


def test_cli_writes_a_consistent_report(tiny_vlm_path, synthetic_data_dir, tmp_path):
    run = tmp_path / "runs" / "pepo_g" / "checkpoint-2"
    run.mkdir(parents=True)
    history = [{"step": s, "reward": 0.2 * s, "completions/mean_length": 20.0, "pepo/visual_similarity": 0.1 + s,
                "entropy": 3.0 - s} for s in (1, 2)]
    (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    out = tmp_path / "analysis"
    argv = ["analyze", "--model", str(tiny_vlm_path), "--data", str(synthetic_data_dir / "test.jsonl"), "--n", "3",
            "--limit", "3", "--max-new-tokens", "12", "--top-k", "3", "--runs", str(tmp_path / "runs" / "pepo_g"),
            "--out", str(out), "--no-progress"]
    assert pepo_main(argv) == 0
    report = (out / "report.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    assert "fig6_dynamics.png" in report and "| pepo_g | reward | reward | 2 | 0.2000 | 0.4000 |" in report

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()[1:]]
    assert len(samples) == 3 and all(len(s["outputs"]) == 3 for s in samples)
    # the token view says what each shown question asked, with its image and gold answer (the CLI passes the records)
    page = (out / "responses.html").read_text()
    shown = sorted(set(re.findall(r"<h2>question ([^<]+)</h2>", page)))
    assert shown and page.count("src='data:image/png;base64,") == len(shown)
    assert page.count("gold answer: <code class='gold'>") == len(shown)
    tokens = _read_csv(out / "tokens.csv")
    by_response = defaultdict(list)
    for row in tokens:
        by_response[row["question_id"], int(row["sample"])].append(row)
    outputs = {(s["id"], i): text for s in samples for i, text in enumerate(s["outputs"])}
    assert len(by_response) == sum(1 for text in outputs.values() if text.strip())
    for key, rows in by_response.items():
        # the word-level tokenizer re-encodes the sampled text exactly
        assert " ".join(r["token"] for r in rows) == outputs[key]
        assert np.mean([float(r["weight"]) for r in rows]) == pytest.approx(1.0, abs=1e-5)
        assert all(-1 - 1e-6 <= float(r["similarity_cosine"]) <= 1 + 1e-6 for r in rows)
        assert all(float(r["shift_l2"]) >= 0 and float(r["entropy"]) >= 0 for r in rows)
    # responses.csv is the per-response mean of tokens.csv
    for row in _read_csv(out / "responses.csv"):
        rows = by_response[row["question_id"], int(row["sample"])]
        assert float(row["similarity_all"]) == pytest.approx(np.mean([float(r["similarity_cosine"]) for r in rows]), abs=1e-6)
    assert len(_read_csv(out / "fig2_shift.csv")) == 3 * 4  # 3 views x 4 measures
    assert {r["metric"] for r in _read_csv(out / "fig3_shift.csv")} == {"shift_l2", "shift_cos"}
