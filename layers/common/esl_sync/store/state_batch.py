"""Many merchants' state read at once (the dispatcher's fleet health, ``esl-sync status``):
:meth:`esl_sync.store.dynamo.DynamoStateStore.load_many`, kept apart from the store's
single-item writes."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from itertools import batched
from typing import Any

from esl_sync.records import MerchantState
from esl_sync.store.aws_json import AwsError, Caller
from esl_sync.store.state_item import STATE_FIELDS, state_of

UNPROCESSED_TRIES = 8
"""BatchGetItem calls for one batch of keys while DynamoDB leaves some unprocessed."""


def unprocessed_backoff(tries: int) -> float:
    """The longest wait before reading unprocessed keys again after ``tries`` tries:
    doubling from 50 ms to 2 s (the wait is a random part of it, "full jitter")."""
    return min(2.0, 0.05 * 2.0 ** (tries - 1))


def read_states(
    dynamodb: Caller, table: str, merchant_ids: Sequence[str], sleep: Callable[[float], None]
) -> dict[str, MerchantState]:
    """Many merchants' state in batches of 100, without their token material.

    Keys DynamoDB leaves unprocessed (it does under throttling) are read again after a
    backoff, as AWS asks: read again at once, in a loop, they would deepen the throttling
    every poll's own reads meet. Still unprocessed after ``UNPROCESSED_TRIES``, the read
    fails (``AwsError`` ``UnprocessedKeys``, retryable) rather than loop until the
    function's timeout."""
    found: dict[str, MerchantState] = {}
    names = {f"#{i}": name for i, name in enumerate(("merchant_id", "version", *STATE_FIELDS))}
    for batch in batched(merchant_ids, 100):  # BatchGetItem takes at most 100 keys
        keys: list[Mapping[str, Any]] = [{"merchant_id": {"S": m}} for m in batch]
        tries = 0
        while keys:
            request = {
                "Keys": keys,
                "ProjectionExpression": ", ".join(names),
                "ExpressionAttributeNames": names,
            }
            answer = dynamodb.call("BatchGetItem", {"RequestItems": {table: request}})
            for item in answer["Responses"].get(table, []):
                merchant_id = str(item["merchant_id"]["S"])
                found[merchant_id] = state_of(merchant_id, item)
            unprocessed = answer.get("UnprocessedKeys") or {}
            keys = list(unprocessed[table]["Keys"]) if table in unprocessed else []
            if keys:
                tries += 1
                if tries >= UNPROCESSED_TRIES:
                    raise AwsError(
                        "dynamodb",
                        "BatchGetItem",
                        "UnprocessedKeys",
                        200,
                        f"{len(keys)} keys still unprocessed after {tries} tries (throttled)",
                        True,
                    )
                sleep(random.random() * unprocessed_backoff(tries))
    return {m: found.get(m, MerchantState(merchant_id=m)) for m in merchant_ids}
