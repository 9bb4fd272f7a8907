"""The poll and label queues on SQS, and their dead-letter queues."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from itertools import batched
from typing import Any

from esl_sync.messages import LabelJob, PollRequest
from esl_sync.records import DeadLetter
from esl_sync.settings import ConfigurationError
from esl_sync.store import aws_json
from esl_sync.store.aws_json import Caller

SQS_BATCH = 10  # SendMessageBatch takes at most ten entries


class QueueSendError(RuntimeError):
    """SQS refused some messages; the caller's unit of work must fail and be retried."""


def _send_all(sqs: Caller, url: str, entries: Sequence[dict[str, Any]]) -> None:
    for batch in batched(entries, SQS_BATCH):
        answer = sqs.call("SendMessageBatch", {"QueueUrl": url, "Entries": list(batch)})
        failed = answer.get("Failed", [])
        if failed:
            reasons = ", ".join(f"{f['Id']}: {f.get('Message', f['Code'])}" for f in failed)
            raise QueueSendError(f"{len(failed)} message(s) not queued: {reasons}")


class SqsPollQueue:
    def __init__(self, url: str, sqs: Caller | None = None) -> None:
        self._url = url
        self._sqs: Caller = sqs or aws_json.client("sqs")

    def send(self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None) -> None:
        entries: list[dict[str, Any]] = [
            {
                "Id": str(i),
                "MessageBody": request.to_json(),
                "DelaySeconds": delays[i] if delays else 0,
            }
            for i, request in enumerate(requests)
        ]
        _send_all(self._sqs, self._url, entries)


class SqsLabelQueue:
    """A FIFO queue: one message group per merchant keeps each store's jobs in order.

    Every job gets a fresh deduplication id: content-based deduplication would drop a
    price that changes A → B → A within five minutes. Replays are made harmless by the
    label ledger instead (a label hash already acknowledged is not sent again).
    """

    def __init__(self, url: str, sqs: Caller | None = None) -> None:
        self._url = url
        self._sqs = sqs  # built at the first job: most polls send none

    def send(self, jobs: Sequence[LabelJob]) -> None:
        if not jobs:
            return
        entries: list[dict[str, Any]] = [
            {
                "Id": str(i),
                "MessageBody": job.to_json(),
                "MessageGroupId": job.merchant_id,
                "MessageDeduplicationId": uuid.uuid4().hex,
            }
            for i, job in enumerate(jobs)
        ]
        if self._sqs is None:
            self._sqs = aws_json.client("sqs")
        _send_all(self._sqs, self._url, entries)


class SqsDeadLetterQueue:
    """The dead-letter queue of ``source_url``, found through the source's RedrivePolicy.

    Messages go back to a FIFO source in their message group with a fresh deduplication
    id (the original one may still be remembered by the queue).
    """

    def __init__(self, source_url: str, sqs: Caller | None = None) -> None:
        self._sqs: Caller = sqs or aws_json.client("sqs")
        self._source_url = source_url
        self._fifo = source_url.endswith(".fifo")
        self.url = self._dead_letter_url()

    def _dead_letter_url(self) -> str:
        attributes = self._sqs.call(
            "GetQueueAttributes",
            {"QueueUrl": self._source_url, "AttributeNames": ["RedrivePolicy"]},
        ).get("Attributes", {})
        policy = attributes.get("RedrivePolicy")
        if not policy:
            raise ConfigurationError(f"queue {self._source_url} has no dead-letter queue")
        arn = json.loads(policy)["deadLetterTargetArn"]
        account, name = arn.split(":")[4:6]
        found = self._sqs.call(
            "GetQueueUrl", {"QueueName": name, "QueueOwnerAWSAccountId": account}
        )
        return str(found["QueueUrl"])

    def receive(self) -> list[DeadLetter]:
        messages = self._sqs.call(
            "ReceiveMessage",
            {
                "QueueUrl": self.url,
                "MaxNumberOfMessages": SQS_BATCH,
                "MessageSystemAttributeNames": ["MessageGroupId"],
                "WaitTimeSeconds": 0,
            },
        ).get("Messages", [])
        return [
            DeadLetter(
                body=m["Body"],
                receipt_handle=m["ReceiptHandle"],
                group_id=m.get("Attributes", {}).get("MessageGroupId"),
            )
            for m in messages
        ]

    def send_back(self, letters: Sequence[DeadLetter]) -> None:
        entries: list[dict[str, Any]] = []
        for i, letter in enumerate(letters):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": letter.body}
            if self._fifo:
                if letter.group_id is None:
                    raise QueueSendError("a message of a FIFO dead-letter queue has no group")
                entry["MessageGroupId"] = letter.group_id
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
            entries.append(entry)
        _send_all(self._sqs, self._source_url, entries)

    def delete(self, letters: Sequence[DeadLetter]) -> None:
        for batch in batched(letters, SQS_BATCH):
            answer = self._sqs.call(
                "DeleteMessageBatch",
                {
                    "QueueUrl": self.url,
                    "Entries": [
                        {"Id": str(i), "ReceiptHandle": letter.receipt_handle}
                        for i, letter in enumerate(batch)
                    ],
                },
            )
            if answer.get("Failed"):
                raise QueueSendError(f"{len(answer['Failed'])} message(s) not deleted")
