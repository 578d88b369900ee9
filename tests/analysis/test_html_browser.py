"""The HTML token view of `pepo analyze`, opened in a real browser (headless Chromium) and read from its pixels.

Chromium comes from Debian's `chromium` package (`.ci/run` installs it). Where it is absent the
test skips and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pepo.analysis.report import write_html

from .helpers import response

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found (Debian: apt-get install chromium; .ci/run installs it): "
    "the HTML token view is not rendered",
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def screenshot(html, tmp_path, name) -> np.ndarray:
    """The page as an (H, W, 3) uint8 array, rendered by headless Chromium at 900 x 600."""
    png = tmp_path / f"{name}.png"
    profile = tmp_path / f"profile-{name}"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=900,600",
               html.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert png.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


def red_pixels(image) -> int:
    """Pixels of the weight > 1 background (220, 50, 47) at full colour, within a tolerance."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 180) & (g < 100) & (b < 100)).sum())


def blue_pixels(image) -> int:
    """Pixels of the weight < 1 background (38, 139, 210) at full colour."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r < 90) & (g > 100) & (g < 180) & (b > 170)).sum())


def page(tmp_path, name, weights):
    tokens = [f"token{i}" for i in range(len(weights))]
    responses = [response(f"q{q}", 0, q % 2 == 0, np.linspace(0, 1, len(weights)), tokens=tokens, weight=weights)
                 for q in range(3)]
    return write_html(tmp_path / f"{name}.html", responses, "cosine")


def test_tokens_are_coloured_by_their_weight_in_a_browser(tmp_path):
    n = 24
    high = screenshot(page(tmp_path, "high", [4.0] * (n // 2) + [1.0] * (n // 2)), tmp_path, "high")
    low = screenshot(page(tmp_path, "low", [0.25] * (n // 2) + [1.0] * (n // 2)), tmp_path, "low")
    even = screenshot(page(tmp_path, "even", [1.0] * n), tmp_path, "even")
    area = high.shape[0] * high.shape[1]

    # not blank: text and token boxes cover part of every page
    for image in (high, low, even):
        assert (image.min(axis=2) < 200).mean() > 0.01

    # weight > 1 is red, < 1 blue, 1 neither: each at least 1% of the page, the other colour absent
    assert red_pixels(high) > 0.01 * area and blue_pixels(high) < 0.001 * area
    assert blue_pixels(low) > 0.01 * area and red_pixels(low) < 0.001 * area
    assert red_pixels(even) < 0.001 * area and blue_pixels(even) < 0.001 * area


def dom(html, tmp_path) -> str:
    """The page's DOM after Chromium rendered it (--dump-dom)."""
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", html.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert "<body" in done.stdout, f"no DOM (exit {done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def green_pixels(image) -> int:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r < 40) & (g > 170) & (b < 40)).sum())


def test_the_question_its_image_and_gold_answer_are_on_the_page(tmp_path):
    from pepo.data.prompts import build_prompt
    from pepo.data.records import Record

    picture = tmp_path / "source" / "green.png"
    picture.parent.mkdir()
    Image.new("RGB", (160, 120), (0, 200, 0)).save(picture)
    question = "Find the length of side AB in the green triangle."
    records = {"q0": Record(id="q0", prompt=build_prompt(question, 1), images=[str(picture)], solution="7.5")}
    responses = [response("q0", s, s == 0, [0.1, 0.2], tokens=["x", "y"], weight=[1.0, 1.0]) for s in range(2)]
    alone = tmp_path / "alone"
    alone.mkdir()
    html = write_html(alone / "responses.html", responses, "cosine", questions=records)
    shutil.rmtree(picture.parent)  # the page stands alone: its image is embedded, not linked

    image = screenshot(html, tmp_path, "question")
    assert green_pixels(image) > 0.8 * 160 * 120  # the picture, drawn at its size near the top
    rendered = dom(html, tmp_path)
    assert question in rendered and "gold answer: <code class=\"gold\">7.5</code>" in rendered
    assert rendered.count(">correct<") == 1 and rendered.count(">incorrect<") == 1
