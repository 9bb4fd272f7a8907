"""The migration step of a deploy: a CloudFormation custom resource that applies the schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from esl_sync.events import CustomResourceEvent
from esl_sync.observability import logger
from esl_sync.store.schema import apply_migrations

PHYSICAL_ID = "esl-sync-schema"


def run_migration_step(event: CustomResourceEvent, conninfo: Callable[[], str]) -> dict[str, Any]:
    """Apply migrations on Create/Update and answer CloudFormation; never leave it waiting.

    Delete does nothing: dropping the product store with the stack would lose data.
    ``conninfo`` is resolved inside the guard, so a missing secret is reported as FAILED.
    """
    body: dict[str, Any] = {
        "PhysicalResourceId": event.physical_resource_id or PHYSICAL_ID,
        "StackId": event.stack_id,
        "RequestId": event.request_id,
        "LogicalResourceId": event.logical_resource_id,
        "Status": "SUCCESS",
        "Data": {"Applied": ""},
    }
    try:
        if event.request_type != "Delete":
            applied = apply_migrations(conninfo())
            body["Data"] = {"Applied": ",".join(applied)}
            logger.info("migrations applied", applied=applied)
    except Exception as error:
        logger.exception("migration failed")
        body["Status"] = "FAILED"
        body["Reason"] = f"{type(error).__name__}: {error}"[:500]
    response = httpx.put(event.response_url, json=body, headers={"Content-Type": ""}, timeout=30)
    response.raise_for_status()
    return body
