"""Which AWS API actions each function's handler calls, on which resources.

The local stack attaches an :class:`AwsCallRecorder` to the library's AWS calls
(``esl_sync.store.aws_json.observe``, which also sees the operator CLI's botocore calls):
it is told of each call before it is sent, and the function the local stack is running at
that moment (``running()``, set by the function runner) owns it. Calls made while no
handler runs (the stack's own setup, its event-source emulation, test code) belong to
nobody and are not recorded.

A call is recorded as its IAM action (``sqs:SendMessageBatch`` is authorized as
``sqs:SendMessage``), the template's logical id of its resource (or ``env:NAME`` for a
secret, by the environment variable that names it), and for DynamoDB the attribute names
the request touches (what an IAM ``dynamodb:Attributes`` condition sees).
Every recorded call also lands in ``SESSION_CALLS``, the union over the process (the test
session compares it with ``tests/infra/aws_calls.json``; see tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esl_sync import aws_observers

_RUNNING: ContextVar[str | None] = ContextVar("esl_sync_running_function", default=None)
_UNRECORDED: ContextVar[bool] = ContextVar("esl_sync_unrecorded", default=False)
OPERATOR = "Operator"
"""Who owns the calls of an ``esl-sync`` command (deploy/iam/operator-policy.json)."""

# Batch APIs are authorized as their single-message action.
_AUTHORIZED_AS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_EXPRESSIONS = (
    "UpdateExpression",
    "ConditionExpression",
    "ProjectionExpression",
    "KeyConditionExpression",
    "FilterExpression",
)
_NOT_ATTRIBUTES = {
    "SET",
    "REMOVE",
    "ADD",
    "DELETE",
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
    "if_not_exists",
    "list_append",
}


@dataclass(frozen=True, order=True)
class AwsCall:
    function: str  # the template's logical id, e.g. "PollerFunction"
    action: str  # e.g. "sqs:SendMessage"
    resource: str  # e.g. "PollQueue", "env:DATABASE_URL_SECRET_ARN"
    attributes: tuple[str, ...] = ()  # DynamoDB attribute names, sorted


SESSION_CALLS: set[AwsCall] = set()


@contextmanager
def running(function: str) -> Iterator[None]:
    """Attribute the AWS calls made in this context to ``function`` (a logical id)."""
    token = _RUNNING.set(function)
    try:
        yield
    finally:
        _RUNNING.reset(token)


@contextmanager
def unrecorded() -> Iterator[None]:
    """Record nothing in this context: for tests that point the code at resources the
    stack does not have (a deleted table, an unknown key) to see it fail by name."""
    token = _UNRECORDED.set(True)
    try:
        yield
    finally:
        _UNRECORDED.reset(token)


class AwsCallRecorder:
    """Records the calls of the handlers; ``resource_of(service, params)`` names resources."""

    def __init__(self, resource_of: Callable[[str, Mapping[str, Any]], list[str]]) -> None:
        self._resource_of = resource_of
        self.calls: set[AwsCall] = set()
        self.counts: Counter[str] = Counter()  # calls by action ("kms:Encrypt"), all functions

    def attach(self) -> None:
        aws_observers.observe(self._record)

    def detach(self) -> None:
        aws_observers.unobserve(self._record)

    def _record(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        function = _RUNNING.get()
        if function is None or _UNRECORDED.get():
            return
        action = f"{service}:{_AUTHORIZED_AS.get(operation, operation)}"
        self.counts[action] += 1
        attributes = tuple(sorted(dynamodb_attributes(params))) if service == "dynamodb" else ()
        for resource in self._resource_of(service, params):
            call = AwsCall(function, action, resource, attributes)
            self.calls.add(call)
            SESSION_CALLS.add(call)


class AwsCallCounter:
    """Counts the calls each function makes, by IAM-style action (``dynamodb:UpdateItem``):
    what the benchmark divides by the polls of a phase. Calls made outside any function,
    and in ``unrecorded()`` code, are not counted, as the recorder does not record them."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()  # threads of one invocation count into one Counter

    def attach(self) -> None:
        aws_observers.observe(self._count)

    def detach(self) -> None:
        aws_observers.unobserve(self._count)

    def snapshot(self, function: str) -> Counter[str]:
        """The counts of ``function`` so far, by action."""
        with self._lock:
            return Counter({a: n for (f, a), n in self.counts.items() if f == function})

    def _count(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        function = _RUNNING.get()
        if function is None or _UNRECORDED.get():
            return
        action = f"{service}:{operation}"
        with self._lock:
            self.counts[(function, action)] += 1


def dynamodb_attributes(params: Mapping[str, Any]) -> set[str]:
    """Attribute names a DynamoDB request names: its key, its item, its expressions."""
    names: set[str] = set(params.get("Key", {})) | set(params.get("Item", {}))
    placeholders = params.get("ExpressionAttributeNames", {})
    requests = [params, *params.get("RequestItems", {}).values()]
    for request in requests:
        for keys in request.get("Keys", []):
            names |= set(keys)
        for field in _EXPRESSIONS:
            expression = re.sub(r":\w+", " ", request.get(field, ""))
            # Only a path's first element is an attribute (IAM's dynamodb:Attributes sees
            # top-level names): ``#slot.#n`` names ``#slot``, not ``#n``.
            for token in re.findall(r"(?<![.\w#])(#\w+|[A-Za-z_]\w*)", expression):
                if token.startswith("#"):
                    names.add(request.get("ExpressionAttributeNames", placeholders)[token])
                elif token not in _NOT_ATTRIBUTES:
                    names.add(token)
    return names


# -- the committed record (tests/infra/aws_calls.json) -------------------------------------

Record = dict[str, dict[str, dict[str, list[str]]]]
"""``{function: {action: {resource: [attributes]}}}``, sorted: the file's shape."""


def as_record(calls: set[AwsCall]) -> Record:
    record: Record = {}
    for call in sorted(calls):
        attributes = record.setdefault(call.function, {}).setdefault(call.action, {})
        merged = set(attributes.get(call.resource, [])) | set(call.attributes)
        attributes[call.resource] = sorted(merged)
    return record


def write_record(path: Path, calls: set[AwsCall]) -> None:
    path.write_text(json.dumps(as_record(calls), indent=2, sort_keys=True) + "\n")


def read_record(path: Path) -> Record:
    record: Record = json.loads(path.read_text())
    return record
