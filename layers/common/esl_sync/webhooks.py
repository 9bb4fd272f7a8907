"""Clover app webhooks as hints: they only bring a merchant's next poll forward.

Clover signs nothing: every delivery carries the static ``X-Clover-Auth`` code, compared
here in constant time. The body is validated before anything is queued; a malformed one
gets a 400 naming what is wrong, and nothing ever answers 500 to Clover.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BODY_BYTES = 256 * 1024  # Clover's notifications are small; anything larger is not one
INVENTORY_PREFIX = "I:"


class CloverObjectEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    object_id: str = Field(alias="objectId", min_length=3, max_length=200)
    type: Literal["CREATE", "UPDATE", "DELETE"]
    ts: int = Field(ge=0)


class CloverNotification(BaseModel):
    """``{"appId", "merchants": {"<mId>": [{"objectId", "type", "ts"}]}}``."""

    model_config = ConfigDict(extra="ignore")

    app_id: str = Field(alias="appId", min_length=1)
    merchants: dict[str, list[CloverObjectEvent]]


class VerificationRequest(BaseModel):
    """The one-time setup POST: its code is pasted into Clover's dashboard by a person."""

    model_config = ConfigDict(extra="forbid")

    verification_code: str = Field(alias="verificationCode", min_length=1, max_length=200)


@dataclass
class WebhookResult:
    """The HTTP answer, and what to do about it."""

    status: int
    message: str
    verification_code: str | None = None
    merchants_to_poll: list[str] = field(default_factory=list)
    deleted_items: dict[str, list[str]] = field(default_factory=dict)
    ignored_events: int = 0
    unknown_merchants: list[str] = field(default_factory=list)


def read_webhook(
    body: bytes,
    auth_header: str | None,
    expected_auth: str,
    is_known_merchant: Callable[[str], bool],
) -> WebhookResult:
    """Decide what a delivery asks for; queueing and logging are the caller's."""
    if len(body) > MAX_BODY_BYTES:
        return WebhookResult(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return WebhookResult(400, "body is not UTF-8 text")
    except json.JSONDecodeError as error:
        return WebhookResult(400, f"body is not JSON: {error.msg} at character {error.pos}")
    if isinstance(payload, dict) and set(payload) == {"verificationCode"}:
        try:
            code = VerificationRequest.model_validate(payload).verification_code
        except ValidationError as error:
            return WebhookResult(400, _first_problem(error))
        return WebhookResult(200, "verification code received", verification_code=code)
    if not auth_header or not hmac.compare_digest(auth_header.encode(), expected_auth.encode()):
        return WebhookResult(401, "missing or wrong X-Clover-Auth")
    try:
        notification = CloverNotification.model_validate(payload)
    except ValidationError as error:
        return WebhookResult(400, _first_problem(error))
    return _plan(notification, is_known_merchant)


def _plan(notification: CloverNotification, is_known: Callable[[str], bool]) -> WebhookResult:
    result = WebhookResult(202, "accepted")
    for merchant_id, events in notification.merchants.items():
        inventory = [e for e in events if e.object_id.startswith(INVENTORY_PREFIX)]
        result.ignored_events += len(events) - len(inventory)
        if not inventory:
            continue
        if not is_known(merchant_id):
            result.unknown_merchants.append(merchant_id)
            result.ignored_events += len(inventory)
            continue
        result.merchants_to_poll.append(merchant_id)
        deleted = _item_ids(e for e in inventory if e.type == "DELETE")
        if deleted:
            result.deleted_items[merchant_id] = deleted
    return result


def _item_ids(events: Iterable[CloverObjectEvent]) -> list[str]:
    return sorted({e.object_id.removeprefix(INVENTORY_PREFIX) for e in events})


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}"
