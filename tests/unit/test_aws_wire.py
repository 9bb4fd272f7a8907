"""AWS's JSON protocol without a network: endpoints by region and setting, the request's
body for any text, the service's refusals as codes, DynamoDB's binary values."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_sync.settings import ConfigurationError
from esl_sync.store import aws_codec, aws_json


@pytest.fixture(autouse=True)
def no_endpoint_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)


@pytest.mark.parametrize(
    ("service", "region", "url"),
    [
        ("dynamodb", "us-east-1", "https://dynamodb.us-east-1.amazonaws.com"),
        ("sqs", "ap-southeast-4", "https://sqs.ap-southeast-4.amazonaws.com"),
        ("kms", "cn-northwest-1", "https://kms.cn-northwest-1.amazonaws.com.cn"),
        ("secretsmanager", "us-gov-west-1", "https://secretsmanager.us-gov-west-1.amazonaws.com"),
        ("dynamodb", "il-central-1", "https://dynamodb.il-central-1.amazonaws.com"),
    ],
)
def test_aws_own_endpoints_by_partition(service: str, region: str, url: str) -> None:
    assert aws_json.endpoint_url(service, region) == url


@pytest.mark.parametrize("region", ["us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1", "xx-1"])
def test_an_unknown_partition_is_refused_by_name(region: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{region}.*no partition"):
        aws_json.endpoint_url("dynamodb", region)


def test_configured_endpoints_win_service_first_unless_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:6000")
    assert aws_json.endpoint_url("sqs", "us-east-1") == "http://127.0.0.1:5000"
    assert aws_json.endpoint_url("secretsmanager", "us-east-1") == "http://127.0.0.1:6000"
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert aws_json.endpoint_url("sqs", "us-east-1") == "https://sqs.us-east-1.amazonaws.com"


@pytest.mark.parametrize("bad", ["evil.com/x", "US-EAST-1", "us-east-1\n", "é", "a" * 41])
def test_a_region_that_is_no_region_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("AWS_REGION", bad)
    with pytest.raises(ConfigurationError, match="AWS_REGION: not a region name"):
        aws_json.region()


def test_region_comes_from_aws_region_before_aws_default_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert aws_json.region() == "eu-west-1"
    monkeypatch.delenv("AWS_REGION")
    assert aws_json.region() == "us-east-1"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:abc", "not a port"),
        ("http://127.0.0.1:70000", "not a port"),
        ("ftp://127.0.0.1:21", "not an http"),
        ("127.0.0.1:5000", "not an http"),
        ("http://", "not an http"),
    ],
)
def test_an_endpoint_that_is_no_http_url_or_whose_port_is_no_port_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    with pytest.raises(ConfigurationError, match=f"AWS_ENDPOINT_URL: {why}"):
        aws_json.AwsJsonClient("dynamodb")


@pytest.mark.parametrize(
    ("status", "headers", "body", "code", "retryable"),
    [
        (400, {}, b'{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}',
         "ConditionalCheckFailedException", False),
        (400, {}, b'{"__type":"com.amazon.coral.validate#ValidationException:http://x"}',
         "ValidationException", False),
        (400, {}, b'{"__type":"ProvisionedThroughputExceededException"}',
         "ProvisionedThroughputExceededException", True),
        (400, {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"},
         b'{"__type":"com.amazonaws.sqs#QueueDoesNotExist"}',
         "AWS.SimpleQueueService.NonExistentQueue", False),
        (502, {}, b"<html>Bad Gateway</html>", "HTTP502", True),
        (400, {}, b"[1, 2]", "HTTP400", False),
        (400, {}, b"", "HTTP400", False),
        (400, {}, b'{"__type":"RequestTimeoutException"}', "RequestTimeoutException", True),
    ],
)  # fmt: skip
def test_refusals_are_parsed_as_botocore_parses_them(
    status: int, headers: dict[str, str], body: bytes, code: str, retryable: bool
) -> None:
    error = aws_codec.service_error("dynamodb", "UpdateItem", status, headers, body)
    assert (error.code, error.status, error.retryable) == (code, status, retryable)


def test_binary_values_are_bytes_wherever_they_are_but_a_map_member_named_b_is_not() -> None:
    answer = {
        "Item": {
            "b": {"B": "AAH/"},
            "bs": {"BS": ["AQ==", "Ag=="]},
            "m": {"M": {"B": {"S": "a map member named B"}, "BS": {"L": [{"B": "AQ=="}]}}},
            "s": {"S": "AAH/"},
        }
    }
    aws_codec.dynamodb_binaries(answer)
    assert answer["Item"] == {
        "b": {"B": b"\x00\x01\xff"},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "m": {"M": {"B": {"S": "a map member named B"}, "BS": {"L": [{"B": b"\x01"}]}}},
        "s": {"S": "AAH/"},
    }


_VALUES = st.recursive(
    st.text() | st.binary() | st.integers() | st.booleans(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_VALUES)
def test_any_value_encodes_to_utf8_json_and_text_round_trips(value: object) -> None:
    body = aws_codec.encode({"v": value})
    decoded = json.loads(body.decode("utf-8"))  # valid UTF-8 and valid JSON, always
    if not _holds(value, lambda v: isinstance(v, bytes) or _lone_surrogate(v)):
        assert decoded == {"v": value}


def _lone_surrogate(value: object) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def _holds(value: object, test: Callable[[object], bool]) -> bool:
    if isinstance(value, list):
        return any(_holds(v, test) for v in value)
    if isinstance(value, dict):
        return any(test(k) or _holds(v, test) for k, v in value.items())
    return test(value)


_PLAIN_VALUES = st.recursive(
    st.text() | st.integers() | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def _json_bytes(params: object) -> bytes:
    """What encode wrote with ``json`` alone (before orjson's way for plain values)."""
    text = json.dumps(params, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


@settings(max_examples=300, deadline=None)
@given(_PLAIN_VALUES)
def test_plain_values_encode_byte_for_byte_as_json_writes_them(value: object) -> None:
    import orjson  # noqa: F401 - loaded, as in the poller: orjson's way is taken

    assert aws_codec.encode({"v": value}) == _json_bytes({"v": value})


def test_orjson_writes_a_label_batch_and_json_what_orjson_may_spell_otherwise() -> None:
    import orjson  # noqa: F401 - loaded, as in the poller

    record = {"pc": "1", "name": 'a "b" \\ \x00\x1f\x7f é \u2028 😀'}
    body = json.dumps({"upserts": [record]}, ensure_ascii=False)
    entry = {"Id": "0", "MessageBody": body, "MessageGroupId": "\x00\x1f\x7f\u2028"}
    batch = {"QueueUrl": "https://q", "Entries": [entry], "DelaySeconds": 0, "Fifo": True}
    assert aws_codec._plain_json(batch) == _json_bytes(batch)  # orjson's way
    for other in ({"n": 1.0}, {"n": 10**20}, {"s": "\ud800"}, {1: "key"}, {"t": ("a",)}):
        assert aws_codec._plain_json(other) is None  # json's, as before
        assert aws_codec.encode(other) == _json_bytes(other)
    itself: list[object] = []
    itself += [itself, itself]
    with pytest.raises(ValueError, match="not sendable as JSON"):
        aws_codec.encode({"v": itself})


def test_lone_surrogates_become_the_replacement_character_and_pairs_stay() -> None:
    body = aws_codec.encode({"S": "a\ud800b\udfffc\U0001f600"})
    assert json.loads(body) == {"S": "a\ufffdb\ufffdc\U0001f600"}


class _Text(str):
    """Text of another class (orjson's way is for the exact types only)."""

    def __str__(self) -> str:
        return "other"


class _Number(enum.IntEnum):
    ONE = 1


_TRICKY_TEXT = st.text() | st.sampled_from(
    ["\x00", "\x1f\x08\x0c", "\x7f", "\u2028", "\ufeff", "\ud800", "a\udfffb", "\U0001f600", "\\"]
)
_TRICKY_LEAF = (
    _TRICKY_TEXT
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False)
    | st.builds(_Text, st.text(max_size=3))
    | st.just(_Number.ONE)
    | st.binary(max_size=4)
)
_TRICKY_KEYS = (
    _TRICKY_TEXT | st.builds(_Text, st.text(max_size=3)) | st.sampled_from([1, True, None])
)
_TRICKY = st.recursive(
    _TRICKY_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_TRICKY_KEYS, inner, max_size=4)
        | st.tuples(inner)
    ),
    max_leaves=30,
)


def _written(params: dict[object, object], *, orjson_loaded: bool) -> bytes | str:
    """encode's bytes (or its refusal's class) with orjson loaded or not."""
    saved = None if orjson_loaded else sys.modules.pop("orjson", None)
    try:
        return aws_codec.encode(params)  # type: ignore[arg-type]
    except Exception as error:  # its class is compared
        return type(error).__name__
    finally:
        if saved is not None:
            sys.modules["orjson"] = saved


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_TRICKY_KEYS, _TRICKY, max_size=5))
def test_a_request_is_written_alike_with_orjson_loaded_or_not(params: dict[object, object]) -> None:
    """Floats, subclasses of text and int (an IntEnum), bytes, keys that are not text, lone
    surrogates and integers past 64 bits mixed with plain values: the same bytes, or the
    same refusal, whether orjson is loaded (the poller) or not."""
    import orjson  # noqa: F401 - loaded, as in the poller

    assert _written(params, orjson_loaded=True) == _written(params, orjson_loaded=False)


@pytest.mark.parametrize("depth", range(250, 260))
def test_nesting_around_orjsons_limit_is_written_alike(depth: int) -> None:
    import orjson  # noqa: F401 - loaded, as in the poller

    for wrap in (lambda v: [v], lambda v: {"k": v}):
        value: object = "x"
        for _ in range(depth):
            value = wrap(value)
        params: dict[object, object] = {"a": value}
        assert _written(params, orjson_loaded=True) == _written(params, orjson_loaded=False)


def test_a_process_without_orjson_writes_the_pollers_requests_alike() -> None:
    """A state item (pending deletes of hostile ids, a number past 64 bits) and a label
    batch (a name with NUL, U+2028, an emoji) in a process that never loaded orjson."""
    import orjson  # noqa: F401 - loaded here

    corpus = [
        {
            "TableName": "t",
            "Item": {
                "merchant_id": {"S": "M\x00\u2028😀"},
                "pending_deletes": {"L": [{"S": "a-b_٣"}, {"S": "Ａ"}, {"S": "\ud800"}]},
                "n": {"N": str(2**64)},
            },
        },
        {
            "QueueUrl": "q",
            "Entries": [
                {"Id": "0", "MessageBody": json.dumps({"pn": "é\x00\u2028"}, ensure_ascii=False)}
            ],
        },
        {"a": [2**63 - 1, -(2**63), 2**64 - 1, [[[]]], {}, True, None, ""]},
    ]
    code = (
        "import sys, json; from esl_sync.store import aws_codec; "
        "assert 'orjson' not in sys.modules; "
        "sys.stdout.write(json.dumps("
        "[aws_codec.encode(p).decode() for p in json.loads(sys.stdin.read())]))"
    )
    text = json.dumps(corpus)
    written = subprocess.run(
        [sys.executable, "-c", code], input=text, capture_output=True, text=True, check=True
    )
    assert json.loads(written.stdout) == [aws_codec.encode(p).decode() for p in json.loads(text)]
