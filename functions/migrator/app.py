"""Migration step of a deploy: applies the Postgres schema as a custom resource."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from esl_sync import runtime
from esl_sync.deploy import run_migration_step
from esl_sync.events import CustomResourceEvent
from esl_sync.observability import logger


@logger.inject_lambda_context
@event_parser(model=CustomResourceEvent)
def lambda_handler(event: CustomResourceEvent, context: LambdaContext) -> dict[str, Any]:
    return run_migration_step(event, runtime.database_url)
