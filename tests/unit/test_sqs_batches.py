"""How messages are grouped into SendMessageBatch calls: SQS refuses a call of more than ten
messages, or whose messages together pass 256 KiB, and a message past it."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esl_sync.store.sqs import SQS_BATCH, SQS_MAX_BYTES, QueueSendError, _batches

SIZES = st.lists(st.integers(min_value=0, max_value=SQS_MAX_BYTES), max_size=40)


def _entries(sizes: list[int]) -> list[dict[str, str]]:
    # "é" is two bytes: what counts is the UTF-8 body, not its characters
    return [
        {"Id": str(i), "MessageBody": "é" * (n // 2) + "x" * (n % 2)} for i, n in enumerate(sizes)
    ]


@given(SIZES)
def test_batches_keep_the_order_and_each_fits_one_call(sizes: list[int]) -> None:
    entries = _entries(sizes)
    batches = list(_batches(entries))
    assert [e for batch in batches for e in batch] == entries
    for batch in batches:
        assert 1 <= len(batch) <= SQS_BATCH
        assert sum(len(e["MessageBody"].encode()) for e in batch) <= SQS_MAX_BYTES
    # and no call is cut short needlessly: each next message would not have fitted
    for batch, following in pairwise(batches):
        size = sum(len(e["MessageBody"].encode()) for e in batch)
        first = len(following[0]["MessageBody"].encode())
        assert len(batch) == SQS_BATCH or size + first > SQS_MAX_BYTES


def test_a_message_past_the_limit_is_named_not_sent() -> None:
    with pytest.raises(QueueSendError, match=f"a message of {SQS_MAX_BYTES + 1} bytes"):
        list(_batches(_entries([10, SQS_MAX_BYTES + 1])))
