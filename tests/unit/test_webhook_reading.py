"""Reading Clover webhook deliveries: handshake, auth, shape, and what to poll."""

from __future__ import annotations

import json

import pytest

from esl_sync.webhooks import MAX_BODY_BYTES, read_webhook

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
        (b"x" * (MAX_BODY_BYTES + 1), 413, "larger than"),
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
