"""Clover app webhooks as hints: they only bring a merchant's next poll forward.

Clover signs nothing: every delivery carries the static ``X-Clover-Auth`` code, compared
here in constant time. The body is validated before anything is queued; a malformed one
gets a 4xx naming what is wrong (never quoting it raw), and nothing ever answers 500 to
Clover. The body is read before authentication (the handshake has none), so reading it
must hold against anything: invalid UTF-8, nesting deep enough to exhaust the parser's
recursion, numbers of thousands of digits, NaN, NUL and lone surrogates in the ids.

:func:`receive_webhook` acts on a delivery: a verification code is stored for the operator
(never acted on; the last few are kept, see :data:`KEEP_VERIFICATION_CODES`); each known
merchant with inventory events gets one poll per window however many events arrive (a
conditional write claims the window), and the items it reports deleted are confirmed by
that poll one by one, up to :data:`MAX_PENDING_DELETES` waiting per merchant; beyond that
the merchant's next poll sweeps instead.
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from esl_sync.inputs import MERCHANT_ID
from esl_sync.messages import NotQueued, PollRequest
from esl_sync.observability import MetricUnit, first_named, logger, metrics
from esl_sync.ports import MerchantDirectory, PollQueue, WebhookHints
from esl_sync.records import Merchant, VerificationCode

MAX_BODY_BYTES = 256 * 1024  # Clover's notifications are small; anything larger is not one
MAX_NUMBER_DIGITS = 20
"""A JSON integer longer than this is refused before Python converts it (the only number
Clover sends is a millisecond timestamp; Python refuses 4,300 digits with a ValueError)."""
INVENTORY_PREFIX = "I:"
APP_PREFIX = "A:"
"""App events (``A:<app id>``): a ``DELETE`` reports the app uninstalled by the merchant
(unconfirmed by Clover's pages; docs/clover-api.md). Taken as a hint, like the rest."""
MAX_PENDING_DELETES = 500
WEBHOOK_WRITERS = 8
"""Merchants of one delivery whose DynamoDB writes are in flight at once (see
:func:`_queue_polls`): a few, well within what one table takes and one small function
holds."""
"""Item ids a merchant's state may hold for confirmation (5 polls' worth at 100 a poll,
at most ~35 KB). A flood beyond it asks for a sweep instead: the state item stays small
(DynamoDB refuses items over 400 KB, which would fail every poll of the merchant)."""
KEEP_VERIFICATION_CODES = 5
"""Anyone may POST a well-formed verification code (the handshake has no auth): the last
few are kept with their time and source address, so a forged one cannot hide Clover's."""
LATEST_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

CloverId = Annotated[str, StringConstraints(pattern=rf"^{MERCHANT_ID.pattern}$")]
"""Merchant and app ids (Clover's are 13 upper-case letters and digits): what the
``merchants`` table accepts, so NUL, lone surrogates or escapes never reach a store."""
ObjectId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{1,8}:[A-Za-z0-9_-]{1,64}$")]
"""``I:<item id>``, ``O:<order id>``, ``IS:…``: a type prefix and a Clover id."""
UuidText = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    ),
]
"""Clover's verification codes are UUIDs (``ce7643c1-83ea-4218-abe6-da876c9c7a0a``)."""


class CloverObjectEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    object_id: ObjectId = Field(alias="objectId")
    type: Literal["CREATE", "UPDATE", "DELETE"]
    ts: int = Field(ge=0, le=LATEST_TIMESTAMP_MS, strict=True)
    """A JSON integer only: pydantic's lax mode would read ``true`` as 1, ``"17"`` and
    ``1.0`` as numbers, none of which Clover sends."""


class CloverNotification(BaseModel):
    """``{"appId", "merchants": {"<mId>": [{"objectId", "type", "ts"}]}}``."""

    model_config = ConfigDict(extra="ignore")

    app_id: CloverId = Field(alias="appId")
    merchants: dict[CloverId, list[CloverObjectEvent]]


class VerificationRequest(BaseModel):
    """The one-time setup POST: its code is pasted into Clover's dashboard by a person."""

    model_config = ConfigDict(extra="forbid")

    verification_code: UuidText = Field(alias="verificationCode")


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
    sweeps_requested: list[str] = field(default_factory=list)
    uninstalled: dict[str, int] = field(default_factory=dict)  # merchant -> Clover's ts


class _NotAccepted(ValueError):
    """A body that is JSON-ish but outside what this endpoint reads (its message says why)."""


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _NotAccepted(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(digits)


def _no_constant(name: str) -> float:
    raise _NotAccepted(f"{name} is not JSON")


def parse_body(body: bytes) -> object:
    """The JSON of a body, or a ``ValueError`` whose message is the 400's reason.

    The standard library's parser with its edges closed: integers are length-checked
    before conversion, NaN/Infinity are refused, and a nesting deep enough to exhaust
    its recursion (``RecursionError``) is refused like any other malformed body.
    """
    try:
        return json.loads(body.decode("utf-8"), parse_int=_bounded_int, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8 text") from None
    except RecursionError:
        raise ValueError("body is not JSON this endpoint reads: nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"body is not JSON: {error.msg} (character {error.pos})") from None
    except _NotAccepted as error:
        raise ValueError(f"body is not JSON this endpoint reads: {error}") from None


def read_webhook(
    body: bytes,
    auth_header: str | None,
    expected_auth: Callable[[], str],
    is_known_merchant: Callable[[str], bool],
    is_registered: Callable[[str], bool] | None = None,
) -> WebhookResult:
    """Decide what a delivery asks for; queueing and logging are the caller's.

    ``expected_auth`` is called only for a delivery that needs it: the handshake comes
    before the operator has the auth code to configure. Inventory hints count for merchants
    that are polled (``is_known_merchant``), uninstall hints for any registered one
    (``is_registered``, by default the same).
    """
    if len(body) > MAX_BODY_BYTES:
        return WebhookResult(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = parse_body(body)
    except ValueError as error:
        return WebhookResult(400, str(error))
    if isinstance(payload, dict) and set(payload) == {"verificationCode"}:
        try:
            code = VerificationRequest.model_validate(payload).verification_code
        except ValidationError as error:
            return WebhookResult(400, _first_problem(error))
        return WebhookResult(200, "verification code received", verification_code=code)
    if not auth_header or not hmac.compare_digest(_bytes(auth_header), _bytes(expected_auth())):
        return WebhookResult(401, "missing or wrong X-Clover-Auth")
    try:
        notification = CloverNotification.model_validate(payload)
    except ValidationError as error:
        return WebhookResult(400, _first_problem(error))
    return _plan(notification, is_known_merchant, is_registered or is_known_merchant)


def _plan(
    notification: CloverNotification,
    is_known: Callable[[str], bool],
    is_registered: Callable[[str], bool],
) -> WebhookResult:
    result = WebhookResult(202, "accepted")
    for merchant_id, events in notification.merchants.items():
        inventory = [e for e in events if e.object_id.startswith(INVENTORY_PREFIX)]
        removals = [
            e.ts for e in events if e.object_id.startswith(APP_PREFIX) and e.type == "DELETE"
        ]
        result.ignored_events += len(events) - len(inventory) - len(removals)
        if removals and is_registered(merchant_id):
            result.uninstalled[merchant_id] = max(removals)
        elif removals:
            result.ignored_events += len(removals)
            if not inventory:
                result.unknown_merchants.append(merchant_id)
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


def _bytes(text: str) -> bytes:
    """Header text as bytes, whatever it holds (a lone surrogate must not raise here)."""
    return text.encode("utf-8", "surrogatepass")


def _first_problem(error: ValidationError) -> str:
    """Pydantic's first complaint, its location escaped: a location can be a merchant id
    the sender chose (NUL, escapes, surrogates), and the answer and the log must not carry
    it raw. Pydantic's messages themselves never quote the input."""
    problem = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(_plain(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}"


def _plain(part: str | int) -> str:
    text = str(part)
    if text.isascii() and text.isprintable() and len(text) <= 64:
        return text
    return ascii(text[:64])


def source_address(text: str | None) -> str | None:
    """The caller's IP address as the HTTP API saw it, if it is one. A scoped IPv6 address
    (``fe80::1%<zone>``) is not: the standard library takes any text as its zone (escapes,
    megabytes), and API Gateway never sends one; only another caller of the function does."""
    try:
        address = ipaddress.ip_address(text) if text else None
    except ValueError:
        return None
    if address is None or getattr(address, "scope_id", None) is not None:
        return None
    return str(address)


@dataclass
class WebhookDeps:
    merchants: MerchantDirectory
    hints: WebhookHints
    poll_queue: PollQueue
    expected_auth: Callable[[], str]
    window_seconds: int
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


def receive_webhook(
    body: bytes, auth_header: str | None, deps: WebhookDeps, *, source_ip: str | None = None
) -> WebhookResult:
    """Read a delivery and act on it; the result is the HTTP answer (logged and counted)."""
    lookup = cache(deps.merchants.get)  # one query per merchant and delivery
    result = read_webhook(
        body,
        auth_header,
        deps.expected_auth,
        _syncable(lookup),
        lambda merchant_id: lookup(merchant_id) is not None,
    )
    now = deps.clock()
    if result.verification_code is not None:
        received = VerificationCode(result.verification_code, now, source_address(source_ip))
        deps.hints.record_verification_code(received, keep=KEEP_VERIFICATION_CODES)
        logger.info(
            "Clover webhook verification code received: paste it into the app's webhook"
            " settings in Clover's dashboard (also shown by esl-sync status)",
            verification_code=received.code,
            source_ip=received.source_ip,
        )
    elif result.status == 202:
        _record_uninstalls(result, deps, _syncable(lookup), now)
        _queue_polls(result, deps, now)
    _report(result)
    return result


def _syncable(lookup: Callable[[str], Merchant | None]) -> Callable[[str], bool]:
    """Known here means polled: registered, active and with a Hipoink store."""

    def known(merchant_id: str) -> bool:
        merchant = lookup(merchant_id)
        return merchant is not None and merchant.active and bool(merchant.store_code)

    return known


def _record_uninstalls(
    result: WebhookResult, deps: WebhookDeps, polled: Callable[[str], bool], now: datetime
) -> None:
    """An uninstall is noted (the token keeper treats tokens authorized before it as
    refused: the merchant is marked ``needs_reauth`` and no longer polled; its labels stay)
    and the merchant's poll brought forward so that it happens now.

    Its time is Clover's ``ts``, but never later than the delivery's arrival: the reading
    lets any time up to the year 9999 through, and an uninstall noted in the future would
    refuse every token stored before that date (a reinstall's, an operator's), for good."""
    now_ms = int(now.timestamp() * 1000)
    for merchant_id, ts in result.uninstalled.items():
        deps.hints.record_uninstall(merchant_id, ts_ms=min(ts, now_ms))
        logger.warning(
            "Clover reported the app uninstalled: the merchant is no longer polled once its"
            " next poll runs (its labels stay); a reinstall resumes it",
            merchant_id=merchant_id,
        )
        if polled(merchant_id) and merchant_id not in result.merchants_to_poll:
            result.merchants_to_poll.append(merchant_id)


def _queue_polls(result: WebhookResult, deps: WebhookDeps, now: datetime) -> None:
    """One poll per merchant and window: the first hint claims the window and queues the
    poll; later ones in the window are covered by it. Deletions are recorded first, so a
    poll that has not started yet confirms them too.

    A merchant's two writes wait on DynamoDB, so the merchants' writes overlap, at most
    :data:`WEBHOOK_WRITERS` at a time: a head office's change names hundreds of stores in
    one delivery, and one after another they passed the function's timeout (a delivery cut
    off had claimed windows and queued no poll). Their results are read in order, so the
    answer and the log are the same as ever.

    The window is claimed before the poll is queued (sending first would queue a poll for
    every hint), so the claims of polls SQS did not surely take are given back before the
    delivery fails (503): Clover's redelivery claims them again and queues the polls, where
    it found them claimed by polls never queued (the change waited for the schedule). A
    send refused in part keeps the claims of the polls it queued: one poll per window
    holds, but for a batch whose call failed after SQS took it (polled twice: harmless
    under the lease). A merchant whose writes failed fails the delivery once the others'
    polls are queued; a give-back that fails loses its hint (logged)."""
    now_ms = int(now.timestamp() * 1000)
    until_ms = now_ms + deps.window_seconds * 1000

    def hint(merchant_id: str) -> tuple[bool, bool]:
        deleted = result.deleted_items.get(merchant_id, [])
        added = deps.hints.add_pending_deletes(merchant_id, deleted, limit=MAX_PENDING_DELETES)
        claimed = deps.hints.claim_webhook_poll(
            merchant_id, now_ms=now_ms, window_ms=until_ms - now_ms
        )
        return added, claimed

    merchants = result.merchants_to_poll
    hinted = _overlapped(hint, merchants)
    failed = [outcome for outcome in hinted if isinstance(outcome, Exception)]
    for merchant_id, outcome in zip(merchants, hinted, strict=True):
        if isinstance(outcome, Exception):
            continue
        added, claimed = outcome
        if not added:
            result.sweeps_requested.append(merchant_id)
        (result.polls_queued if claimed else result.polls_coalesced).append(merchant_id)
    requests = [
        PollRequest(merchant_id=m, reason="webhook", requested_at=now) for m in result.polls_queued
    ]
    try:
        deps.poll_queue.send(requests)
    except Exception as error:
        queued = error.queued if isinstance(error, NotQueued) else frozenset()
        unsent = [r.merchant_id for i, r in enumerate(requests) if i not in queued]
        _give_back(unsent, deps, until_ms)
        raise
    if failed:
        raise failed[0]


def _overlapped[T](write: Callable[[str], T], merchants: list[str]) -> list[T | Exception]:
    """``write`` for each merchant, a few at a time (threads only when there is something
    to overlap), each in a copy of this thread's context (what it carries follows the
    write); each one's result, or what it raised, in order."""

    def outcome(merchant_id: str) -> T | Exception:
        try:
            return write(merchant_id)
        except Exception as error:
            return error

    if len(merchants) < 2:
        return [outcome(m) for m in merchants]
    with ThreadPoolExecutor(min(WEBHOOK_WRITERS, len(merchants))) as pool:
        run = [pool.submit(contextvars.copy_context().run, outcome, m) for m in merchants]
        return [future.result() for future in run]


def _give_back(merchants: list[str], deps: WebhookDeps, until_ms: int) -> None:
    """Release the windows of polls that were not queued, best effort (see
    :func:`_queue_polls`); a window kept is a hint lost until the next scheduled poll."""

    def release(merchant_id: str) -> None:
        deps.hints.release_webhook_poll(merchant_id, until_ms=until_ms)

    kept = [
        m
        for m, out in zip(merchants, _overlapped(release, merchants), strict=True)
        if out is not None
    ]
    logger.warning(
        "webhook polls not queued: their windows given back, so Clover's redelivery polls",
        not_queued=first_named(merchants),
        not_queued_count=len(merchants),
        windows_kept=first_named(kept),
        windows_kept_count=len(kept),
    )


def _report(result: WebhookResult) -> None:
    """One line of what the delivery did. A delivery may name a chain's every store, so
    each list of merchants is named by its first fifty (``first_named``) with its count
    (``<list>_count``): the line stays one CloudWatch Logs event (README, *Log lines stay
    one log event*)."""
    fields: dict[str, object] = {
        "status": result.status,
        "detail": result.message,
        "ignored_events": result.ignored_events,
        "deletes_reported": sum(len(ids) for ids in result.deleted_items.values()),
    }
    for name, merchants in (
        ("polls_queued", result.polls_queued),
        ("polls_coalesced", result.polls_coalesced),
        ("unknown_merchants", result.unknown_merchants),
        ("sweeps_requested", result.sweeps_requested),
        ("uninstalled", list(result.uninstalled)),
    ):
        fields[name] = first_named(merchants)
        fields[f"{name}_count"] = len(merchants)
    logger.info("webhook handled", extra=fields)
    for name, value in (
        ("WebhookRequests", 1),
        ("WebhookRejected", int(result.status >= 400)),
        ("WebhookPollsQueued", len(result.polls_queued)),
        ("WebhookPollsCoalesced", len(result.polls_coalesced)),
        ("WebhookUnknownMerchants", len(result.unknown_merchants)),
        ("WebhookEventsIgnored", result.ignored_events),
        ("WebhookSweepsRequested", len(result.sweeps_requested)),
        ("WebhookUninstalls", len(result.uninstalled)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
