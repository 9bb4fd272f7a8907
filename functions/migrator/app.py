"""Migration step of a deploy: applies the Postgres schema as a CloudFormation custom resource.

CloudFormation waits for an answer, so every invocation answers before the function's
timeout: the migration runs against a deadline (esl_sync/deploy.py), and if even the layer
cannot be imported (a broken build) the answer FAILED is sent with the standard library
alone. The answer is a PUT of JSON to the presigned S3 URL in the event (urllib here,
so that it needs nothing the import could have lost).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

try:
    from esl_sync import runtime
    from esl_sync.deploy import failed_answer, migration_answer
    from esl_sync.events import CustomResourceEvent
    from esl_sync.observability import logger

    STARTUP_ERROR: Exception | None = None
except Exception as error:  # reported to CloudFormation by every invocation
    STARTUP_ERROR = error


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if STARTUP_ERROR is not None:
        logging.getLogger().error("migration function cannot start: %r", STARTUP_ERROR)
        body = _bare_failure(event, f"the migration function cannot start: {STARTUP_ERROR!r}")
        _answer(event["ResponseURL"], body, context)
        return body
    logger.set_correlation_id(event.get("RequestId"))
    try:
        request = CustomResourceEvent.model_validate(event)
        body = migration_answer(
            request, runtime.migration_deps(), context.get_remaining_time_in_millis
        )
    except Exception as error:  # a malformed event: still answer, if it says where
        logger.exception("migration request not handled")
        body = failed_answer(_bare_failure(event, ""), error)
    _answer(event["ResponseURL"], body, context)
    return body


def _bare_failure(event: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "Status": "FAILED",
        "Reason": reason[:500],
        "PhysicalResourceId": event.get("PhysicalResourceId") or "esl-sync-schema",
        "StackId": event.get("StackId", ""),
        "RequestId": event.get("RequestId", ""),
        "LogicalResourceId": event.get("LogicalResourceId", ""),
    }


def _answer(url: str, body: dict[str, Any], context: Any) -> None:
    """PUT the answer within the time left; the presigned URL is signed for an empty
    Content-Type."""
    timeout = max(1.0, context.get_remaining_time_in_millis() / 1000 - 1)
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - CloudFormation's https URL
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        response.read()
