"""The X-Ray SDK's tracer (Powertools), for every function but the poller.

Importing this module loads the X-Ray SDK and makes every AWS call a subsegment of the
function's trace (an observer of :mod:`esl_sync.aws_observers`, named and annotated as the
SDK's botocore patch names them: the service, namespace ``aws``, the operation, region,
table or queue, the HTTP status and the error); the functions that call Clover or Hipoink
patch httpx too (``tracer.patch(("httpx",))``), so the others never load it. Nothing is
patched on import: patching all it knows would load botocore (which no function uses) and
patch what none uses (sqlite3), and trace the AWS requests twice (http.client under them);
its psycopg patch needs psycopg_pool, absent here.

The poller does not import it: it is traced by Lambda's active tracing alone (its
invocations, initialization and errors, linked to the SQS message that started them), which
costs it nothing. It is the function that starts most often and makes the most calls: the
SDK's import and patches were ≈ 10 ms of its cold start (A/B over alternating fresh
processes: 461 → 449 ms, median of 17 each, on a loaded machine; within the noise in a
second run), and with Powertools' settings every closed subsegment is a UDP message to the
daemon, so a poll paid for one per AWS or Clover call. What operators lose: the poller's
traces have no subsegment per call (README, "Operations").
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Tracer

from esl_sync import aws_observers
from esl_sync.observability import SERVICE

tracer = Tracer(service=SERVICE, auto_patch=False)


def aws_subsegment(service: str, operation: str, params: Mapping[str, Any]) -> aws_observers.Finish:
    """Open the call's subsegment; what closes it with the outcome."""
    recorder: Any = tracer.provider  # the X-Ray SDK's recorder
    subsegment = recorder.begin_subsegment(service, "aws")
    meta: dict[str, Any] = {"operation": operation, "region": os.environ.get("AWS_REGION")}
    for param, key in (("TableName", "table_name"), ("QueueUrl", "queue_url")):
        if isinstance(params.get(param), str):
            meta[key] = params[param]

    def finish(error: BaseException | None) -> None:
        if subsegment is None:
            return
        status = 200 if error is None else getattr(error, "status", 0)  # AwsError's (0: none)
        if status:
            subsegment.put_http_meta("status", status)
        if error is not None:
            stack = traceback.extract_stack(limit=recorder.max_trace_back)
            subsegment.add_exception(error, stack, remote=bool(status))
        subsegment.set_aws(meta)
        recorder.end_subsegment()

    return finish


if not tracer.disabled:
    aws_observers.observe(aws_subsegment)

__all__ = ["tracer"]
