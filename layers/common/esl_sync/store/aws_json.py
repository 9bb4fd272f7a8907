"""The AWS calls of the functions, in AWS's JSON protocol, with the standard library alone.

Every call the library makes in a Lambda function is a POST of JSON: DynamoDB and SQS speak
JSON 1.0, KMS and Secrets Manager JSON 1.1. This client sends it over ``http.client`` with
kept-alive connections (:mod:`esl_sync.http_connections`), signs it
(:mod:`esl_sync.store.aws_sigv4`), retries as botocore's "standard" mode does, and raises
one typed error, :class:`AwsError`. Why not botocore: its import, data and per-call
machinery were a third of a poller's cold start and most of an idle poll's CPU (measured;
the aws_sigv4 docstring has the figures). botocore stays for the operator's CLI: its
credential chain (profiles, SSO) when the environment holds no keys, and the CloudFormation
lookup (:mod:`esl_sync.store.stack`).

Each call is told to :mod:`esl_sync.aws_observers` before it is sent (the local stack's IAM
recorder, the bench's counter, the X-Ray subsegments).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

from esl_sync import aws_observers, tls
from esl_sync.http_connections import Origin, Unanswered
from esl_sync.settings import ConfigurationError
from esl_sync.store import aws_codec, aws_sigv4
from esl_sync.store.aws_codec import AwsError as AwsError


class Caller(Protocol):
    """What the store modules call: :class:`AwsJsonClient`, or a test's wrapper of one."""

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]: ...


class _Service(NamedTuple):
    target: str  # X-Amz-Target's prefix
    json_version: str
    env_name: str  # AWS_ENDPOINT_URL_<env_name> (botocore's service id, upper snake case)
    blobs: frozenset[str] = frozenset()  # base64 fields of its answers (top level)
    query_compatible: bool = False  # botocore sends x-amzn-query-mode (awsQueryCompatible)


SERVICES = {
    "dynamodb": _Service("DynamoDB_20120810", "1.0", "DYNAMODB"),
    "sqs": _Service("AmazonSQS", "1.0", "SQS", query_compatible=True),
    "kms": _Service("TrentService", "1.1", "KMS", frozenset({"CiphertextBlob", "Plaintext"})),
    "secretsmanager": _Service(
        "secretsmanager", "1.1", "SECRETS_MANAGER", frozenset({"SecretBinary"})
    ),
}

# Partitions by region name (botocore's endpoints.json regionRegex) and their DNS suffix.
# Others (the isolated ones) have other names for some services: refused, not guessed.
_PARTITIONS = (
    ("aws-us-gov", r"us-gov-\w+-\d+", "amazonaws.com"),
    ("aws-cn", r"cn-\w+-\d+", "amazonaws.com.cn"),
    ("aws", r"(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+", "amazonaws.com"),
)

# botocore's "standard" retry mode (botocore/retries/standard.py).
ATTEMPTS = 3
MAX_BACKOFF_SECONDS = 20
# botocore's default timeouts (what every client but Secrets Manager's had).
CONNECT_TIMEOUT_SECONDS = 60.0
READ_TIMEOUT_SECONDS = 60.0


def region() -> str:
    """AWS_REGION or AWS_DEFAULT_REGION; else (an operator's CLI) the profile's region."""
    name = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not name and not os.environ.get("AWS_ACCESS_KEY_ID"):
        from esl_sync.store import aws  # botocore: an operator's profile, never in Lambda

        name = aws.session().get_config_variable("region")
    if not name:
        raise ConfigurationError("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION")
    if not re.fullmatch(r"[a-z0-9-]{1,40}", name):
        raise ConfigurationError("invalid setting: AWS_REGION: not a region name")
    return str(name)


def endpoint_url(service: str, region_name: str) -> str:
    """``AWS_ENDPOINT_URL_<SERVICE>``, else ``AWS_ENDPOINT_URL`` (both ignored when
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true, as botocore does), else AWS's own."""
    env = os.environ
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        given = env.get(f"AWS_ENDPOINT_URL_{SERVICES[service].env_name}") or env.get(
            "AWS_ENDPOINT_URL"
        )
        if given:
            return given
    for _, pattern, suffix in _PARTITIONS:
        if re.fullmatch(pattern, region_name):
            return f"https://{service}.{region_name}.{suffix}"
    raise ConfigurationError(
        f"AWS region {region_name!r} is in no partition this client knows (aws, aws-cn,"
        " aws-us-gov): set AWS_ENDPOINT_URL"
    )


class _RetryQuota:
    """botocore's retry quota: 500 tokens a client, 5 a retry (10 after a timeout), given
    back by the success that follows; when empty, failures are not retried."""

    def __init__(self) -> None:
        self._tokens = 500
        self._lock = threading.Lock()

    def take(self, cost: int) -> bool:
        with self._lock:
            if self._tokens < cost:
                return False
            self._tokens -= cost
            return True

    def give(self, amount: int) -> None:
        with self._lock:
            self._tokens = min(500, self._tokens + amount)


class AwsJsonClient:
    """One service's JSON API: ``call("GetItem", {...})`` → the answer, blobs as bytes."""

    def __init__(
        self,
        service: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.service = service
        self._protocol = SERVICES[service]
        self.region = region()
        try:
            self._origin = Origin(
                endpoint_url(service, self.region),
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                context=tls.for_aws,
            )
        except ValueError as error:  # what is wrong, never the URL
            raise ConfigurationError(f"invalid setting: AWS_ENDPOINT_URL: {error}") from None
        self._attempts = attempts
        self._quota = _RetryQuota()
        self._content_type = f"application/x-amz-json-{self._protocol.json_version}"
        self.sleep: Callable[[float], None] = time.sleep  # tests replace it: no waiting

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The answer of ``operation`` to ``params`` (bytes in them are sent as base64)."""
        if not aws_observers.observed():
            return self._call(operation, params)
        finishing = aws_observers.tell(self.service, operation, params)
        try:
            answer = self._call(operation, params)
        except BaseException as error:
            for finish in finishing:
                finish(error)
            raise
        for finish in finishing:
            finish(None)
        return answer

    def close(self) -> None:
        self._origin.close()

    def _call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        try:
            body = aws_codec.encode(params)
        except ValueError as error:
            raise AwsError(
                self.service, operation, "InvalidParameter", 0, str(error), False
            ) from None
        headers = {
            "Content-Type": self._content_type,
            "X-Amz-Target": f"{self._protocol.target}.{operation}",
            "User-Agent": "esl-sync",
            "Accept-Encoding": "identity",  # http.client sends it anyway: given, it is signed
        }
        if self._protocol.query_compatible:  # SQS: error codes as its query API names them
            headers["x-amzn-query-mode"] = "true"
        # botocore's recursion-detection header: the invocation's trace, so an SQS message
        # links the traces of its sender and its consumer (unsigned, as botocore leaves it).
        trace = os.environ.get("_X_AMZN_TRACE_ID")
        if trace and "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
            headers["X-Amzn-Trace-Id"] = quote(trace, safe="-=;:+&[]{}\"',")
        retried_cost = 0
        for attempt in range(1, self._attempts + 1):
            try:
                answer = self._attempt(operation, headers, body)
            except AwsError as error:
                cost = 10 if error.code in ("ReadTimeout", "ConnectTimeout") else 5
                if not (error.retryable and attempt < self._attempts and self._quota.take(cost)):
                    raise
                retried_cost = cost
                self.sleep(random.random() * min(2 ** (attempt - 1), MAX_BACKOFF_SECONDS))
                continue
            self._quota.give(retried_cost or 1)
            return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempt(self, operation: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        signed = dict(headers)
        keys = aws_sigv4.credentials()
        amz_date = aws_sigv4.timestamp(datetime.now(UTC))
        signed["X-Amz-Date"] = amz_date
        if keys.token:
            signed["X-Amz-Security-Token"] = keys.token
        origin = self._origin
        signed["Authorization"] = aws_sigv4.authorization(
            keys,
            region=self.region,
            service=self.service,
            host=origin.host,
            path=origin.path,
            headers=signed,
            body=body,
            amz_date=amz_date,
        )
        signed["Host"] = origin.host
        status, answer_headers, data = self._exchange(operation, signed, body)
        crc = answer_headers.get("x-amz-crc32")
        if crc is not None and crc.isdigit() and int(crc) != zlib.crc32(data):
            raise AwsError(self.service, operation, "CRC32CheckFailed", status, "", True)
        if status >= 300:
            raise aws_codec.service_error(self.service, operation, status, answer_headers, data)
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise AwsError(
                self.service, operation, "InvalidResponse", status, "not JSON", True
            ) from None
        if not isinstance(answer, dict):
            raise AwsError(
                self.service, operation, "InvalidResponse", status, "not an object", True
            )
        return self._blobs(answer, data)

    def _exchange(
        self, operation: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One request and its answer, on a kept connection (one that died while idle is
        replaced at once, without counting as an attempt); any other failure of the
        transport is a retryable error."""
        origin = self._origin
        try:
            answer = origin.exchange("POST", origin.path, body, headers)
        except Unanswered as failed:
            raise _transport_error(
                self.service, operation, failed.error, connecting=failed.connecting
            ) from None
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.body

    def _blobs(self, answer: dict[str, Any], data: bytes) -> dict[str, Any]:
        for name in self._protocol.blobs & answer.keys():
            answer[name] = base64.b64decode(answer[name])
        if self.service == "dynamodb" and (b'"B"' in data or b'"BS"' in data):
            aws_codec.dynamodb_binaries(answer)  # only an answer that may hold one is walked
        return answer


def _transport_error(
    service: str, operation: str, error: BaseException, *, connecting: bool
) -> AwsError:
    """A failure of the connection, by its kind; retryable, as botocore's standard mode
    retries every one (its message is the socket's: a host and port at most)."""
    if isinstance(error, TimeoutError):
        code = "ConnectTimeout" if connecting else "ReadTimeout"
    elif isinstance(error, ssl.SSLError):
        code = "SSLError"
    elif isinstance(error, http.client.HTTPException) and not isinstance(error, ConnectionError):
        code = "HTTPClientError"  # an answer that is not HTTP
    else:
        code = "ConnectionError"
    return AwsError(service, operation, code, 0, str(error)[:200] or type(error).__name__, True)


_clients_lock = threading.Lock()
_clients: dict[tuple[str, float, float, int], AwsJsonClient] = {}


def client(
    service: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    attempts: int = ATTEMPTS,
) -> AwsJsonClient:
    """The process's client of ``service`` with these timeouts (built on first use)."""
    key = (service, connect_timeout, read_timeout, attempts)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = AwsJsonClient(
                service,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                attempts=attempts,
            )
        return found


def forget_clients() -> None:
    """Close and drop every client (the local stack starts each stack afresh, maybe on
    another endpoint)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for each in clients:
        each.close()
