"""The poll and label queues on SQS, and their dead-letter queues."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from itertools import batched
from typing import Any

from esl_sync.messages import LabelJob, LabelMessage, NotQueued, PollRequest
from esl_sync.records import DeadLetter
from esl_sync.settings import ConfigurationError
from esl_sync.store import aws_json
from esl_sync.store.aws_json import Caller

SQS_BATCH = 10  # SendMessageBatch takes at most ten entries
SQS_MAX_BYTES = 262_144
"""What one message, and the messages of one SendMessageBatch together, may hold: SQS's
classic limit (256 KiB), which the template sets on the label queues. Newer queues may
take 1 MiB, but every region and queue takes this. A first sync's label jobs are ≈ 17 KB
each (200 labels), but names of 127 emoji or CJK characters make one job ≈ 110 KB, and
one of ``HIPOINK_BATCH_SIZE`` 1000 ≈ 500 KB: sent as they were, the poll failed, every
retry."""


class QueueSendError(NotQueued):
    """SQS refused some messages; the caller's unit of work must fail and be retried.
    ``queued`` names those it took before (see :func:`_send_all`)."""


def _send_all(sqs: Caller, url: str, entries: Sequence[dict[str, Any]]) -> None:
    """Send ``entries`` (each ``Id`` its position) ten at a time, in order. A failure once
    some are queued is a :class:`QueueSendError` whose ``queued`` are the positions SQS
    answered as taken (a call that failed is not counted: it may or may not have been);
    one before any is raised as it came."""
    queued: set[int] = set()
    for batch in _batches(entries):
        try:
            answer = sqs.call("SendMessageBatch", {"QueueUrl": url, "Entries": batch})
        except Exception as error:
            if not queued:
                raise
            lost = len(entries) - len(queued)
            raise QueueSendError(
                f"{lost} message(s) not queued: {error}", frozenset(queued)
            ) from error
        queued.update(int(entry["Id"]) for entry in answer.get("Successful", []))
        failed = answer.get("Failed", [])
        if failed:
            reasons = ", ".join(f"{f['Id']}: {f.get('Message', f['Code'])}" for f in failed)
            raise QueueSendError(
                f"{len(failed)} message(s) not queued: {reasons}", frozenset(queued)
            )


def _batches(entries: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The entries in order, in batches of at most ten and :data:`SQS_MAX_BYTES` together;
    a message too large for SQS is refused before any batch is made, so nothing is sent."""
    lengths = [len(entry["MessageBody"].encode()) for entry in entries]
    for length in lengths:
        if length > SQS_MAX_BYTES:
            raise QueueSendError(f"a message of {length} bytes; SQS takes {SQS_MAX_BYTES}")
    batch: list[dict[str, Any]] = []
    size = 0
    for entry, length in zip(entries, lengths, strict=True):
        if batch and (len(batch) == SQS_BATCH or size + length > SQS_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch


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

    def send(self, jobs: Sequence[LabelMessage]) -> None:
        if not jobs:
            return
        entries: list[dict[str, Any]] = [
            {
                "Id": str(i),
                "MessageBody": text,
                "MessageGroupId": job.merchant_id,
                "MessageDeduplicationId": uuid.uuid4().hex,
            }
            for i, (job, text) in enumerate((job, t) for job in jobs for t in _fitting(job))
        ]
        if self._sqs is None:
            self._sqs = aws_json.client("sqs")
        _send_all(self._sqs, self._url, entries)


def _fitting(job: LabelMessage) -> Iterator[str]:
    """The job as one message, or as consecutive halves (in order, the same version) until
    each fits :data:`SQS_MAX_BYTES`: the sender applies them in turn as it would the whole.
    A verify request is one small message."""
    text = job.to_json()
    if not isinstance(job, LabelJob) or len(text.encode()) <= SQS_MAX_BYTES or job.size < 2:
        yield text  # one record past the limit cannot be: _batches names it
        return
    for half in job.halves():
        yield from _fitting(half)


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
