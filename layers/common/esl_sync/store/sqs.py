"""The poll and label queues on SQS."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import boto3

from esl_sync.messages import LabelJob, PollRequest

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH = 10  # SendMessageBatch takes at most ten entries


class QueueSendError(RuntimeError):
    """SQS refused some messages; the caller's unit of work must fail and be retried."""


def _send_all(
    sqs: SQSClient, url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef]
) -> None:
    for start in range(0, len(entries), SQS_BATCH):
        answer = sqs.send_message_batch(QueueUrl=url, Entries=list(entries[start : start + 10]))
        failed = answer.get("Failed", [])
        if failed:
            reasons = ", ".join(f"{f['Id']}: {f.get('Message', f['Code'])}" for f in failed)
            raise QueueSendError(f"{len(failed)} message(s) not queued: {reasons}")


class SqsPollQueue:
    def __init__(self, url: str, sqs: SQSClient | None = None) -> None:
        self._url = url
        self._sqs = sqs or boto3.client("sqs")

    def send(self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None) -> None:
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(i),
                "MessageBody": request.model_dump_json(),
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

    def __init__(self, url: str, sqs: SQSClient | None = None) -> None:
        self._url = url
        self._sqs = sqs or boto3.client("sqs")

    def send(self, jobs: Sequence[LabelJob]) -> None:
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(i),
                "MessageBody": job.model_dump_json(),
                "MessageGroupId": job.merchant_id,
                "MessageDeduplicationId": uuid.uuid4().hex,
            }
            for i, job in enumerate(jobs)
        ]
        _send_all(self._sqs, self._url, entries)
