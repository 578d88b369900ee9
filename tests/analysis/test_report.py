"""The report folder: CSVs hold the numbers of the figures, HTML is escaped, links resolve."""

import csv
import re

import numpy as np
import pytest

from pepo.analysis.analyze import pick_html_responses, write_analysis
from pepo.analysis.report import weight_colour, write_csv, write_html
from pepo.analysis.tables import figure2_per_question, figure2_shift

from .helpers import response


def _read_csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_csv_round_trips_floats_exactly(tmp_path):
    value = 0.1 + 0.2
    write_csv(tmp_path / "x.csv", [{"a": value, "b": np.float32(1.5), "c": "t"}])
    row = _read_csv(tmp_path / "x.csv")[0]
    assert float(row["a"]) == value and float(row["b"]) == 1.5 and row["c"] == "t"


def test_weight_colour():
    assert weight_colour(2.0) == "rgba(220,50,47,1.000)"  # full red at 2
    assert weight_colour(0.5) == "rgba(38,139,210,1.000)"  # full blue at 1/2
    assert weight_colour(1.0).endswith(",0.000)")  # transparent at 1
    assert weight_colour(2 ** 0.5) == "rgba(220,50,47,0.500)"
    assert weight_colour(1.1, full=1.21) == "rgba(220,50,47,0.500)"  # log 1.1 = half of log 1.21


def test_html_escapes_model_text(tmp_path):
    r = response("<q&1>", 0, True, [0.1, 0.9], tokens=["<script>alert(1)</script>", "a&b"], weight=[0.5, 1.5])
    r.answer = '"><img src=x>'
    text = write_html(tmp_path / "r.html", [r], "cosine").read_text()
    assert "<script>" not in text and "<img" not in text and "<q&1>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a&amp;b" in text and "&lt;q&amp;1&gt;" in text
    assert text.count("class='tok'") == 2 and "weight 1.500" in text
    # the largest |log w| shown (w = 0.5) sets full colour: 0.5 full blue, 1.5 at log 1.5 / log 2 = 0.585
    assert "background:rgba(38,139,210,1.000)" in text and "background:rgba(220,50,47,0.585)" in text


def _question(question_id, image_source, text="What is <x> & y? Answer in \\boxed{}.", solution="3\\sqrt{2}"):
    from pepo.data.prompts import build_prompt
    from pepo.data.records import Record

    return Record(id=question_id, prompt=build_prompt(text, 1), images=[image_source], solution=solution)


def test_html_shows_each_questions_text_image_and_gold_answer(tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    picture = tmp_path / "green.png"
    Image.new("RGB", (40, 30), (0, 200, 0)).save(picture)
    responses = [response("q1", 0, True, [0.1]), response("q1", 1, False, [0.2]), response("q2", 0, False, [0.3])]
    questions = {"q1": _question("q1", str(picture)), "q2": _question("q2", Image.new("RGB", (9, 9), "red"), "second")}
    text = write_html(tmp_path / "r.html", responses, "cosine", questions=questions).read_text()
    assert text.count("<h2>question q1</h2>") == 1 and text.count("<h2>question q2</h2>") == 1
    assert "What is &lt;x&gt; &amp; y? Answer in \\boxed{}." in text and "second" in text
    assert text.count("gold answer: <code class='gold'>3\\sqrt{2}</code>") == 2
    assert text.count("<span class='correct'>correct</span>") == 1 and text.count("<span class='incorrect'>incorrect</span>") == 2
    assert str(picture) not in text and "green.png" not in text  # embedded, not linked
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    images = [Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB") for uri in uris]
    assert [image.size for image in images] == [(40, 30), (9, 9)]
    assert images[0].getpixel((20, 15)) == (0, 200, 0) and images[1].getpixel((4, 4)) == (255, 0, 0)


def test_pick_html_responses_pairs_correct_and_incorrect():
    rs = [response("a", 0, False, [0.1]), response("a", 1, False, [0.1]), response("a", 2, True, [0.1]),
          response("b", 0, False, [0.1])]
    picked = pick_html_responses(rs, 3)
    assert [(r.question_id, r.sample) for r in picked] == [("a", 2), ("a", 0), ("a", 1)]


def _responses():
    rng = np.random.default_rng(1)
    out = []
    for q in range(4):
        for s in range(4):
            sim = rng.uniform(size=7) + (0.3 if s < 2 else 0.0)
            out.append(response(f"q{q}", s, s < 2, sim, tokens=["angle", "so", "line", ",", "check", "red", "the"],
                                entropy=rng.uniform(size=7), shift=rng.uniform(size=7), weight=np.ones(7)))
    return out


def test_write_analysis_report_numbers_and_links(tmp_path):
    responses = _responses()
    history = [{"step": s, "reward": 0.1 * s, "completions/mean_length": 30.0 - s, "entropy": 2.0 - 0.1 * s} for s in (1, 2, 3)]
    report = write_analysis(tmp_path, responses, k=3, settings={"model": "m"},
                            dynamics=[{"run": "grpo", "step": e["step"], "curve": c, "key": k, "value": e[k]}
                                      for e in history for c, k in (("reward", "reward"), ("entropy", "entropy"))])
    text = report.read_text()
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (tmp_path / link).is_file(), link
    for name in ("fig2_similarity.png", "fig3_hidden_shift.png", "fig3_words.png", "fig6_dynamics.png", "responses.html"):
        assert name in text
    # the CSV behind Figure 2 holds exactly the numbers of the table functions
    expected = {(r["measure"], r["view"]): r for r in figure2_shift(figure2_per_question(responses, ["cosine", "l2"], 3))}
    rows = _read_csv(tmp_path / "fig2_shift.csv")
    assert len(rows) == 6
    for row in rows:
        want = expected[row["measure"], row["view"]]
        assert float(row["mean_diff"]) == want["mean_diff"] and float(row["auc"]) == want["auc"]
    # and the report quotes the cosine ones
    top = expected["cosine", "top_k"]
    assert f"| top_k | 4 | 4 | {top['mean_correct']:.4f} | {top['mean_incorrect']:.4f} | {top['mean_diff']:.4f} |" in text
    tokens = _read_csv(tmp_path / "tokens.csv")
    assert len(tokens) == 16 * 7 and float(tokens[3]["similarity_cosine"]) == responses[0].similarity["cosine"][3]
    dynamics = _read_csv(tmp_path / "fig6_dynamics.csv")
    assert [float(r["value"]) for r in dynamics if r["curve"] == "reward"] == pytest.approx([0.1, 0.2, 0.3])
    assert "| grpo | visual_similarity | pepo/visual_similarity | 0 | n/a | n/a |" in text
    words = _read_csv(tmp_path / "fig3_words_similarity.csv")
    assert sum(int(w["count"]) for w in words) == 16 * 3  # top-3 words of each of 16 responses ("," is no word)


def test_dynamics_only_report(tmp_path):
    report = write_analysis(tmp_path, None, dynamics=[{"run": "r", "step": 1, "curve": "reward", "key": "reward", "value": 1.0}])
    text = report.read_text()
    assert "fig6_dynamics.png" in text and "Figure 2" not in text
    assert not (tmp_path / "tokens.csv").exists()
