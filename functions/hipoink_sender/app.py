"""Hipoink sender: applies label jobs in order per store (FIFO message group), and verifies
a store's labels against Hipoink where a verify request comes in that order."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from esl_sync import runtime
from esl_sync.events import LabelJobRecord, RefusedLabelMessage
from esl_sync.messages import LabelVerify
from esl_sync.observability import logger, metrics
from esl_sync.settings import settings
from esl_sync.statement_deadline import statements_within
from esl_sync.sync.sender import (
    REPORTING_MS,
    LabelJobProcessor,
    refuse_label_message,
    send_label_job,
    verify_store_labels,
)
from esl_sync.tracing import tracer

settings().require("database_url", "hipoink_api_base_url", "hipoink_sign")
tracer.patch(("httpx",))  # Hipoink
processor = LabelJobProcessor(runtime.delivery_deps)


@tracer.capture_method
def record_handler(record: LabelJobRecord, lambda_context: LambdaContext) -> None:
    if isinstance(record.body, RefusedLabelMessage):
        refuse_label_message(record)
    elif isinstance(record.body, LabelVerify):
        verify_store_labels(record.body, lambda_context, runtime.verify_deps())
    else:
        send_label_job(record.body, lambda_context, runtime.delivery_deps())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    with statements_within(lambda: context.get_remaining_time_in_millis() - REPORTING_MS):
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
