"""Delivering one label job to Hipoink, exactly once per label version.

The label ledger (``label_state``) says what Hipoink already acknowledged: a record whose
label hash is acknowledged is not sent again, so duplicated SQS deliveries and repeated
polls never double-send. A batch Hipoink refuses because of a record in it is split until
the bad records are isolated; they are recorded with Hipoink's message and not retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from esl_sync.hipoink.client import HipoinkConfigError, HipoinkRecordError
from esl_sync.hipoink.records import HipoinkRecord, label_hash
from esl_sync.messages import LabelJob
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.store.interfaces import LabelAck, LabelFailure, LabelLedger


class LabelSink(Protocol):
    """The Hipoink product API (see :class:`esl_sync.hipoink.client.HipoinkClient`)."""

    def upsert(self, store_code: str, records: Sequence[HipoinkRecord]) -> None: ...

    def delete(self, store_code: str, codes: Sequence[str]) -> int: ...


@dataclass
class DeliveryOutcome:
    merchant_id: str
    store_code: str
    upserted: int = 0
    deleted: int = 0
    skipped: int = 0
    rejected: list[str] = field(default_factory=list)


def deliver(
    job: LabelJob, ledger: LabelLedger, sink: LabelSink, batch_size: int
) -> DeliveryOutcome:
    """Apply one job: upserts then deletes, each in batches of ``batch_size``.

    Retryable errors propagate (the message fails alone and SQS retries it); progress made
    before them is acknowledged, so the retry sends only what is left.
    """
    outcome = DeliveryOutcome(job.merchant_id, job.store_code)
    acknowledged = ledger.acknowledged(
        job.merchant_id, [r["pc"] for r in job.upserts] + list(job.deletes)
    )
    upserts = [r for r in job.upserts if acknowledged.get(r["pc"], "") != label_hash(r)]
    deletes = [pc for pc in job.deletes if not (pc in acknowledged and acknowledged[pc] is None)]
    outcome.skipped = job.size - len(upserts) - len(deletes)
    try:
        for start in range(0, len(upserts), batch_size):
            _upsert(upserts[start : start + batch_size], job, ledger, sink, outcome)
        for start in range(0, len(deletes), batch_size):
            codes = deletes[start : start + batch_size]
            sink.delete(job.store_code, codes)
            ledger.acknowledge(job.merchant_id, [LabelAck(pc, None) for pc in codes])
            outcome.deleted += len(codes)
    except HipoinkConfigError as error:
        pcs = [r["pc"] for r in upserts] + deletes
        ledger.record_failures(
            job.merchant_id, [LabelFailure(pc, "configuration", str(error)) for pc in pcs]
        )
        metrics.add_metric(name="HipoinkConfigErrors", unit=MetricUnit.Count, value=1)
        raise
    finally:
        _report(outcome)
    return outcome


def _upsert(
    records: list[HipoinkRecord],
    job: LabelJob,
    ledger: LabelLedger,
    sink: LabelSink,
    outcome: DeliveryOutcome,
) -> None:
    try:
        sink.upsert(job.store_code, records)
    except HipoinkRecordError as error:
        if len(records) > 1:
            middle = len(records) // 2
            _upsert(records[:middle], job, ledger, sink, outcome)
            _upsert(records[middle:], job, ledger, sink, outcome)
            return
        pc = records[0]["pc"]
        ledger.record_failures(job.merchant_id, [LabelFailure(pc, "bad_record", str(error))])
        outcome.rejected.append(pc)
        return
    ledger.acknowledge(job.merchant_id, [LabelAck(r["pc"], label_hash(r)) for r in records])
    outcome.upserted += len(records)


def _report(outcome: DeliveryOutcome) -> None:
    logger.info(
        "label job delivered",
        merchant_id=outcome.merchant_id,
        store_code=outcome.store_code,
        upserted=outcome.upserted,
        deleted=outcome.deleted,
        skipped=outcome.skipped,
        rejected=outcome.rejected,
    )
    metrics.add_metric(name="LabelsUpserted", unit=MetricUnit.Count, value=outcome.upserted)
    metrics.add_metric(name="LabelsDeleted", unit=MetricUnit.Count, value=outcome.deleted)
    metrics.add_metric(name="LabelsRejected", unit=MetricUnit.Count, value=len(outcome.rejected))
