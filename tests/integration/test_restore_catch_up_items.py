"""``esl-sync restore catch-up`` against the state items an operator meets in the field:
hand-edited ones, ids that are no merchant id (terminal escapes, NUL, long), an item whose
write DynamoDB refuses, many items (the Scan's pages). Real moto, Postgres and the CLI.

Every line printable, one line per item, the rest of the fleet caught up even when one
item is refused (named, and the exit status says so at the end), never a traceback, never
anything of the item but its id.
"""

from __future__ import annotations

import boto3

from devkit.local_stack import LocalStack
from esl_sync_ops.terminal import printable

MERCHANT = "MRESTOREIT01"
STORE = "STORE-RESTOREIT"
MILK = {"name": "Milk", "price": 100, "sku": "MILK-1"}
TABLE = "StateTable"
HOSTILE_IDS = [
    "M\x1b]0;pwned\x07\x1b[2J",  # terminal title and clear-screen escapes
    "M\x00NUL",
    "M\u202eLTR",  # a bidirectional override
    "line\nbreak",
    "é" * 1_000,  # 2,000 bytes: near DynamoDB's 2,048 for a key
]


def put_state_item(merchant_id: str, **attributes: dict[str, str]) -> None:
    boto3.client("dynamodb").put_item(
        TableName=TABLE,
        Item={"merchant_id": {"S": merchant_id}, "high_water_ms": {"N": "1700000000000"}}
        | attributes,
    )


def test_hostile_state_item_ids_are_printed_escaped_and_never_offered_to_merchants_add(
    stack: LocalStack,
) -> None:
    for hostile in HOSTILE_IDS:
        put_state_item(hostile)
    code, out, err = stack.run_cli("restore", "catch-up")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1 + len(HOSTILE_IDS) + 1, lines
    for line in lines:
        assert line == printable(line, limit=10_000), line
    for hostile in HOSTILE_IDS:
        shown = printable(hostile)
        (line,) = (x for x in lines if x.startswith(f"{shown}: "))
        assert "merchants add" not in line, line
        assert "not a merchant id" in line, line
    assert lines[-1] == (
        f"restore catch-up: {len(HOSTILE_IDS)} cursor(s) forgotten, 0 without one,"
        f" {len(HOSTILE_IDS)} state item(s) without a merchants row"
    )
