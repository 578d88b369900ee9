"""pepo.families.image_rows: the one place saying which rows of ``pixel_values`` belong to which image."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pepo.families.image_rows import image_rows, rows_of

MERGE = 2
# (t, h, w) patches of one image; h and w are multiples of the merge size, as a Qwen processor makes them
grids = st.lists(st.tuples(st.integers(1, 2), st.integers(1, 3).map(lambda n: MERGE * n),
                           st.integers(1, 3).map(lambda n: MERGE * n)), max_size=5)


def _labelled_pixel_values(grid: list[tuple[int, int, int]]) -> torch.Tensor:
    """(rows, 2): image ``i``'s ``t * h * w`` rows, built image by image, hold ``(i, row within the image)``."""
    blocks = [torch.stack([torch.full((t * h * w,), i), torch.arange(t * h * w)], 1) for i, (t, h, w) in enumerate(grid)]
    return torch.cat(blocks) if blocks else torch.zeros(0, 2, dtype=torch.long)


def test_an_example():
    grid = torch.tensor([[1, 4, 6], [2, 2, 2]])
    assert image_rows(grid) == [range(0, 24), range(24, 32)]
    assert image_rows(grid, MERGE) == [range(0, 6), range(6, 8)]
    assert rows_of(image_rows(grid), [1, 1]).tolist() == [*range(24, 32), *range(24, 32)]


@settings(max_examples=50, deadline=None)
@given(grid=grids, data=st.data())
def test_rows_are_each_image_s_own(grid, data):
    pixel_values = _labelled_pixel_values(grid)
    rows = image_rows(torch.tensor(grid, dtype=torch.long).reshape(-1, 3))
    # contiguous, in order, and together all of pixel_values
    assert [r.start for r in rows] == [0, *(r.stop for r in rows)][: len(rows)]
    assert sum(len(r) for r in rows) == pixel_values.size(0)
    for i, r in enumerate(rows):  # the direct computation: the rows labelled i, in their order
        assert torch.equal(pixel_values[r.start : r.stop], pixel_values[pixel_values[:, 0] == i])
    # the same from numpy and from a list of (t, h, w)
    assert image_rows(np.array(grid, dtype=np.int64).reshape(-1, 3)) == rows == image_rows(grid)
    # merged rows (image tokens): merge x merge patches per token, image after image
    tokens = image_rows(grid, MERGE)
    assert [len(r) for r in tokens] == [t * h * w // MERGE**2 for t, h, w in grid]
    assert torch.equal(torch.tensor([i for i, r in enumerate(tokens) for _ in r], dtype=torch.long),
                       pixel_values[:: MERGE**2, 0])
    images = data.draw(st.lists(st.integers(0, len(grid) - 1), max_size=6)) if grid else []
    expected = [pixel_values[pixel_values[:, 0] == i] for i in images]
    assert torch.equal(pixel_values[rows_of(rows, images)], torch.cat(expected) if expected else pixel_values[:0])
