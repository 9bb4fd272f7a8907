"""A label-queue message that is neither a label job nor a verify request (a hand-edited
redrive, a message of another version, garbage): refused by name, acknowledged, and never
holding its merchant's message group (docs/architecture.md, "A message that is not a label
job"). Real parts: the sender's handler through the local stack, moto's FIFO queue,
Postgres, the Hipoink simulator.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync.messages import LabelJob

M = "MREFUSE00001"
STORE = "STORE-REFUSE"
OTHER = "MREFUSE00002"
OTHER_STORE = "STORE-REFUSE-2"
REFUSED = "label message refused: not a label job or verify"
SECRET = "SECRETMARK"  # in every hostile body: no log line may quote it


def _sim(stack: LocalStack) -> HipoinkSimulator:
    assert stack.hipoink is not None
    return stack.hipoink


def _job(merchant_id: str, store_code: str, pc: str, version: int = 1) -> str:
    record = {"pc": pc, "pn": "Thing", "pp": "1.00", "pi": f"ITEM{pc}"}
    return LabelJob(
        merchant_id=merchant_id, store_code=store_code, upserts=[record], version=version
    ).to_json()


def _event(*messages: tuple[str, str, str]) -> dict[str, Any]:
    """A sender event of (message id, message group, body) records, in this order."""
    template = json.loads((REPO_ROOT / "events" / "hipoink_sender.json").read_text())
    records = []
    for message_id, group, body in messages:
        record = json.loads(json.dumps(template["Records"][0]))
        record["messageId"], record["body"] = message_id, body
        record["attributes"]["MessageGroupId"] = group
        records.append(record)
    return {"Records": records}


def _refusals(stack: LocalStack, since: int) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in stack.logs[since:] if REFUSED in x]
    return [x for x in lines if x.get("message") == REFUSED]


HOSTILE = {
    "not-json": (f"not json {SECRET}", "label job: not valid JSON"),
    "nul-raw": (f'{{"merchant_id": "{M}", "store_code": "S\x00{SECRET}"}}', "not valid JSON"),
    "nul-escaped": (
        f'{{"verify": "labels", "merchant_id": "{M}", "store_code": "S\\u0000{SECRET}"}}',
        "label verify: store_code: holds NUL",
    ),
    "lone-surrogate": (
        f'{{"merchant_id": "{M}", "store_code": "S", "deletes": ["\\udc00{SECRET}"]}}',
        "label job: not valid JSON (a lone surrogate)",
    ),
    "256k": ('{"merchant_id": "' + M + '", "pad": "' + SECRET * 26_210 + '"}', "label job: pad"),
    "wrong-type": (
        f'{{"merchant_id": "{M}", "store_code": "STORE-REFUSE", "version": "7{SECRET}"}}',
        "label job: version: not an integer",
    ),
    "merchant-a-number": ('{"merchant_id": 5, "store_code": "' + SECRET + '"}', "merchant_id"),
    "array": (f'["{SECRET}"]', "label job: not a JSON object"),
    "job-merchant-nul": (
        f'{{"merchant_id": "M\\u0000{SECRET}", "store_code": "STORE-REFUSE"}}',
        "label job: merchant_id: holds NUL",
    ),
    "job-store-nul": (
        f'{{"merchant_id": "{M}", "store_code": "S\\u0000{SECRET}", "deletes": ["A"]}}',
        "label job: store_code: holds NUL",
    ),
    "verify-reason": (
        f'{{"verify": "labels", "merchant_id": "{M}", "store_code": "S", "reason": "{SECRET}"}}',
        "label verify: reason: not one of manual, sweep",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_alone_is_refused_by_name_and_acknowledged(
    stack: LocalStack, name: str
) -> None:
    """Alone in its batch: one error line (message id, group, reason; never the body),
    counted, the record acknowledged, the invocation successful."""
    body, reason = HOSTILE[name]
    stack.add_merchant(M, "tok", STORE, items=[])
    mark = len(stack.logs)

    answer = stack.invoke("hipoink_sender", _event(("garbage", M, body)))

    assert answer == {"batchItemFailures": []}
    (line,) = _refusals(stack, mark)
    assert line["level"] == "ERROR"
    assert (line["message_id"], line["message_group"]) == ("garbage", M)
    assert reason in line["error"]
    assert "\n" not in line["error"]
    assert len(line["error"]) < 200
    assert metric_sums(stack.logs[mark:])["LabelMessagesRefused"] == 1
    assert all(SECRET not in x for x in stack.logs[mark:])


def test_garbage_beside_another_stores_job_is_refused_and_the_job_delivered(
    stack: LocalStack,
) -> None:
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    stack.add_merchant(OTHER, "tok", OTHER_STORE, items=[])
    mark = len(stack.logs)

    answer = stack.invoke(
        "hipoink_sender",
        _event(("garbage", M, "not json"), ("good", OTHER, _job(OTHER, OTHER_STORE, "Y1"))),
    )

    assert answer == {"batchItemFailures": []}
    assert set(hipoink.labels(OTHER_STORE)) == {"Y1"}
    (line,) = _refusals(stack, mark)
    assert line["message_id"] == "garbage"
    assert metric_sums(stack.logs[mark:])["LabelMessagesRefused"] == 1


def test_garbage_does_not_hold_its_stores_later_jobs(stack: LocalStack) -> None:
    """The store's job behind the garbage in its message group is delivered in the same
    invocation; before, it was skipped on every receive until the garbage dead-lettered
    (5 receives, 360 s apart)."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    bad = '{"merchant_id": "' + M + '", "store_code": "' + STORE + '", "version": "7"}'

    answer = stack.invoke(
        "hipoink_sender", _event(("garbage", M, bad), ("later", M, _job(M, STORE, "X1")))
    )

    assert answer == {"batchItemFailures": []}
    assert set(hipoink.labels(STORE)) == {"X1"}
    (line,) = _refusals(stack, 0)
    assert (line["merchant_id"], line["message_group"]) == (M, M)


def test_garbage_behind_a_failed_job_of_its_store_goes_back_in_order(stack: LocalStack) -> None:
    """Skipped behind its store's failed job, the garbage goes back to the queue with it (the
    group's order), not refused out of turn; the retry delivers the job and refuses it."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    event = _event(("job", M, _job(M, STORE, "X1")), ("garbage", M, "not json"))
    hipoink.fail_next(503)

    answer = stack.invoke("hipoink_sender", event)

    retried = [{"itemIdentifier": "job"}, {"itemIdentifier": "garbage"}]
    assert answer == {"batchItemFailures": retried}
    assert _refusals(stack, 0) == []
    assert stack.invoke("hipoink_sender", event) == {"batchItemFailures": []}
    assert set(hipoink.labels(STORE)) == {"X1"}
    assert len(_refusals(stack, 0)) == 1


def test_garbage_on_the_real_queue_is_gone_and_never_dead_lettered(stack: LocalStack) -> None:
    """Through moto's FIFO queue: the garbage and the store's job behind it leave the queue on
    the first receive; nothing reaches the dead-letter queue."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    url = stack.urls["LabelQueue"]
    for n, body in enumerate(["\x7fgarbage", _job(M, STORE, "X1")]):
        stack.sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageGroupId=M, MessageDeduplicationId=f"d{n}"
        )

    drained = stack.drain("LabelQueue", "hipoink_sender")

    assert (drained.records, drained.failures) == (2, 0)
    assert set(hipoink.labels(STORE)) == {"X1"}
    assert stack.queue_depths()["LabelQueue"] == 0
    assert stack.queue_depths()["LabelDeadLetterQueue"] == 0
