"""The standard-library AWS client (esl_sync.store.aws_json) against a scripted HTTP server on
loopback (what it sends, retries, connections, credentials, errors) and against moto (what
AWS's JSON protocol answers, hostile values). No wall-clock: backoff sleeps are recorded."""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.local_stack import LocalStack
from esl_sync import aws_observers, tls
from esl_sync.store import aws, aws_json, aws_sigv4
from esl_sync.store.aws_json import AwsError
from tests.tls_certs import self_signed

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD"


class Scripted(ThreadingHTTPServer):
    """Answers each POST with the next scripted answer (then ``{}``), keeping connections
    alive (HTTP/1.1); ``"drop"`` closes the connection without answering, ``"close"``
    answers then closes it without saying so (as a peer whose idle timeout ran out)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, dict[str, Any]] | str | tuple[int, dict[str, Any], str]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Scripted

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((dict(self.headers.items()), body))
        step = self.server.script.pop(0) if self.server.script else (200, {})
        if step == "drop":
            self.close_connection = True
            return
        close_after = step == "close"
        status, document, *then = (200, {}) if isinstance(step, str) else step
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = close_after or then == ["close"]

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    scripted = Scripted()
    thread = threading.Thread(  # shutdown() waits up to one poll_interval (0.5 s by default)
        target=scripted.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    for name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", scripted.url)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    yield scripted
    scripted.shutdown()
    scripted.server_close()


def client(service: str = "dynamodb", **kwargs: Any) -> tuple[aws_json.AwsJsonClient, list[float]]:
    """A fresh client whose backoff sleeps are recorded, not slept."""
    built = aws_json.AwsJsonClient(service, **kwargs)
    sleeps: list[float] = []
    built.sleep = sleeps.append
    return built, sleeps


# -- what is sent -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "operation", "params", "token"),
    [
        ("dynamodb", "GetItem", {"TableName": "t", "Key": {"k": {"S": "é 😀 ü"}}}, True),
        ("sqs", "SendMessageBatch", {"QueueUrl": "q", "Entries": [{"Id": "0"}]}, False),
        ("kms", "Decrypt", {"CiphertextBlob": b"\x00\xff blob"}, True),
        ("secretsmanager", "GetSecretValue", {"SecretId": "arn:…:secret:x"}, False),
    ],
)
def test_the_signature_is_botocores_byte_for_byte(
    server: Scripted,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    operation: str,
    params: dict[str, Any],
    token: bool,
) -> None:
    if not token:
        monkeypatch.delenv("AWS_SESSION_TOKEN")
    client(service)[0].call(operation, params)
    [(headers, body)] = server.requests
    sent = headers.pop("Authorization")
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={k: v for k, v in headers.items() if k not in ("Host", "Content-Length")},
    )
    keys = BotocoreCredentials("AKIDEXAMPLE", SECRET, TOKEN if token else None)
    with botocore_clock(headers["X-Amz-Date"]):
        SigV4Auth(keys, service, "eu-west-1").add_auth(request)
    assert request.headers["Authorization"] == sent
    assert headers.get("X-Amz-Security-Token") == (TOKEN if token else None)
    assert headers["X-Amz-Target"].endswith(f".{operation}")
    assert json.loads(body) == json.loads(aws_json.aws_codec.encode(params))


@contextmanager
def botocore_clock(amz_date: str) -> Iterator[None]:
    """botocore signs at its own "now": at the client's time here."""
    at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    with patch("botocore.auth.get_current_datetime", lambda: at):
        yield


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
    value=st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=30),
    path=st.sampled_from(["/", "/prefix/", "/a b/~x"]),
    token=st.none() | st.text(st.characters(codec="ascii", min_codepoint=33), min_size=1),
    when=st.datetimes(datetime(2020, 1, 1), datetime(2040, 1, 1)),
)
def test_the_signer_agrees_with_botocore_on_any_header_body_and_path(
    body: bytes, value: str, path: str, token: str | None, when: datetime
) -> None:
    """The signer alone, over headers with odd whitespace, paths, bodies, tokens, days."""
    amz_date = aws_sigv4.timestamp(when)
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Custom": value}
    headers["X-Amz-Date"] = amz_date
    if token:
        headers["X-Amz-Security-Token"] = token
    request = AWSRequest("POST", f"https://kms.cn-north-1.amazonaws.com.cn{path}", headers, body)
    with botocore_clock(amz_date):
        SigV4Auth(BotocoreCredentials("AKID", SECRET, token), "kms", "cn-north-1").add_auth(request)
    mine = aws_sigv4.authorization(
        aws_sigv4.Credentials("AKID", SECRET, token),
        region="cn-north-1",
        service="kms",
        host="kms.cn-north-1.amazonaws.com.cn",
        path=path,
        headers=headers,
        body=body,
        amz_date=amz_date,
    )
    assert mine == request.headers["Authorization"]


# -- retries ------------------------------------------------------------------------------


def test_a_500_then_a_throttle_are_retried_then_it_succeeds(server: Scripted) -> None:
    server.script = [
        (500, {"__type": "InternalServerError", "message": "boom"}),
        (400, {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException"}),
        (200, {"Item": {"k": {"S": "v"}}}),
    ]
    dynamodb, sleeps = client()
    assert dynamodb.call("GetItem", {"TableName": "t"}) == {"Item": {"k": {"S": "v"}}}
    assert len(server.requests) == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1  # rand × 2^(attempt - 1)
    assert 0 <= sleeps[1] <= 2
    dates = [headers["Authorization"] for headers, _ in server.requests]
    assert all(d.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") for d in dates)


def test_a_client_error_is_not_retried_and_names_its_code(server: Scripted) -> None:
    server.script = [
        (400, {"__type": "com.amazon.coral.validate#ValidationException", "message": "bad key"})
    ]
    dynamodb, sleeps = client()
    with pytest.raises(AwsError) as raised:
        dynamodb.call("GetItem", {"TableName": "t"})
    error = raised.value
    assert (error.code, error.status, error.message, error.retryable) == (
        "ValidationException",
        400,
        "bad key",
        False,
    )
    assert (len(server.requests), sleeps) == (1, [])


def test_three_server_errors_give_up_with_a_retryable_error(server: Scripted) -> None:
    server.script = [(503, {"__type": "ServiceUnavailable"})] * 3 + [(200, {})]
    dynamodb, sleeps = client()
    with pytest.raises(AwsError) as raised:
        dynamodb.call("GetItem", {"TableName": "t"})
    assert (raised.value.code, raised.value.status, raised.value.retryable) == (
        "ServiceUnavailable",
        503,
        True,
    )
    assert (len(server.requests), len(sleeps)) == (3, 2)


def test_sqs_query_compatible_error_codes(server: Scripted) -> None:
    server.script = [(400, {"__type": "com.amazonaws.sqs#QueueDoesNotExist"}, "keep")]
    sqs, _ = client("sqs")
    with pytest.raises(AwsError, match="QueueDoesNotExist"):
        sqs.call("GetQueueUrl", {"QueueName": "nope"})


def test_a_connection_that_dies_between_calls_is_reopened(server: Scripted) -> None:
    server.script = [(200, {"n": 1}, "close"), (200, {"n": 2})]  # the peer closes the idle one
    dynamodb, sleeps = client()
    assert dynamodb.call("GetItem", {})["n"] == 1
    assert dynamodb.call("GetItem", {})["n"] == 2
    assert (len(server.requests), server.connections, sleeps) == (2, 2, [])
    assert dynamodb.call("GetItem", {}) == {}  # and the new one is kept
    assert server.connections == 2


def test_a_connection_dropped_during_a_call_counts_as_a_retried_attempt(
    server: Scripted,
) -> None:
    server.script = ["drop", "drop", (200, {"ok": True})]
    dynamodb, sleeps = client()
    assert dynamodb.call("GetItem", {}) == {"ok": True}
    assert (len(server.requests), len(sleeps)) == (3, 2)
    # On a kept connection a drop looks like a connection that died while idle: sent
    # again at once, uncounted; then three counted attempts.
    server.script = ["drop"] * 4
    with pytest.raises(AwsError) as raised:
        dynamodb.call("GetItem", {})
    assert (raised.value.code, raised.value.status, raised.value.retryable) == (
        "ConnectionError",
        0,
        True,
    )
    assert (len(server.requests), len(sleeps)) == (7, 4)


def test_an_endpoint_that_refuses_connections_is_a_named_retryable_error(
    monkeypatch: pytest.MonkeyPatch, server: Scripted
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    dynamodb, sleeps = client()
    with pytest.raises(AwsError) as raised:
        dynamodb.call("GetItem", {})
    assert (raised.value.code, raised.value.retryable, len(sleeps)) == ("ConnectionError", True, 2)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def tls_server(server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scripted:
    """The scripted server behind TLS, with a certificate for 127.0.0.1 of its own."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url.replace("http:", "https:"))
    monkeypatch.setattr(tls, "_contexts", {})
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # the default roots (certifi's)
    return server


def test_tls_is_verified_with_one_context_for_every_client(
    tls_server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str | None] = []
    new_context = tls._new_context
    monkeypatch.setattr(
        tls,
        "_new_context",
        lambda cafile, capath: built.append(cafile) or new_context(cafile, capath),
    )
    dynamodb, _ = client("dynamodb")
    with pytest.raises(AwsError) as raised:  # a certificate no trusted root signed
        dynamodb.call("GetItem", {})
    assert (raised.value.code, raised.value.status) == ("SSLError", 0)
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.message
    assert tls_server.requests == []

    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "cert.pem"))  # as botocore reads it
    for service in ("dynamodb", "sqs", "kms", "secretsmanager"):
        client(service)[0].call("Op", {})
    assert len(tls_server.requests) == 4
    assert built == [None, str(tmp_path / "cert.pem")]  # one context per bundle, not per client


# -- credentials --------------------------------------------------------------------------


@pytest.fixture
def no_env_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No keys in the environment; a fresh botocore session reading ``tmp_path``'s files."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(aws, "_session", None)
    aws_sigv4.forget_credentials()
    yield tmp_path
    aws_sigv4.forget_credentials()


def test_without_keys_in_the_environment_a_profiles_keys_sign(
    server: Scripted, no_env_keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_env_keys / "credentials").write_text(
        "[ops]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s3cr3t\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "ops")
    client()[0].call("GetItem", {})
    assert "Credential=AKIDPROFILE/" in server.requests[0][0]["Authorization"]


def test_expiring_credentials_are_refreshed(
    server: Scripted, no_env_keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential process (as SSO or an assumed role): credentials that expire in five
    minutes are renewed before the next call (botocore's refresh, 10 minutes ahead)."""
    counter = no_env_keys / "n"
    counter.write_text("0")
    process = no_env_keys / "creds.py"
    process.write_text(
        "import datetime, json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) + 1; p.write_text(str(n))\n"
        "end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'AKIDROTATED{n}',"
        " 'SecretAccessKey': 'x', 'SessionToken': f'tok{n}', 'Expiration': end.isoformat()}))\n"
    )
    (no_env_keys / "config").write_text(
        f"[profile sso]\ncredential_process = {sys.executable} {process}\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "sso")
    dynamodb, _ = client()
    dynamodb.call("GetItem", {})
    dynamodb.call("GetItem", {})
    sent = [headers for headers, _ in server.requests]
    tokens = [h["X-Amz-Security-Token"] for h in sent]
    assert tokens[0] != tokens[1]  # renewed in between (each renewal a new token)
    assert f"Credential=AKIDROTATED{tokens[1].removeprefix('tok')}/" in sent[1]["Authorization"]


def test_no_credentials_at_all_is_a_configuration_error(
    server: Scripted, no_env_keys: Path
) -> None:
    from esl_sync.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="no AWS credentials"):
        client()[0].call("GetItem", {})
    assert server.requests == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AWS_SESSION_TOKEN", "tok\r\nX-Injected: 1"),
        ("AWS_ACCESS_KEY_ID", "AKID WITH SPACE"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr\tt"),  # (an environment cannot hold NUL)
        ("AWS_SECRET_ACCESS_KEY", "sécret"),
    ],
)
def test_keys_a_header_cannot_hold_are_refused_by_name_and_never_shown(
    server: Scripted, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    from esl_sync.settings import ConfigurationError

    dynamodb, _ = client()
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"invalid setting: {name}: not a key") as raised:
        dynamodb.call("GetItem", {})
    assert value not in str(raised.value)
    assert server.requests == []


# -- secrets stay secret ------------------------------------------------------------------


def test_no_key_token_signature_or_body_in_an_error_or_a_log(
    server: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    plaintext = "clover-token-PLAINTEXT"
    server.script = [(400, {"__type": "AccessDeniedException", "message": "not allowed"})]
    kms, _ = client("kms")
    with pytest.raises(AwsError) as raised:
        kms.call("Encrypt", {"KeyId": "k", "Plaintext": plaintext.encode()})
    server.script = ["drop"] * 4  # the kept connection's, then three attempts
    with pytest.raises(AwsError) as dropped:
        kms.call("Encrypt", {"KeyId": "k", "Plaintext": plaintext.encode()})
    signature = server.requests[0][0]["Authorization"].rsplit("=", 1)[1]
    shown = " ".join(
        [str(e) + repr(e) + repr(vars(e)) for e in (raised.value, dropped.value)] + [caplog.text]
    )
    assert "AccessDeniedException" in shown
    for secret in (SECRET, TOKEN, signature, plaintext, "Y2xvdmVy"):  # base64 of it too
        assert secret not in shown
    assert SECRET not in repr(aws_sigv4.credentials())


# -- observers ----------------------------------------------------------------------------


def test_observers_see_each_call_before_it_is_sent_and_how_it_ended(server: Scripted) -> None:
    seen: list[tuple[str, str, int]] = []
    ended: list[str | None] = []

    def observer(service: str, operation: str, params: Mapping[str, Any]) -> aws_observers.Finish:
        seen.append((service, operation, len(server.requests)))
        return lambda error: ended.append(None if error is None else type(error).__name__)

    server.script = [(200, {}), (400, {"__type": "ValidationException"})]
    aws_observers.observe(observer)
    try:
        sqs, _ = client("sqs")
        sqs.call("SendMessageBatch", {"QueueUrl": "q"})
        with pytest.raises(AwsError):
            sqs.call("DeleteMessageBatch", {"QueueUrl": "q"})
    finally:
        aws_observers.unobserve(observer)
    assert seen == [("sqs", "SendMessageBatch", 0), ("sqs", "DeleteMessageBatch", 1)]
    assert ended == [None, "AwsError"]


# -- against moto: AWS's JSON protocol as answered ----------------------------------------


def test_a_refused_condition_surfaces_as_its_code(stack: LocalStack) -> None:
    dynamodb = aws_json.client("dynamodb")
    table = stack.env["STATE_TABLE_NAME"]
    update = {
        "TableName": table,
        "Key": {"merchant_id": {"S": "MCOND0000001"}},
        "UpdateExpression": "SET lease_owner = :o",
        "ConditionExpression": "attribute_not_exists(lease_owner)",
        "ExpressionAttributeValues": {":o": {"S": "me"}},
    }
    dynamodb.call("UpdateItem", update)
    with pytest.raises(AwsError) as raised:
        dynamodb.call("UpdateItem", update)
    assert (raised.value.code, raised.value.status, raised.value.retryable) == (
        "ConditionalCheckFailedException",
        400,
        False,
    )


def test_hostile_strings_and_blobs_round_trip_through_dynamodb_and_sqs(stack: LocalStack) -> None:
    """NUL and every plane round-trip exactly; a lone surrogate (not text: no service
    takes one) is stored as U+FFFD rather than crash the encoder or be refused forever;
    binary values are bytes again; a value JSON cannot carry is a named refusal."""
    dynamodb = aws_json.client("dynamodb")
    table = stack.env["STATE_TABLE_NAME"]
    key = {"merchant_id": {"S": "MHOSTILE0001"}}
    text = "a\x00b\U0001f600\u202e" + "x" * 100_000
    dynamodb.call(
        "UpdateItem",
        {
            "TableName": table,
            "Key": key,
            "UpdateExpression": "SET t = :t, s = :s, b = :b, bs = :bs",
            "ExpressionAttributeValues": {
                ":t": {"S": text},
                ":s": {"S": "lone \ud800 surrogate \udfff"},
                ":b": {"B": b"\x00\xff\xfe"},
                ":bs": {"BS": [b"\x01", b"\x02"]},
            },
        },
    )
    item = dynamodb.call("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True})[
        "Item"
    ]
    assert item["t"] == {"S": text}
    assert item["s"] == {"S": "lone \ufffd surrogate \ufffd"}
    assert item["b"] == {"B": b"\x00\xff\xfe"}
    assert sorted(item["bs"]["BS"]) == [b"\x01", b"\x02"]

    sqs = aws_json.client("sqs")
    url = stack.urls["PollQueue"]
    body = 'json "\\u0000" and \ud83d lone, 😀 pair'
    sent = sqs.call(
        "SendMessageBatch", {"QueueUrl": url, "Entries": [{"Id": "0", "MessageBody": body}]}
    )
    assert [s["Id"] for s in sent["Successful"]] == ["0"]
    got = sqs.call("ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10})
    assert [m["Body"] for m in got["Messages"]] == ['json "\\u0000" and \ufffd lone, 😀 pair']

    for bad in (float("nan"), object(), 10**5000):
        with pytest.raises(AwsError) as raised:
            dynamodb.call("GetItem", {"TableName": table, "Key": key, "Limit": bad})
        assert (raised.value.code, raised.value.retryable) == ("InvalidParameter", False)


# -- tracing ------------------------------------------------------------------------------


class _Emitted:
    """An X-Ray emitter that keeps what it would send to the daemon."""

    def __init__(self) -> None:
        self.entities: list[Any] = []

    def send_entity(self, entity: Any) -> None:
        self.entities.append(entity)

    def set_daemon_address(self, address: str | None) -> None:
        pass


def test_each_aws_call_is_an_xray_subsegment_as_the_sdks_botocore_patch_made_them(
    server: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_xray_sdk import global_sdk_config
    from aws_xray_sdk.core import AWSXRayRecorder
    from aws_xray_sdk.core.context import Context

    from esl_sync import tracing

    enabled = global_sdk_config.sdk_enabled()
    global_sdk_config.set_sdk_enabled(True)  # the test session disables tracing
    recorder = AWSXRayRecorder()
    recorder.configure(context=Context(), sampling=False, emitter=_Emitted())
    monkeypatch.setattr(tracing.tracer, "provider", recorder)
    segment = recorder.begin_segment("esl-sync-DispatcherFunction")
    aws_observers.observe(tracing.aws_subsegment)
    server.script = [(200, {}), (400, {"__type": "ResourceNotFoundException", "message": "no"})]
    try:
        dynamodb, _ = client()
        dynamodb.call("GetItem", {"TableName": "StateTable"})
        with pytest.raises(AwsError):
            dynamodb.call("UpdateItem", {"TableName": "StateTable"})
    finally:
        aws_observers.unobserve(tracing.aws_subsegment)
        global_sdk_config.set_sdk_enabled(enabled)
    ok, failed = [s.to_dict() for s in segment.subsegments]
    assert (ok["name"], ok["namespace"], failed["name"]) == ("dynamodb", "aws", "dynamodb")
    assert ok["aws"] == {"operation": "GetItem", "region": "eu-west-1", "table_name": "StateTable"}
    assert ok["http"] == {"response": {"status": 200}}
    assert failed["aws"]["operation"] == "UpdateItem"
    assert failed["http"] == {"response": {"status": 400}}
    assert failed["error"] is True
    assert failed["cause"]["exceptions"][0]["type"] == "AwsError"
    assert all("end_time" in s for s in (ok, failed))  # both closed


def test_in_lambda_each_request_carries_the_invocations_trace_header(
    server: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's recursion-detection header: SQS links a message to its sender's trace."""
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", trace)
    client("sqs")[0].call("SendMessageBatch", {})
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "esl-sync-PollerFunction-x")
    client("sqs")[0].call("SendMessageBatch", {})
    first, second = (headers for headers, _ in server.requests)
    assert "X-Amzn-Trace-Id" not in first  # outside Lambda: none (as botocore)
    assert second["X-Amzn-Trace-Id"] == trace
    assert "x-amzn-trace-id" not in second["Authorization"]  # unsigned
