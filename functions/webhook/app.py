"""Webhook: Clover's inventory notifications as hints that bring a merchant's poll forward.

Every answer is one of the documented ones (200 handshake, 202 accepted, 400/401/413 with
a reason), whatever the body holds. Anything unexpected (a store or a queue down, a
secret that cannot be read) is logged and answered 503, never 500: the notification was
only a hint, the scheduled poll still covers the change, and if Clover does retry a
non-2xx delivery, a retry is what a temporary failure deserves. An event API Gateway would
not send (a wrong type in it) is refused with a 400 before it is routed.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from esl_sync import runtime
from esl_sync.events import HttpRequest, is_http_api_event
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.records import DatabaseUnanswered
from esl_sync.settings import settings
from esl_sync.statement_deadline import statements_within
from esl_sync.tracing import tracer
from esl_sync.webhooks import receive_webhook

settings().require("database_url", "poll_queue_url", "state_table_name", "clover_webhook_auth")
app = APIGatewayHttpResolver()
POSTGRES_RESERVE_MS = 10_000
"""Of the function's 15 s, kept from Postgres: its reads (the merchants a delivery names)
end 5 s into the invocation, answered or not (``DatabaseUnanswered``), so a silent server
holds each webhook, and its environment, 5 s at most (the README's connection budget);
the rest is for the DynamoDB writes and the poll queue's send of a delivery naming many
merchants (``WEBHOOK_WRITERS`` at a time)."""


@app.post("/webhooks/clover/inventory")
def inventory() -> Response[str]:
    request = HttpRequest.model_validate(app.current_event.raw_event)
    try:
        body = request.raw_body
    except ValueError:
        return _answer(400, "body is not valid base64")
    result = receive_webhook(
        body, request.header("X-Clover-Auth"), runtime.webhook_deps(), source_ip=request.source_ip
    )
    return _answer(result.status, result.message)


def unexpected(error: Exception) -> Response[str]:
    said = "webhook not handled; answered 503 (the scheduled poll covers it)"
    if isinstance(error, DatabaseUnanswered):  # an outage, named: not a bug's traceback
        logger.error(said, error_class=type(error).__name__, error=str(error))
    else:
        logger.exception(said)
    metrics.add_metric(name="WebhookErrors", unit=MetricUnit.Count, value=1)
    return _answer(503, "temporarily unavailable")


app.exception_handler(Exception)(unexpected)  # (the decorator form is untyped)


def _answer(status: int, message: str) -> Response[str]:
    return Response(
        status_code=status, content_type="application/json", body=json.dumps({"message": message})
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not is_http_api_event(event):
        # Counted like any refused request (and so never an invocation without metrics,
        # which Powertools would warn about on every such event).
        metrics.add_metric(name="WebhookRequests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="WebhookRejected", unit=MetricUnit.Count, value=1)
        return {
            "statusCode": 400,
            "headers": {"Content-Type": "application/json"},
            "body": _answer(400, "not an HTTP API request").body,
        }
    with statements_within(lambda: context.get_remaining_time_in_millis() - POSTGRES_RESERVE_MS):
        return app.resolve(event, context)
