"""A poll-queue message that is not a poll request (a hand-edited redrive, a message of
another version, garbage): refused by name, counted and acknowledged, never retried into
the poll dead-letter queue (docs/architecture.md, "A message that is not a label job or a
poll request"). Real parts: the poller's handler through the local stack, moto's SQS
queue, DynamoDB, Postgres, the Clover simulator.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devkit.catalog import gas_station_catalog
from devkit.emf import metric_sums
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync.messages import PollRequest

M = "MPREFUSE0001"
STORE = "STORE-PREFUSE"
REFUSED = "poll request refused: not a poll message"
SECRET = "SECRETMARK"  # in every hostile body: no log line may quote it


def _event(*messages: tuple[str, object]) -> dict[str, Any]:
    """A poller event of (message id, body) records, in this order (``None``: no body)."""
    template = json.loads((REPO_ROOT / "events" / "poller.json").read_text())
    records = []
    for message_id, body in messages:
        record = json.loads(json.dumps(template["Records"][0]))
        record["messageId"], record["body"] = message_id, body
        if body is None:
            del record["body"]
        records.append(record)
    return {"Records": records}


def _refusals(stack: LocalStack, since: int) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in stack.logs[since:] if REFUSED in x]
    return [x for x in lines if x.get("message") == REFUSED]


def _poll(merchant_id: str) -> str:
    return PollRequest(merchant_id=merchant_id, reason="manual").to_json()


# body, what the reason says, the merchant the line names (None: none readable)
HOSTILE: dict[str, tuple[object, str, str | None]] = {
    "not-json": (f"not json {SECRET}", "poll request: not valid JSON", None),
    "nul-raw": (f'{{"merchant_id": "{M}\x00{SECRET}"}}', "poll request: not valid JSON", None),
    "nul-escaped": (
        f'{{"merchant_id": "{M}\\u0000{SECRET}"}}',
        "poll request: merchant_id: holds NUL",
        None,
    ),
    "lone-surrogate": (
        f'{{"merchant_id": "{M}", "reason": "\\udc00{SECRET}"}}',
        "poll request: not valid JSON (a lone surrogate)",
        None,
    ),
    "256k": (
        '{"merchant_id": "' + M + '", "pad": "' + SECRET * 26_210 + '"}',
        "poll request: pad: not a field",
        M,
    ),
    "merchant-a-number": ('{"merchant_id": 5, "reason": "' + SECRET + '"}', "merchant_id", None),
    "reason-a-number": (f'{{"merchant_id": "{M}", "reason": 7}}', "poll request: reason", M),
    "requested-at-a-number": (
        f'{{"merchant_id": "{M}", "requested_at": 1e400}}',
        "poll request: requested_at",
        M,
    ),
    "reason-unknown": (
        f'{{"merchant_id": "{M}", "reason": "{SECRET}"}}',
        "poll request: reason: not one of",
        M,
    ),
    "merchant-too-long": ('{"merchant_id": "' + "M" * 65 + '"}', "poll request: merchant_id", None),
    "array": (f'["{SECRET}"]', "poll request: not a JSON object", None),
    "nested": ("[" * 300 + "]" * 300, "poll request: not valid JSON (nested too deeply)", None),
    "body-a-number": (7, "poll request: body: the SQS record has no text body", None),
    "no-body": (None, "poll request: body: the SQS record has no text body", None),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_alone_is_refused_by_name_and_acknowledged(
    stack: LocalStack, name: str
) -> None:
    """Alone in its batch: one error line (message id, the merchant if readable, the reason;
    never the body), ``PollMessagesRefused`` counted, the record acknowledged."""
    body, reason, merchant = HOSTILE[name]
    stack.add_merchant(M, "tok", STORE, items=[])
    mark = len(stack.logs)

    answer = stack.invoke("poller", _event(("garbage", body)))

    assert answer == {"batchItemFailures": []}
    (line,) = _refusals(stack, mark)
    assert line["level"] == "ERROR"
    assert line["message_id"] == "garbage"
    assert line.get("merchant_id") == merchant
    assert reason in line["error"]
    assert "\n" not in line["error"]
    assert len(line["error"]) < 200
    assert metric_sums(stack.logs[mark:])["PollMessagesRefused"] == 1
    assert all(SECRET not in x for x in stack.logs[mark:])


def test_garbage_beside_a_good_poll_is_refused_and_the_poll_runs(stack: LocalStack) -> None:
    stack.add_merchant(M, "tok", STORE, items=gas_station_catalog(3, seed=2))
    mark = len(stack.logs)

    answer = stack.invoke("poller", _event(("garbage", "not json"), ("good", _poll(M))))

    assert answer == {"batchItemFailures": []}
    (line,) = _refusals(stack, mark)
    assert line["message_id"] == "garbage"
    sums = metric_sums(stack.logs[mark:])
    assert (sums["PollMessagesRefused"], sums["Polls"], sums["ProductsChanged"]) == (1, 1, 3)


def test_garbage_on_the_real_queue_is_gone_and_never_dead_lettered(stack: LocalStack) -> None:
    """Through moto's queue: the garbage leaves the queue on its first receive, the good
    poll beside it runs; nothing reaches the poll dead-letter queue (whose alarm pages)."""
    stack.add_merchant(M, "tok", STORE, items=gas_station_catalog(3, seed=2))
    url = stack.urls["PollQueue"]
    for body in ["\x7fgarbage", '{"merchant_id": "' + M + '", "extra": 1}', _poll(M)]:
        stack.sqs.send_message(QueueUrl=url, MessageBody=body)
    mark = len(stack.logs)

    drained = stack.drain("PollQueue", "poller")

    assert (drained.records, drained.failures) == (3, 0)
    assert len(_refusals(stack, mark)) == 2
    assert metric_sums(stack.logs[mark:])["PollMessagesRefused"] == 2
    assert len(stack.products(M)) == 3
    assert stack.queue_depths()["PollQueue"] == 0
    assert stack.queue_depths()["PollDeadLetterQueue"] == 0
