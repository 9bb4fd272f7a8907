"""Onboarding: Clover's app install (OAuth v2 code flow) through to a registered merchant.

``GET /clover`` (the app's site URL) and ``GET /clover/install`` send the merchant's browser
to Clover's authorize page; ``GET /clover/oauth/callback`` takes Clover's answer. Every
answer is a small HTML page with the security headers of :mod:`esl_sync.web`; what is
unexpected (a store, a secret, KMS) is logged with its reference and answered 503. An
event API Gateway would not send (a wrong type in it) is refused with a 400 page before
it is routed.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from esl_sync import runtime
from esl_sync.events import HttpRequest, is_http_api_event
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.onboarding import (
    REPORTING_MS,
    finish_install,
    malformed,
    not_found,
    start_install,
    unavailable,
)
from esl_sync.records import DatabaseUnanswered
from esl_sync.settings import settings
from esl_sync.statement_deadline import statements_within
from esl_sync.tracing import tracer
from esl_sync.web import Page

settings().require(
    "database_url",
    "poll_queue_url",
    "state_table_name",
    "state_key_id",
    "clover_oauth_state_key",
)
app = APIGatewayHttpResolver()


@app.get("/clover")
@app.get("/clover/install")
def install() -> Response[str]:
    request = _request()
    deps = runtime.onboarding_deps()
    return _answer(
        start_install(request.raw_query, deps, reference=request.reference, host=request.host)
    )


@app.get("/clover/oauth/callback")
def callback() -> Response[str]:
    request = _request()
    return _answer(
        finish_install(request.raw_query, runtime.onboarding_deps(), reference=request.reference)
    )


def no_route(error: Exception) -> Response[str]:
    return _answer(not_found(_request().reference))


def unexpected(error: Exception) -> Response[str]:
    try:
        reference = _request().reference
    except ValueError:
        reference = "unknown"
    said = "install not handled; answered 503"
    if isinstance(error, DatabaseUnanswered):  # an outage, named: not a bug's traceback
        logger.error(said, reference=reference, error_class=type(error).__name__, error=str(error))
    else:
        logger.exception(said, reference=reference)
    metrics.add_metric(name="OnboardingErrors", unit=MetricUnit.Count, value=1)
    return _answer(unavailable(reference))


app.not_found(no_route)  # another method or path than the routes' (the decorators are untyped)
app.exception_handler(Exception)(unexpected)


def _request() -> HttpRequest:
    return HttpRequest.model_validate(app.current_event.raw_event)


def _answer(page: Page) -> Response[str]:
    return Response(
        status_code=page.status,
        content_type="text/html; charset=utf-8",
        body=page.body,
        headers=page.headers,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not is_http_api_event(event):
        page = malformed("unknown")
        return {"statusCode": page.status, "headers": page.headers, "body": page.body}
    with statements_within(lambda: context.get_remaining_time_in_millis() - REPORTING_MS):
        return app.resolve(event, context)
