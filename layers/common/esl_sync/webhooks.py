"""Clover app webhooks as hints: they only bring a merchant's next poll forward.

Clover signs nothing: every delivery carries the static ``X-Clover-Auth`` code, compared
here in constant time. The body is validated before anything is queued; a malformed one
gets a 400 naming what is wrong, and nothing ever answers 500 to Clover.

:func:`receive_webhook` acts on a delivery: the one-time verification code is stored for
the operator (never acted on); each known merchant with inventory events gets one poll
per window however many events arrive (a conditional write claims the window), and the
items it reports deleted are confirmed by that poll one by one.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from esl_sync.messages import PollRequest
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.store.interfaces import MerchantDirectory, PollQueue, WebhookHints

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
    polls_queued: list[str] = field(default_factory=list)
    polls_coalesced: list[str] = field(default_factory=list)


def read_webhook(
    body: bytes,
    auth_header: str | None,
    expected_auth: Callable[[], str],
    is_known_merchant: Callable[[str], bool],
) -> WebhookResult:
    """Decide what a delivery asks for; queueing and logging are the caller's.

    ``expected_auth`` is called only for a delivery that needs it: the handshake comes
    before the operator has the auth code to configure.
    """
    if len(body) > MAX_BODY_BYTES:
        return WebhookResult(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return WebhookResult(400, "body is not UTF-8 text")
    except json.JSONDecodeError as error:
        return WebhookResult(400, f"body is not JSON: {error.msg} (character {error.pos})")
    if isinstance(payload, dict) and set(payload) == {"verificationCode"}:
        try:
            code = VerificationRequest.model_validate(payload).verification_code
        except ValidationError as error:
            return WebhookResult(400, _first_problem(error))
        return WebhookResult(200, "verification code received", verification_code=code)
    if not auth_header or not hmac.compare_digest(auth_header.encode(), expected_auth().encode()):
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


@dataclass
class WebhookDeps:
    merchants: MerchantDirectory
    hints: WebhookHints
    poll_queue: PollQueue
    expected_auth: Callable[[], str]
    window_seconds: int
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


def receive_webhook(body: bytes, auth_header: str | None, deps: WebhookDeps) -> WebhookResult:
    """Read a delivery and act on it; the result is the HTTP answer (logged and counted)."""
    result = read_webhook(body, auth_header, deps.expected_auth, _syncable(deps.merchants))
    now = deps.clock()
    if result.verification_code is not None:
        deps.hints.record_verification_code(result.verification_code, now)
        logger.info(
            "Clover webhook verification code received: paste it into the app's webhook"
            " settings in Clover's dashboard (also shown by esl-sync status)",
            verification_code=result.verification_code,
        )
    elif result.status == 202:
        _queue_polls(result, deps, now)
    _report(result)
    return result


def _syncable(merchants: MerchantDirectory) -> Callable[[str], bool]:
    """Known here means polled: registered, active and with a Hipoink store."""

    def known(merchant_id: str) -> bool:
        merchant = merchants.get(merchant_id)
        return merchant is not None and merchant.active and bool(merchant.store_code)

    return known


def _queue_polls(result: WebhookResult, deps: WebhookDeps, now: datetime) -> None:
    """One poll per merchant and window: the first hint claims the window and queues the
    poll; later ones in the window are covered by it. Deletions are recorded first, so a
    poll that has not started yet confirms them too."""
    now_ms = int(now.timestamp() * 1000)
    for merchant_id in result.merchants_to_poll:
        deps.hints.add_pending_deletes(merchant_id, result.deleted_items.get(merchant_id, []))
        if deps.hints.claim_webhook_poll(
            merchant_id, now_ms=now_ms, window_ms=deps.window_seconds * 1000
        ):
            result.polls_queued.append(merchant_id)
        else:
            result.polls_coalesced.append(merchant_id)
    requests = [
        PollRequest(merchant_id=m, reason="webhook", requested_at=now) for m in result.polls_queued
    ]
    deps.poll_queue.send(requests)


def _report(result: WebhookResult) -> None:
    logger.info(
        "webhook handled",
        status=result.status,
        detail=result.message,
        polls_queued=result.polls_queued,
        polls_coalesced=result.polls_coalesced,
        unknown_merchants=result.unknown_merchants,
        ignored_events=result.ignored_events,
        deletes_reported=sum(len(ids) for ids in result.deleted_items.values()),
    )
    for name, value in (
        ("WebhookRequests", 1),
        ("WebhookRejected", int(result.status >= 400)),
        ("WebhookPollsQueued", len(result.polls_queued)),
        ("WebhookPollsCoalesced", len(result.polls_coalesced)),
        ("WebhookUnknownMerchants", len(result.unknown_merchants)),
        ("WebhookEventsIgnored", result.ignored_events),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
