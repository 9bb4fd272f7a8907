"""Poller: one SQS record per merchant; each record succeeds or fails on its own."""

from __future__ import annotations

from typing import Any

from esl_sync import runtime
from esl_sync.observability import logger, metrics, tracer
from esl_sync.settings import settings
from esl_sync.sync.poll_batch import poll_batch

settings().require("database_url", "label_queue_url", "state_table_name", "state_key_id")
tracer.patch(("httpx",))  # Clover


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    return poll_batch(
        event.get("Records", []),
        runtime.poll_deps(),
        workers=settings().clover_instance_in_flight,
    )
