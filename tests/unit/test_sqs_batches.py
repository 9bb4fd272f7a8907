"""How messages are grouped into SendMessageBatch calls: SQS refuses a call of more than ten
messages, or whose messages together pass 256 KiB, and a message past it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esl_sync.store.sqs import SQS_BATCH, SQS_MAX_BYTES, QueueSendError, _batches, _send_all

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


def test_a_message_past_the_limit_stops_the_send_before_any_batch() -> None:
    """Checked before the first call: a send that must fail sends nothing first."""
    calls: list[object] = []
    sqs = _Sqs(lambda batch: calls.append(batch) or _taken(batch))
    with pytest.raises(QueueSendError, match="bytes") as raised:
        _send_all(sqs, "q", _entries([10] * 12 + [SQS_MAX_BYTES + 1]))
    assert (calls, raised.value.queued) == ([], frozenset())


class _Sqs:
    """SQS's answers to SendMessageBatch, one call after another (``answer(entries)``)."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self._answer = answer

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        assert operation == "SendMessageBatch"
        return self._answer(params["Entries"])


def _taken(batch: list[dict[str, Any]], refused: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        "Successful": [{"Id": e["Id"]} for e in batch if e["Id"] not in refused],
        "Failed": [{"Id": i, "Code": "Refused", "SenderFault": True} for i in sorted(refused)],
    }


def test_a_send_failing_after_some_batches_names_the_messages_queued() -> None:
    """What the webhook needs to give back only the windows of polls not queued: the
    positions SQS answered as taken, whether a later call fails or refuses entries; a
    failure before any was taken stays as it came."""
    entries = _entries([10] * 25)
    second_fails = iter([_taken, _fails, _taken])
    with pytest.raises(QueueSendError, match="15 message") as raised:
        _send_all(_Sqs(lambda batch: next(second_fails)(batch)), "q", entries)
    assert raised.value.queued == frozenset(range(10))
    assert isinstance(raised.value.__cause__, ConnectionError)

    refused = frozenset({"10", "12"})
    answers = iter([_taken, lambda batch: _taken(batch, refused)])
    with pytest.raises(QueueSendError, match="2 message") as raised:
        _send_all(_Sqs(lambda batch: next(answers)(batch)), "q", entries)
    assert raised.value.queued == frozenset(range(20)) - {10, 12}

    with pytest.raises(ConnectionError):
        _send_all(_Sqs(_fails), "q", entries)


def _fails(batch: list[dict[str, Any]]) -> dict[str, Any]:
    raise ConnectionError("injected: the call failed")
