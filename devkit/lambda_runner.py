"""Running the real handlers in this process the way Lambda runs them.

Used by the local stack and by ``esl-sync cycle``: handlers are imported from
``functions/<name>/app.py`` under their own module names, called with a Lambda-like
context, and fed from SQS like an event source mapping (batches, partial batch failures
made visible again, redrive to the dead-letter queue by the queue's own policy).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import sys
import traceback
import uuid
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from devkit.aws_calls import running
from devkit.template import REPO_ROOT

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

FUNCTIONS = {
    "dispatcher": "DispatcherFunction",
    "poller": "PollerFunction",
    "hipoink_sender": "HipoinkSenderFunction",
    "migrator": "MigrationFunction",
    "webhook": "WebhookFunction",
    "onboarding": "OnboardingFunction",
}
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LambdaContext:
    """Enough of Lambda's context object for Powertools and the handlers' deadlines.

    ``remaining`` stands in for the clock: by default the whole ``timeout_ms`` is always
    left; a test gives a function to make time run out (say, per Hipoink call made)."""

    function_name: str
    region: str = "us-east-1"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_ms: int = 300_000
    function_version: str = "$LATEST"
    remaining: Callable[[], int] | None = None

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining() if self.remaining is not None else self.timeout_ms


ContextFactory = Callable[[str], LambdaContext]
"""Builds the context of one invocation from the function's logical id."""


@dataclass
class DrainResult:
    """What delivering one queue to its function did."""

    invocations: int = 0
    records: int = 0
    failures: int = 0


def load_handler(name: str) -> Handler:
    """Import ``functions/<name>/app.py`` under its own module name, once per process."""
    module_name = f"esl_sync_function_{name}"
    module: ModuleType | None = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            module_name, REPO_ROOT / "functions" / name / "app.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    handler: Handler = module.lambda_handler
    return handler


class FunctionRunner:
    """Invokes handlers and drains queues into them; keeps what they logged in ``logs``."""

    def __init__(self, sqs: SQSClient, region: str = "us-east-1") -> None:
        self._sqs = sqs
        self._region = region
        self._arns: dict[str, str] = {}  # a queue's ARN never changes: one lookup each
        self.logs: list[str] = []
        self.runtime_errors: list[str] = []  # what Lambda's runtime logs of an uncaught error
        self._started: set[str] = set()
        self._log_keys: dict[str, dict[str, Any]] = {}  # each function's logger keys

    def invoke(
        self, function: str, event: dict[str, Any], *, context: ContextFactory | None = None
    ) -> dict[str, Any]:
        """Call one handler, capturing its log lines and EMF metrics instead of printing them,
        and owning the AWS calls it makes (devkit/aws_calls.py)."""
        from esl_sync import runtime
        from esl_sync.observability import logger

        handler = load_handler(function)
        logical_id = FUNCTIONS[function]
        if logical_id not in self._started:  # its own "process": it reads its secrets itself
            self._started.add(logical_id)
            runtime.forget_secret_state()
        lambda_context = (context or self._context)(logical_id)
        buffer = io.StringIO()
        streams = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
        previous = [h.setStream(buffer) for h in streams]
        # The functions share this process's one Logger, whose appended keys (the HTTP
        # functions' correlation_id) stay on every later line; in Lambda each function is a
        # process of its own: each gets its own keys here, kept between its invocations.
        formatter: Any = logger.registered_formatter
        outside = formatter.log_format
        formatter.log_format = self._log_keys.setdefault(logical_id, dict(outside))
        try:
            with redirect_stdout(buffer), running(logical_id):
                return handler(event, lambda_context)
        except Exception as error:
            # Lambda's runtime logs an error the handler let out, message and stack trace,
            # to the function's log group: kept apart from the handler's own lines.
            self.runtime_errors.append(
                f"[ERROR] {type(error).__name__}: {error}\n{traceback.format_exc()}"
            )
            raise
        finally:
            self._log_keys[logical_id] = formatter.log_format
            formatter.log_format = outside
            for stream_handler, stream in zip(streams, previous, strict=True):
                stream_handler.setStream(stream)
            self.logs.extend(line for line in buffer.getvalue().splitlines() if line)

    def _context(self, logical_id: str) -> LambdaContext:
        return LambdaContext(logical_id, self._region)

    def drain(
        self,
        queue_url: str,
        function: str,
        *,
        batch_size: int = 10,
        context: ContextFactory | None = None,
    ) -> DrainResult:
        """Deliver a queue to its function until it is empty, like an event source mapping.

        Failed records become visible again at once (rather than after the visibility
        timeout), so retries and the redrive to the dead-letter queue happen in one call.
        """
        result = DrainResult()
        arn = self._arns.get(queue_url)
        if arn is None:
            arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            self._arns[queue_url] = arn
        for _ in range(10_000):
            messages = self._sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=batch_size,
                MessageSystemAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not messages:
                return result
            event = {"Records": [self._lambda_record(m, arn) for m in messages]}
            try:
                answer = self.invoke(function, event, context=context)
                failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            except Exception:  # the whole invocation failed: every record is retried
                failed = {m["MessageId"] for m in messages}
            result.invocations += 1
            result.records += len(messages)
            result.failures += len(failed)
            for message in messages:
                if message["MessageId"] in failed:
                    self._sqs.change_message_visibility(
                        QueueUrl=queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=0,
                    )
                else:
                    self._sqs.delete_message(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
        raise RuntimeError(f"{queue_url} did not drain")

    def _lambda_record(self, message: MessageTypeDef, arn: str) -> dict[str, Any]:
        """An SQS message as Lambda hands it to a function."""
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": self._region,
        }
