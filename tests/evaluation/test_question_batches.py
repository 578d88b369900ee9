"""pepo.evaluation.evaluator.question_batches: order kept, batch size bounded, no batch mixing
questions with and without images, and a file of one kind batched exactly as before."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from pepo.evaluation.evaluator import question_batches


@given(st.lists(st.booleans(), max_size=30), st.integers(1, 6))
def test_batches_keep_order_and_size_and_never_mix(has_image, batch_size):
    records = [SimpleNamespace(id=i, images=["x"] if image else []) for i, image in enumerate(has_image)]
    batches = list(question_batches(records, batch_size))
    assert [r for batch in batches for r in batch] == records
    assert all(0 < len(batch) <= batch_size for batch in batches)
    assert all(len({bool(r.images) for r in batch}) == 1 for batch in batches)
    if len(set(has_image)) <= 1:  # one kind: consecutive slices of batch_size, as before
        assert batches == [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
