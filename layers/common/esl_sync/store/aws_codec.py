"""AWS's JSON protocol on the wire: the request's body, the answer's blobs, the service's
refusals as one typed error (:class:`AwsError`). The client is :mod:`esl_sync.store.aws_json`."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from typing import Any

from esl_sync.records import TransientConflict


class AwsError(Exception):
    """An AWS call that failed: the service's error code (``ConditionalCheckFailedException``)
    or the transport's (``ConnectionError``, ``ReadTimeout``), the HTTP status (0: no
    answer), the service's message, and whether trying again could succeed (the client has
    already tried as often as it retries). Never the request's body, keys or signature.
    ``item``: the item a DynamoDB write's refused condition found, when the call asked for
    it (``ReturnValuesOnConditionCheckFailure``); never in the message."""

    item: dict[str, Any] | None = None

    def __init__(
        self, service: str, operation: str, code: str, status: int, message: str, retryable: bool
    ) -> None:
        self.service, self.operation = service, operation
        self.code, self.status, self.message, self.retryable = code, status, message, retryable
        answer = f" (HTTP {status})" if status else ""
        super().__init__(f"AWS {service} {operation} failed: {code}{answer}: {message}")


class AwsThrottled(AwsError, TransientConflict):
    """The service still throttled the call after the client's retries (a code of
    :data:`THROTTLING`): an :class:`AwsError` to the adapters, a :class:`TransientConflict`
    to the logic (retried, counted, no page)."""


# botocore's "standard" retry mode (botocore/retries/standard.py): what may be retried.
THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})


def service_error(
    service: str, operation: str, status: int, headers: Mapping[str, str], data: bytes
) -> AwsError:
    """The service's refusal, as botocore parses JSON errors: the code is ``__type`` after
    its ``#`` (SQS's query-compatible code from ``x-amzn-query-error`` when given)."""
    try:
        document = json.loads(data) if data else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    code = str(document.get("__type") or document.get("code") or f"HTTP{status}")
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    query_error = headers.get("x-amzn-query-error")
    if query_error and ";" in query_error:
        code = query_error.split(";", 1)[0]
    message = document.get("message", document.get("Message", ""))
    retryable = code in THROTTLING or code in TRANSIENT or status in TRANSIENT_STATUS
    kind = AwsThrottled if code in THROTTLING else AwsError
    error = kind(service, operation, code, status, str(message)[:500], retryable)
    if code == "ConditionalCheckFailedException" and isinstance(document.get("Item"), dict):
        error.item = document["Item"]
    return error


def encode(params: Mapping[str, Any]) -> bytes:
    """The request's JSON: bytes as base64 (KMS blobs, DynamoDB ``B`` values). A string
    that is not text (a lone surrogate, e.g. from JSON's ``"\\ud800"``) cannot be sent:
    AWS's services take UTF-8 only, and refuse such an escape; it is sent as U+FFFD, so a
    state or message that holds one is still written rather than refused forever."""
    fast = _plain_json(params)
    if fast is not None:
        return fast
    try:
        text = json.dumps(
            params, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_base64
        )
    except (TypeError, ValueError) as error:  # a float NaN, an object JSON has no form for
        raise ValueError(f"not sendable as JSON: {str(error)[:200]}") from None
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


_PLAIN = frozenset({str, int, bool, type(None)})
_DEEPEST, _MOST = 255, 100_000
"""orjson's deepest nesting, and the values looked at, past which (a list holding itself,
twice) ``json`` writes the request or refuses it."""


def _plain_json(params: Mapping[str, Any]) -> bytes | None:
    """orjson's bytes of ``params`` where they are byte for byte what :func:`encode` writes
    with ``json``; else None. A poll's label jobs go to SQS ten at a time, ≈ 170 KB of JSON
    texts in one request, where ``json.dumps`` escaped their quotes at ≈ 3 ns a byte and
    orjson at ≈ 1.3 (0.96 against 0.39 ms for 300 KB; ≈ 0.15 ms per 1,000 items of a first
    sync, issue 15). Only where orjson is loaded already (the poller): the webhook's and
    the dispatcher's cold starts never pay its import. Only for plain dicts, lists, text,
    integers, booleans and None, for which orjson's compact output is ``json``'s with
    ``ensure_ascii=False`` (:mod:`esl_sync.job_json` says why; a float it may spell
    otherwise, and bytes it does not take); a lone surrogate, an integer past 64 bits, a
    key that is not text or nesting past 255 levels it refuses, and ``json`` writes them
    (or refuses them by name) as before."""
    orjson = sys.modules.get("orjson")
    if orjson is None:
        return None
    level: list[Any] = [params]
    values = 0
    for _ in range(_DEEPEST):  # a level at a time (a list that holds itself ends here too)
        values += len(level)
        if values > _MOST:
            return None
        deeper: list[Any] = []
        for value in level:  # ≈ 0.1 µs a value: a batch of ten messages has about 50
            kind = type(value)
            if kind is dict:
                deeper.extend(value.values())
            elif kind is list:
                deeper.extend(value)
            elif kind not in _PLAIN:
                return None
        if not deeper:
            break
        level = deeper
    else:
        return None
    try:
        return orjson.dumps(params)  # type: ignore[no-any-return]
    except orjson.JSONEncodeError:
        return None


def _base64(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def dynamodb_binaries(node: object) -> None:
    """DynamoDB's binary attribute values (``{"B": base64}``, ``{"BS": [...]}``) as bytes,
    wherever they are in an answer: an attribute value is the only object with a ``B`` or
    ``BS`` key whose value is a string or a list of them (a map's ``"B"`` member is an
    attribute value, an object)."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "B" and isinstance(value, str) and len(node) == 1:
                node[name] = base64.b64decode(value)
            elif name == "BS" and isinstance(value, list) and len(node) == 1:
                node[name] = [base64.b64decode(v) for v in value]
            else:
                dynamodb_binaries(value)
    elif isinstance(node, list):
        for value in node:
            dynamodb_binaries(value)
