"""A time in the state item that is not a number (edited by hand, or by a bad tool) never
wedges a merchant: the poll lease, the token refresh lock and the webhook's poll window are
each taken over when their ``…_until_ms`` holds another type, and the write that takes them
puts a number back. A number in the future still holds.

Real DynamoDB compares only values of one type: a ``<=`` between a string (or a list, a
flag…) and a number is false ("If an item contains an AttributeValue element of a different
type than the one provided in the request, the value does not match", the API reference on
the comparison operators), so ``#until <= :now`` alone never held for such a value and the
merchant stayed busy, its tokens never refreshed, its hints always coalesced. moto answers
differently: a flag compares as 0 or 1 (Python's ``bool`` is an ``int``: taken), a null as
false (held), a string, list, map, binary or set raises inside moto (an ``AwsError`` here).
The condition now names the type first (``NOT attribute_type(#until, :number)``), so
every case below holds on both: moto evaluates ``OR`` left to right and stops at the first
true operand, and DynamoDB's answer does not depend on the order.

Through the stores' own methods on moto (the local stack's table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.store.dynamo import DynamoStateStore

M = "MTIMES000001"
NOW_MS = 1_800_000_000_000
WRONG_TYPES = {
    "digits": {"S": "0"},
    "text": {"S": "2027-01-01T00:00:00Z"},
    "list": {"L": [{"N": "0"}]},
    "true": {"BOOL": True},
    "false": {"BOOL": False},
    "null": {"NULL": True},
    "map": {"M": {"ms": {"N": "0"}}},
    "binary": {"B": b"\x00"},
    "string-set": {"SS": ["0"]},
    "number-set": {"NS": ["0"]},
}
"""Times no writer here writes: each is taken over (a flag only on DynamoDB before the fix;
moto took it already)."""

Take = Callable[[DynamoStateStore, str, int], bool]
"""Takes one of the three (the store, an owner, now): whether it was taken."""


def take_lease(store: DynamoStateStore, owner: str, now_ms: int) -> bool:
    return store.take_lease(M, owner, now_ms=now_ms, duration_ms=1_000) is not None


def take_refresh_lock(store: DynamoStateStore, owner: str, now_ms: int) -> bool:
    return store.acquire_refresh_lock(M, owner, now_ms=now_ms, duration_ms=1_000)


def claim_window(store: DynamoStateStore, owner: str, now_ms: int) -> bool:
    return store.claim_webhook_poll(M, now_ms=now_ms, window_ms=1_000)


TAKERS: list[tuple[str, Take]] = [
    ("lease_until_ms", take_lease),
    ("refresh_lock_until_ms", take_refresh_lock),
    ("webhook_poll_until_ms", claim_window),
]


def write_time(stack: LocalStack, name: str, attr: dict[str, Any]) -> None:
    """What an operator's edit leaves: the merchant's item with ``name`` set to ``attr``."""
    boto3.client("dynamodb").put_item(
        TableName=stack.env["STATE_TABLE_NAME"],
        Item={
            "merchant_id": {"S": M},
            "version": {"N": "4"},
            "lease_owner": {"S": "edited"},
            "refresh_lock_owner": {"S": "edited"},
            name: attr,
        },
    )


def stored_time(stack: LocalStack, name: str) -> object:
    item = boto3.client("dynamodb").get_item(
        TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": M}}, ConsistentRead=True
    )["Item"]
    return item.get(name)


@pytest.mark.parametrize("attr", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
@pytest.mark.parametrize(("name", "take"), TAKERS, ids=[name for name, _ in TAKERS])
def test_a_time_of_another_type_counts_as_expired_and_is_replaced_by_a_number(
    stack: LocalStack, name: str, take: Take, attr: dict[str, Any]
) -> None:
    store = runtime.state_store()
    assert isinstance(store, DynamoStateStore)
    write_time(stack, name, attr)
    assert take(store, "poller-a", NOW_MS)
    assert stored_time(stack, name) == {"N": str(NOW_MS + 1_000)}
    # Now a number in the future: it holds until then, as any taken one does.
    assert not take(store, "poller-b", NOW_MS + 999)
    assert take(store, "poller-b", NOW_MS + 1_000)


@pytest.mark.parametrize(("name", "take"), TAKERS, ids=[name for name, _ in TAKERS])
def test_a_number_in_the_future_still_holds(stack: LocalStack, name: str, take: Take) -> None:
    store = runtime.state_store()
    assert isinstance(store, DynamoStateStore)
    for until in (NOW_MS + 1, NOW_MS + 86_400_000):
        write_time(stack, name, {"N": str(until)})
        assert not take(store, "poller-a", NOW_MS), until
        assert stored_time(stack, name) == {"N": str(until)}
        assert take(store, "poller-a", until), until  # expired at its time, not before
