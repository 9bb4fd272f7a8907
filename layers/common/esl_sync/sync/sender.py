"""The Hipoink sender's batch: label jobs in order per store, each only if it can finish.

SQS delivers a batch of FIFO messages; a failed job must stop only its own store's later
jobs (their message group), which keeps each store's labels in order. Powertools'
:class:`SqsFifoPartialProcessor` with ``skip_group_on_error`` does that; the labels of a
job skipped that way get a named failure too (:func:`esl_sync.sync.deliver.name_skipped`),
so every label of a dead-lettered job carries one. A job starts only while one more
Hipoink call still fits in the invocation; otherwise it, and every job after it, goes back
to the queue whole (:mod:`esl_sync.deadline`), its labels named too: a job behind slow
jobs of other stores on each of its receives is dead-lettered unsent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    ExceptionInfo,
    FailureResponse,
    SqsFifoPartialProcessor,
)
from aws_lambda_powertools.utilities.batch.exceptions import SQSFifoMessageGroupCircuitBreakerError

from esl_sync.deadline import OutOfTime, require_time
from esl_sync.events import LabelJobRecord, RefusedLabelMessage
from esl_sync.messages import LabelJob, LabelVerify
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import RemainingTime
from esl_sync.records import TransientConflict
from esl_sync.sync.deliver import (
    RETRIED,
    DeliveryDeps,
    DeliveryOutcome,
    deliver,
    name_skipped,
)
from esl_sync.sync.verify import VerifyDeps, VerifyOutcome, verify_labels, verify_result
from esl_sync.verify_ports import VerifyLedger

LEDGER_MARGIN_MS = 5_000
"""Besides one Hipoink call (``HIPOINK_TIMEOUT_SECONDS`` at worst): the ledger's reads and
writes."""
NAMING_MS = 1_000
"""What naming the failure of a job not started takes (a ledger read and a write); with
less left, the job goes back unnamed (a later receive names it)."""
REPORTING_MS = 1_000
"""What the batch needs after a ledger statement Postgres did not answer (its lines, the
partial batch answer): no statement of the sender waits past the invocation's remaining
time less this (:mod:`esl_sync.statement_deadline`); the job fails as
``DatabaseUnanswered``, the sender's own failure."""


class LabelJobProcessor(SqsFifoPartialProcessor):
    """A failed job stops only its own store's later jobs; a job skipped that way has the
    failure named on its labels, best effort: Powertools' documented way to add to failure
    handling is to override ``failure_handler``. ``deps`` is called only then.

    A batch whose every job failed by name (:data:`~esl_sync.sync.deliver.RETRIED`: Hipoink
    unavailable or slow, too little time, contention in the ledger's Postgres
    (``TransientConflict``, counted as ``TransientConflicts``); or skipped behind such a
    job) answers them all,
    which SQS retries, rather than raising: one store's 503 is field input, not a failed
    invocation (Lambda's ``Errors``, an alarm). Any other failure (the sender's own parts:
    the ledger's Postgres, the sign's secret, a bug) still makes a batch that failed whole
    raise (docs/architecture.md, "A batch that failed whole"). A message that is neither a
    job nor a verify never fails: it is refused by name and acknowledged
    (:func:`refuse_label_message`)."""

    def __init__(self, deps: Callable[[], DeliveryDeps]) -> None:
        super().__init__(model=LabelJobRecord, skip_group_on_error=True)
        self._deps = deps

    def _prepare(self) -> None:
        super()._prepare()  # type: ignore[no-untyped-call]  # Powertools leaves it untyped
        self.raise_on_entire_batch_failure = False  # until a failure not named (below)

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        skipped = exception[0] is SQSFifoMessageGroupCircuitBreakerError
        if skipped and isinstance(record, LabelJobRecord) and isinstance(record.body, LabelJob):
            try:
                name_skipped(record.body, self._deps().ledger)
            except Exception:
                logger.exception("could not name the failure of a skipped label job")
        elif not skipped and not isinstance(exception[1], RETRIED):
            self.raise_on_entire_batch_failure = True
        if isinstance(exception[1], TransientConflict):  # retried, no page: counted
            metrics.add_metric(name="TransientConflicts", unit=MetricUnit.Count, value=1)
        return super().failure_handler(record, exception)


def refuse_label_message(record: LabelJobRecord) -> None:
    """A label queue message that is neither a job nor a verify request, refused by name and
    acknowledged (docs/architecture.md, "A message that is not a label job"): one error line
    (its message id, message group, the merchant its body names if readable, the refusal's
    reason; never the body) and ``LabelMessagesRefused``. Retried, it would fail the same way
    on every receive and hold its merchant's later jobs behind it until the dead-letter
    queue; whatever labels it meant are stale in the ledger, which the poll's heal repairs."""
    body = record.body
    assert isinstance(body, RefusedLabelMessage)
    logger.error(
        "label message refused: not a label job or verify",
        message_id=record.messageId,
        message_group=record.attributes.MessageGroupId,
        merchant_id=body.merchant_id,
        error=body.reason,
        receive_count=record.attributes.ApproximateReceiveCount,
    )
    metrics.add_metric(name="LabelMessagesRefused", unit=MetricUnit.Count, value=1)


def send_label_job(job: LabelJob, context: RemainingTime, deps: DeliveryDeps) -> DeliveryOutcome:
    """Deliver one job if another Hipoink call still fits in this invocation; otherwise
    raise :class:`esl_sync.deadline.OutOfTime` (the job goes back to its queue)."""
    needed_ms = int(deps.settings.hipoink_timeout_seconds * 1000) + LEDGER_MARGIN_MS
    what = f"label job of {job.merchant_id}"
    try:
        require_time(context, needed_ms, what)
    except OutOfTime as error:
        # Its labels are named as a failed job's are: refused on every receive (behind
        # slow jobs of other stores), it is dead-lettered, and without a failure nothing
        # said why its labels are stale, nor did the poll's heal retry them. Counted too:
        # jobs going back for time say the sender's Timeout or batch is too tight (and an
        # invocation that started none still has a metric to publish).
        metrics.add_metric(name="LabelJobsNotStarted", unit=MetricUnit.Count, value=1)
        if context.get_remaining_time_in_millis() >= NAMING_MS:
            try:
                name_skipped(job, deps.ledger, str(error))
            except Exception:
                logger.exception("could not name the failure of a label job not started")
        raise
    return deliver(job, deps, before_call=lambda: require_time(context, needed_ms, what))


def verify_store_labels(
    request: LabelVerify, context: RemainingTime, deps: VerifyDeps
) -> VerifyOutcome:
    """Verify the merchant's labels (:mod:`esl_sync.sync.verify`), each page only while
    another Hipoink call still fits in this invocation. Never raises for Hipoink or for
    time: a verify that cannot finish marks nothing and is not retried (a retry would hold
    the store's label jobs behind it in its message group); the next one tries again. What
    it found is then recorded (:func:`record_verify`)."""
    needed_ms = int(deps.settings.hipoink_timeout_seconds * 1000) + LEDGER_MARGIN_MS
    what = f"label verify of {request.merchant_id}"
    outcome = verify_labels(
        request, deps, before_call=lambda: require_time(context, needed_ms, what)
    )
    record_verify(outcome, deps.ledger)
    return outcome


def record_verify(outcome: VerifyOutcome, ledger: VerifyLedger) -> None:
    """Record what the verify found as the merchant's last verify (``esl-sync status``),
    best effort: what it marked stands, and a failure to record is one named error line,
    never the verify's or the batch's failure (a retry would verify the store again, and
    hold its label jobs behind it)."""
    try:
        ledger.record_verify(verify_result(outcome))
    except Exception:
        logger.exception(
            "label verify not recorded",
            merchant_id=outcome.merchant_id,
            store_code=outcome.store_code,
        )
