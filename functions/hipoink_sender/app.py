"""Hipoink sender: applies label jobs in order per store (FIFO message group)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    ExceptionInfo,
    FailureResponse,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.exceptions import SQSFifoMessageGroupCircuitBreakerError
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from esl_sync import runtime
from esl_sync.deadline import require_time
from esl_sync.events import LabelJobRecord
from esl_sync.observability import logger, metrics, tracer
from esl_sync.settings import settings
from esl_sync.sync.deliver import deliver, name_skipped

settings().require("database_url", "hipoink_api_base_url", "hipoink_sign")


class LabelJobProcessor(SqsFifoPartialProcessor):
    """A failed job stops only its own store's later jobs, which keeps each store in order;
    the labels of a job skipped that way get a named failure too (see
    :func:`esl_sync.sync.deliver.name_skipped`), best effort: Powertools' documented way
    to add to failure handling is to override ``failure_handler``."""

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        if exception[0] is SQSFifoMessageGroupCircuitBreakerError and isinstance(
            record, LabelJobRecord
        ):
            try:
                name_skipped(record.body, runtime.label_ledger())
            except Exception:
                logger.exception("could not name the failure of a skipped label job")
        return super().failure_handler(record, exception)


processor = LabelJobProcessor(model=LabelJobRecord, skip_group_on_error=True)
# Besides one Hipoink call (HIPOINK_TIMEOUT_SECONDS at worst): the ledger's reads and writes.
LEDGER_MARGIN_MS = 5_000


@tracer.capture_method
def record_handler(record: LabelJobRecord, lambda_context: LambdaContext) -> None:
    s = settings()
    # A job starts only if another Hipoink call still fits in this invocation; otherwise it,
    # and every job after it, goes back to the queue (its group stays in order).
    require_time(
        lambda_context,
        int(s.hipoink_timeout_seconds * 1000) + LEDGER_MARGIN_MS,
        f"label job of {record.body.merchant_id}",
    )
    deliver(
        record.body,
        runtime.label_ledger(),
        runtime.hipoink(),
        batch_size=s.hipoink_batch_size,
        block_cooldown_seconds=s.hipoink_block_cooldown_seconds,
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
