"""Reading Clover webhook deliveries: handshake, auth, shape, and what to poll."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from esl_sync.records import Merchant
from esl_sync.webhooks import WebhookDeps, read_webhook, receive_webhook, source_address
from tests.fakes import MemoryDirectory, MemoryHints, MemoryPollQueue

AUTH = "clover-auth-code"
KNOWN = {"MKNOWN000001", "MKNOWN000002"}


def _read(body: bytes | dict[str, object], auth: str | None = AUTH):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_webhook(raw, auth, lambda: AUTH, KNOWN.__contains__)


def _event(object_id: str, kind: str = "UPDATE") -> dict[str, object]:
    return {"objectId": object_id, "type": kind, "ts": 1795867200000}


def test_verification_handshake_needs_no_auth_and_queues_nothing() -> None:
    code = "ce7643c1-83ea-4218-abe6-da876c9c7a0a"
    result = _read({"verificationCode": code}, auth=None)
    assert (result.status, result.verification_code) == (200, code)
    assert result.merchants_to_poll == []


@pytest.mark.parametrize("auth", [None, "", "wrong", AUTH + "x"])
def test_a_missing_or_wrong_auth_code_is_401(auth: str | None) -> None:
    body = {"appId": "APP", "merchants": {"MKNOWN000001": [_event("I:ITEM1")]}}
    result = _read(body, auth)
    assert result.status == 401
    assert result.merchants_to_poll == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"appId": "APP", "merch', 400, "not JSON"),
        (b"\xff\xfe", 400, "not UTF-8"),
        (b"x" * (256 * 1024 + 1), 413, "larger than"),
        (b'{"appId": "APP", "merchants": []}', 400, "merchants"),
        (
            b'{"appId": "APP", "merchants": {"M": [{"objectId": "I:1", "type": "MOVE", "ts": 1}]}}',
            400,
            "type",
        ),
        (b'{"merchants": {}}', 400, "appId"),
        (b"[1, 2]", 400, "body"),
    ],
)
def test_malformed_bodies_get_a_reason(body: bytes, status: int, says: str) -> None:
    result = _read(body)
    assert result.status == status
    assert says in result.message
    assert result.merchants_to_poll == []


def test_one_poll_per_known_merchant_with_inventory_events() -> None:
    body = {
        "appId": "APP",
        "merchants": {
            "MKNOWN000001": [_event(f"I:ITEM{i}") for i in range(50)] + [_event("O:ORDER1")],
            "MKNOWN000002": [_event("O:ORDER2"), _event("C:CUSTOMER")],
            "MUNKNOWN0001": [_event("I:ITEMX")],
        },
    }
    result = _read(body)
    assert result.status == 202
    assert result.merchants_to_poll == ["MKNOWN000001"]
    assert result.unknown_merchants == ["MUNKNOWN0001"]
    assert result.ignored_events == 1 + 2 + 1


def test_deleted_items_are_named_for_confirmation() -> None:
    body = {
        "appId": "APP",
        "merchants": {
            "MKNOWN000001": [
                _event("I:GONE1", "DELETE"),
                _event("I:GONE1", "DELETE"),
                _event("I:KEPT1", "UPDATE"),
            ]
        },
    }
    assert _read(body).deleted_items == {"MKNOWN000001": ["GONE1"]}


def _notification(**extra: object) -> bytes:
    body = {"appId": "APP", "merchants": {"MKNOWN000001": [_event("I:ITEM1")]}} | extra
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "body is not UTF-8 text"),
        (b"[" * 100_000, "body is not JSON this endpoint reads: nested too deeply"),
        (b'{"appId": NaN}', "body is not JSON this endpoint reads: NaN is not JSON"),
        (b'{"appId": -Infinity}', "body is not JSON this endpoint reads: -Infinity is not JSON"),
        (
            b'{"appId": "APP", "n": 123456789012345678901}',
            "body is not JSON this endpoint reads: a number has more than 20 digits",
        ),
        (b'{"appId": "APP",', "body is not JSON: Expecting property name enclosed in double"),
    ],
)
def test_a_body_that_is_not_plain_json_is_refused_saying_why(body: bytes, message: str) -> None:
    result = _read(body)
    assert (result.status, result.message[: len(message)]) == (400, message)


@pytest.mark.parametrize("number", ["12345678901234567890", "-12345678901234567890"])
def test_numbers_of_twenty_digits_are_read(number: str) -> None:
    body = _notification()[:-1] + f', "n": {number}}}'.encode()
    assert (_read(body).status, _read(body).message) == (202, "accepted")


def test_a_body_of_256_kib_is_read_and_one_byte_more_is_refused() -> None:
    fitting = _notification()[:-1] + b', "pad": "' + b"x" * 300_000
    fitting = fitting[: 256 * 1024 - 2] + b'"}'
    assert (len(fitting), _read(fitting).status) == (256 * 1024, 202)
    refused = _read(fitting[:-2] + b'x"}')
    assert (refused.status, refused.message) == (413, "body larger than 262144 bytes")


@pytest.mark.parametrize(
    ("ts", "status"), [(0, 202), (253_402_300_799_999, 202), (253_402_300_800_000, 400), (-1, 400)]
)
def test_event_times_run_from_1970_to_the_end_of_year_9999(ts: int, status: int) -> None:
    event = {"objectId": "I:ITEM1", "type": "UPDATE", "ts": ts}
    assert _read({"appId": "APP", "merchants": {"MKNOWN000001": [event]}}).status == status


def test_each_answer_says_what_happened() -> None:
    code = "ce7643c1-83ea-4218-abe6-da876c9c7a0a"
    assert _read({"verificationCode": code}, auth=None).message == "verification code received"
    assert _read(_notification(), auth="wrong").message == "missing or wrong X-Clover-Auth"
    assert _read(_notification()).message == "accepted"


def test_an_auth_header_of_any_text_is_only_wrong() -> None:
    assert _read(_notification(), auth="\ud800").status == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "body: Input should be a valid dictionary or instance of CloverNotification"),
        (
            {"verificationCode": "not-a-uuid"},
            "verificationCode: String should match pattern",
        ),
        (
            {"appId": "APP", "merchants": {"MKNOWN000001": [_event("I:1", "MOVE")]}},
            "merchants.MKNOWN000001.0.type: Input should be 'CREATE', 'UPDATE' or 'DELETE'",
        ),
        (
            {"appId": "APP", "merchants": {"A" * 64: [_event("bad")]}},
            f"merchants.{'A' * 64}.0.objectId: String should match pattern",
        ),
        (
            {"appId": "APP", "merchants": {"B" * 65: []}},
            f"merchants.'{'B' * 64}'.[key]: String should match pattern",
        ),
        (
            {"appId": "APP", "merchants": {"M\x00É": []}},
            "merchants.'M\\x00\\xc9'.[key]: String should match pattern",
        ),
    ],
)
def test_a_refusal_names_where_without_quoting_the_sender_raw(
    body: bytes | dict[str, object], message: str
) -> None:
    result = _read(
        body, auth=None if isinstance(body, dict) and "verificationCode" in body else AUTH
    )
    assert (result.status, result.message[: len(message)]) == (400, message)


def test_a_merchant_without_inventory_events_does_not_stop_the_others() -> None:
    body = {
        "appId": "APP",
        "merchants": {"MKNOWN000002": [_event("O:ORDER1")], "MKNOWN000001": [_event("I:ITEM1")]},
    }
    assert _read(body).merchants_to_poll == ["MKNOWN000001"]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("52.9.80.11", "52.9.80.11"),
        ("2001:DB8::0001", "2001:db8::1"),
        ("52.9.80", None),
        ("fe80::1%eth0", None),  # a zone: any text after the %
        ("fe80::1%\x1b[2J" + "x" * 10_000, None),
        ("", None),
        (None, None),
    ],
)
def test_the_source_address_is_kept_only_when_it_is_one(
    text: str | None, address: str | None
) -> None:
    assert source_address(text) == address


def _receive(body: bytes | dict[str, object], hints: MemoryHints, auth: str | None = AUTH) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    merchants = MemoryDirectory([Merchant("MKNOWN000001", "S1")])
    deps = WebhookDeps(merchants, hints, MemoryPollQueue(), lambda: AUTH, 10)
    receive_webhook(raw, auth, deps, source_ip="52.9.80.11")


def test_the_store_keeps_the_last_five_codes_and_500_deletes_per_merchant() -> None:
    """The limits are the store's to enforce; the webhook passes the documented ones."""
    hints = MemoryHints()
    _receive({"verificationCode": "ce7643c1-83ea-4218-abe6-da876c9c7a0a"}, hints, auth=None)
    _receive(_notification(), hints)
    assert [keep for _, keep in hints.codes] == [5]
    assert hints.deletes == [("MKNOWN000001", [], 500)]


def test_an_unknown_merchant_does_not_stop_the_known_ones() -> None:
    body = {
        "appId": "APP",
        "merchants": {"MUNKNOWN0001": [_event("I:X")], "MKNOWN000001": [_event("I:ITEM1")]},
    }
    result = _read(body)
    assert (result.merchants_to_poll, result.unknown_merchants) == (
        ["MKNOWN000001"],
        ["MUNKNOWN0001"],
    )


@pytest.mark.parametrize(
    ("ts", "recorded"),
    [
        (1_795_867_199_999, 1_795_867_199_999),  # before the arrival: as Clover says
        (1_795_867_200_000, 1_795_867_200_000),
        (1_795_867_200_001, 1_795_867_200_000),  # after it: the arrival
        (253_402_300_799_999, 1_795_867_200_000),  # the year 9999
    ],
)
def test_an_uninstall_is_noted_no_later_than_its_arrival(ts: int, recorded: int) -> None:
    hints = MemoryHints()
    merchants = MemoryDirectory([Merchant("MKNOWN000001", "S1")])
    arrival = datetime.fromtimestamp(1_795_867_200, UTC)
    deps = WebhookDeps(merchants, hints, MemoryPollQueue(), lambda: AUTH, 10, lambda: arrival)
    body = {"appId": "APP", "merchants": {"MKNOWN000001": [_event("A:APP", "DELETE") | {"ts": ts}]}}
    assert receive_webhook(json.dumps(body).encode(), AUTH, deps).status == 202
    assert hints.uninstalls == [("MKNOWN000001", recorded)]
