"""The app's install flow: a merchant installs the app in Clover and reaches its first
labels without an operator handling a token (docs/architecture.md, "Onboarding").

1. :func:`start_install` answers Clover's site URL (``merchant_id`` in the query): it sends
   the browser to ``/oauth/v2/authorize`` on the region's web host with the app's
   ``client_id``, the ``redirect_uri`` and a signed, expiring ``state`` bound to the
   merchant (:mod:`esl_sync.oauth_state`). Nothing is written.
2. :func:`finish_install` answers the redirect back (``code``, ``merchant_id``,
   ``state``). Everything it can check without writing comes first: the query, the state's
   signature and age, that it was made for this merchant. Then, under the merchant's
   refresh lock (exchanges and refreshes never overlap), the sign-in is marked used by a
   conditional write (a replayed, double-clicked or overtaken callback stops there, before
   any exchange); the code is exchanged once; the pair is encrypted and stored as a new
   token generation, unless tokens were stored since the sign-in began (they are newer);
   and, in the same Postgres transaction, the merchant is registered or re-activated with
   its store code. Known, its first poll is queued at once; unknown, it awaits an operator
   (``esl-sync merchants set-store``).

Every answer is a small page (:mod:`esl_sync.web`) naming what happened; no page, URL we
make or log line holds a code, a token or a secret. A refusal is a 4xx page with the
reason's name and the request's reference id; what is unexpected (a store down) is the
handler's 503.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlencode

from esl_sync import oauth_state
from esl_sync.clover.errors import CloverBadResponse, CloverCodeRejected, CloverError
from esl_sync.credentials import TOKEN, CloverTokens
from esl_sync.inputs import MERCHANT_ID, InvalidInput, store_code, usable_pair
from esl_sync.messages import PollRequest
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import CodeExchanger, InstallTokens, MerchantRegistry, PollQueue
from esl_sync.web import Page, QueryRefused, read_query

CALLBACK_PATH = "/clover/oauth/callback"
INSTALL_PARAMETERS = ("merchant_id", "client_id", "employee_id")
CALLBACK_PARAMETERS = ("code", "merchant_id", "state", "client_id", "employee_id")
MAX_CODE_CHARS = 2048
LOCK_WAIT_SECONDS = 8.0
"""A second callback of one merchant waits this long for the first one's exchange (the
HTTP API gives a request 30 s), then finds its sign-in used."""
REPORTING_MS = 2_000
"""What a callback needs after a statement Postgres did not answer: giving the merchant's
lock back (one DynamoDB write; otherwise it expires with ``lock_ms``) and the "not available
right now" page. No statement of onboarding waits past the invocation's remaining time less
this (:mod:`esl_sync.statement_deadline`): a registration reached after the lock's wait
(8 s) and Clover's exchange (10 s) still has 5 s of the function's 25."""

_START_AGAIN = "Open esl-sync again from your Clover dashboard to start over."
REFUSALS: dict[str, tuple[int, str, str]] = {
    "bad_request": (400, "This address cannot be read", _START_AGAIN),
    "no_merchant": (400, "No Clover business named", "Open esl-sync from your Clover dashboard."),
    "other_app": (400, "This link belongs to another app", _START_AGAIN),
    "no_code": (400, "Clover did not approve esl-sync", _START_AGAIN),
    "state_malformed": (400, "This sign-in was not started by esl-sync", _START_AGAIN),
    "state_forged": (400, "This sign-in was not started by esl-sync", _START_AGAIN),
    "state_expired": (400, "This sign-in expired", _START_AGAIN),
    "merchant_mismatch": (
        400,
        "This approval is for another business",
        "The business you approved is not the one that started the sign-in. " + _START_AGAIN,
    ),
    "state_used": (
        400,
        "This sign-in was already used",
        "Each sign-in works once. If esl-sync shows as connected in Clover, nothing is left"
        " to do; otherwise " + _START_AGAIN[0].lower() + _START_AGAIN[1:],
    ),
    "busy": (409, "Another sign-in of this business is running", "Wait a minute. " + _START_AGAIN),
    "code_refused": (
        400,
        "Clover refused the approval",
        _START_AGAIN + " If it happens again, give your esl-sync operator the reference below.",
    ),
    "newer_tokens": (409, "A newer connection was made meanwhile", "Nothing was changed."),
    "clover_unavailable": (502, "Clover did not answer", "Wait a minute. " + _START_AGAIN),
    "not_found": (404, "There is nothing here", _START_AGAIN),
}
"""Every refusal, by name: its HTTP status, the page's title and what to do."""


@dataclass
class OnboardingDeps:
    """What the install routes need; the app's credentials and the state key are read on
    use (through the secrets' five-minute cache)."""

    client_id: Callable[[], str]
    client_secret: Callable[[], str]
    state_key: Callable[[], bytes]
    redirect_uri: str | None  # None: the callback route on the host the request came to
    api_base_url: str  # the app's region: the code exchange and the merchant's polls
    authorize_base_url: str  # the region's web host: the browser's authorize page
    state_ttl_seconds: int
    store_code_template: str
    exchanger: Callable[[], CodeExchanger]
    tokens: InstallTokens
    merchants: MerchantRegistry
    poll_queue: PollQueue
    lock_ms: int = 30_000
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NewerTokens(Exception):
    """Tokens were stored while the code was exchanged: they win, nothing is written."""


def start_install(
    raw_query: str, deps: OnboardingDeps, *, reference: str, host: str | None
) -> Page:
    """Clover's site URL: on to Clover's authorize page with a fresh state. The redirect
    URI is ``CLOVER_OAUTH_REDIRECT_URI``, else the callback route on ``host`` (the API's
    own name as API Gateway saw the request: a subpath of the site URL)."""
    try:
        query = _query(raw_query, INSTALL_PARAMETERS)
        merchant_id = _merchant_id(query)
        _same_app(query, deps)
        redirect_uri = deps.redirect_uri or (f"https://{host}{CALLBACK_PATH}" if host else None)
        if redirect_uri is None:
            raise _Refused("bad_request")
    except _Refused as refusal:
        return _refused("install", refusal.reason, reference, None)
    text, _state = oauth_state.issue(deps.state_key(), merchant_id, _ms(deps.clock()))
    location = f"{deps.authorize_base_url}/oauth/v2/authorize?" + urlencode(
        {"client_id": deps.client_id(), "redirect_uri": redirect_uri, "state": text}
    )
    logger.info("install started", merchant_id=merchant_id, reference=reference)
    metrics.add_metric(name="OnboardingStarted", unit=MetricUnit.Count, value=1)
    return Page(
        302, "Continue to Clover", ("Clover asks you to approve esl-sync.",), location=location
    )


def finish_install(raw_query: str, deps: OnboardingDeps, *, reference: str) -> Page:
    """The redirect back from Clover: exchange the code once, store, register."""
    merchant_id: str | None = None
    try:
        query = _query(raw_query, CALLBACK_PARAMETERS)
        merchant_id = _merchant_id(query)
        _same_app(query, deps)
        code = _code(query)
        state = _state(query, deps)
        if state.merchant_id != merchant_id:
            raise _Refused("merchant_mismatch")
        with _merchant_lock(deps, merchant_id) as held:
            if not held:
                raise _Refused("busy")
            if not deps.tokens.claim_install(
                merchant_id, issued_ms=state.issued_ms, nonce=state.nonce
            ):
                raise _Refused("state_used")
            store = _connect(deps, merchant_id, code, state.issued_ms, reference)
    except _Refused as refusal:
        return _refused("callback", refusal.reason, reference, merchant_id)
    metrics.add_metric(name="OnboardingCompleted", unit=MetricUnit.Count, value=1)
    logger.info("install finished", merchant_id=merchant_id, store_code=store, reference=reference)
    if store is None:
        metrics.add_metric(name="OnboardingAwaitingStoreCode", unit=MetricUnit.Count, value=1)
        logger.warning(
            "merchant installed the app and awaits its Hipoink store code: esl-sync merchants"
            " set-store MERCHANT STORE",
            merchant_id=merchant_id,
            reference=reference,
        )
        return Page(
            200,
            "esl-sync is connected and awaits its setup",
            (
                "Your Clover business is connected. Your esl-sync operator still has to name"
                " the shelf-label store it belongs to; your labels follow once that is done.",
            ),
            reference,
        )
    _first_poll(deps, merchant_id, reference)
    return Page(
        200,
        "esl-sync is connected",
        ("Your shelf labels follow your Clover prices from now on; the first ones in minutes.",),
        reference,
    )


def _first_poll(deps: OnboardingDeps, merchant_id: str, reference: str) -> None:
    """Queue the merchant's first poll now. The merchant is connected whatever happens
    here: if the queue fails, the next scheduled dispatch polls it (logged, not raised)."""
    try:
        deps.poll_queue.send([PollRequest(merchant_id=merchant_id, reason="install")])
    except Exception:
        logger.exception(
            "first poll not queued; the next scheduled dispatch polls the merchant",
            merchant_id=merchant_id,
            reference=reference,
        )


def _connect(
    deps: OnboardingDeps, merchant_id: str, code: str, issued_ms: int, reference: str
) -> str | None:
    """Exchange, seal, store and register (holding the lock, the sign-in claimed); the
    merchant's store code, None while it awaits one."""
    try:
        pair = deps.exchanger().exchange_code(
            deps.api_base_url, merchant_id, code, deps.client_secret()
        )
        _usable(pair, merchant_id)
    except CloverCodeRejected as error:
        metrics.add_metric(name="OnboardingExchangesRefused", unit=MetricUnit.Count, value=1)
        logger.error(
            "Clover refused the code exchange: the merchant must start over; if every install"
            " fails so, check the app's client id and secret (CloverAppSecretArn)",
            merchant_id=merchant_id,
            status=error.status,
            reference=reference,
        )
        raise _Refused("code_refused") from None
    except CloverError as error:
        logger.error(
            "Clover did not answer the code exchange",
            merchant_id=merchant_id,
            error=str(error),
            reference=reference,
        )
        raise _Refused("clover_unavailable") from None
    sealed = deps.tokens.seal_tokens(merchant_id, pair)

    def store_tokens() -> None:
        now_ms = _ms(deps.clock())
        if not deps.tokens.write_installed_tokens(
            merchant_id, sealed, issued_ms=issued_ms, now_ms=now_ms
        ):
            raise _NewerTokens

    try:
        merchant = deps.merchants.register_install(
            merchant_id,
            deps.api_base_url,
            _rule_store_code(deps.store_code_template, merchant_id),
            then=store_tokens,
        )
    except _NewerTokens:
        raise _Refused("newer_tokens") from None
    logger.info(
        "Clover tokens stored for a new installation",
        merchant_id=merchant_id,
        access_token_expiration=pair.access_token_expiration,
        refresh_token_expiration=pair.refresh_token_expiration,
        reference=reference,
    )
    return merchant.store_code


def _usable(pair: CloverTokens, merchant_id: str) -> None:
    """Clover's pair held to what any stored tokens must be (:func:`usable_pair`) before
    anything is sealed or stored: a pair that is not (a line break or a NUL in a token,
    more than KMS encrypts) is a bad answer like a body that is no pair at all. Stored, the
    merchant read "connected" and every poll failed on its token (or KMS refused it, a 503)."""
    try:
        usable_pair(pair, "Clover's token pair")
    except InvalidInput as error:
        raise CloverBadResponse(str(error), merchant_id=merchant_id) from None


def _rule_store_code(template: str, merchant_id: str) -> str | None:
    """The store code ``ONBOARDING_STORE_CODE_TEMPLATE`` gives, if it gives a valid one."""
    if not template:
        return None
    try:
        return store_code(template.format(merchant_id=merchant_id))
    except InvalidInput:
        logger.warning(
            "ONBOARDING_STORE_CODE_TEMPLATE gives no valid store code for this merchant",
            merchant_id=merchant_id,
        )
        return None


@contextmanager
def _merchant_lock(deps: OnboardingDeps, merchant_id: str) -> Iterator[bool]:
    """The merchant's refresh lock, waited for up to :data:`LOCK_WAIT_SECONDS`."""
    owner = uuid.uuid4().hex
    deadline = deps.clock() + LOCK_WAIT_SECONDS
    while not deps.tokens.acquire_refresh_lock(
        merchant_id, owner, now_ms=_ms(deps.clock()), duration_ms=deps.lock_ms
    ):
        if deps.clock() >= deadline:
            yield False
            return
        deps.sleep(0.2)
    try:
        yield True
    finally:
        deps.tokens.release_refresh_lock(merchant_id, owner)


def _query(raw_query: str, known: tuple[str, ...]) -> dict[str, str]:
    try:
        return read_query(raw_query, known)
    except QueryRefused:
        raise _Refused("bad_request") from None


def _merchant_id(query: dict[str, str]) -> str:
    merchant_id = query.get("merchant_id", "")
    if not MERCHANT_ID.fullmatch(merchant_id):
        raise _Refused("no_merchant")
    return merchant_id


def _same_app(query: dict[str, str], deps: OnboardingDeps) -> None:
    """Clover names the app it sends the browser for; another app's is not ours to take."""
    client_id = query.get("client_id")
    if client_id is not None and client_id != deps.client_id():
        raise _Refused("other_app")


def _code(query: dict[str, str]) -> str:
    code = query.get("code", "")
    if not code:
        raise _Refused("no_code")
    if len(code) > MAX_CODE_CHARS or not TOKEN.fullmatch(code):
        raise _Refused("bad_request")
    return code


def _state(query: dict[str, str], deps: OnboardingDeps) -> oauth_state.InstallState:
    try:
        return oauth_state.read(
            deps.state_key(),
            query.get("state", ""),
            now_ms=_ms(deps.clock()),
            ttl_ms=deps.state_ttl_seconds * 1000,
        )
    except oauth_state.StateRefused as refusal:
        raise _Refused(f"state_{refusal.reason}") from None


def _refused(route: str, reason: str, reference: str, merchant_id: str | None) -> Page:
    status, title, advice = REFUSALS[reason]
    logger.warning(
        "install refused",
        route=route,
        reason=reason,
        status=status,
        merchant_id=merchant_id,
        reference=reference,
    )
    metrics.add_metric(name="OnboardingRefused", unit=MetricUnit.Count, value=1)
    return Page(status, title, (advice,), f"{reference} ({reason})")


def malformed(reference: str) -> Page:
    """The answer to an event API Gateway does not send (a wrong type in it): refused."""
    return _refused("request", "bad_request", reference, None)


def not_found(reference: str) -> Page:
    """The answer to another method or path than the install routes'."""
    return _refused("request", "not_found", reference, None)


def unavailable(reference: str) -> Page:
    """The answer when something of ours failed (a store, a secret): the merchant may try
    again; the operator finds the reference in the log line with the exception."""
    return Page(503, "esl-sync is not available right now", (_START_AGAIN,), reference)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
