"""Poller: one SQS record per merchant; each record succeeds or fails on its own."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from esl_sync import runtime
from esl_sync.events import PollRecord
from esl_sync.observability import logger, metrics, tracer
from esl_sync.settings import settings
from esl_sync.sync.poll import poll_merchant

settings().require("database_url", "label_queue_url", "state_table_name", "state_key_id")
processor = BatchProcessor(event_type=EventType.SQS, model=PollRecord)


@tracer.capture_method
def record_handler(record: PollRecord) -> None:
    poll_merchant(record.body, runtime.poll_deps())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
