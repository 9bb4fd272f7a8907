"""The Clover inventory client: one HTTP request at a time, paced, retried, typed.

One :class:`CloverClient` holds the kept-alive connections of the whole process (or Lambda
instance) per origin (:mod:`esl_sync.http_connections`: ``http.client``; httpx's import was
≈ 40 ms of a poller's cold start); :meth:`CloverClient.merchant` binds a merchant, its token
and its regional base URL into a :class:`MerchantCatalog`, the :class:`esl_sync.ports.CatalogReader`
the poll reads through: one page of the items listing per :meth:`~MerchantCatalog.list_page`
(the keyed walk over pages is :mod:`esl_sync.clover.walk`), or one item per
:meth:`~MerchantCatalog.get_item`.

Its invariants:

* every request waits for a slot of the token's and of the process's budget
  (:mod:`esl_sync.clover.pacing`); a 429 pauses the token (or, for a cross-token limit,
  everyone) for ``Retry-After`` before its retry; a ``Retry-After`` longer than the longest
  backoff (an hour, ``inf``, a date years ahead) is not waited out: the request fails at
  once and the pause lasts the longest backoff;
* timeouts, transport errors (refused, reset, a body cut short, an answer that is not
  HTTP), 429 and 5xx are retried up to ``max_attempts`` with jittered backoff; 401/403 and
  any other status are not (redirects are not followed); whatever is left ends in one
  :mod:`esl_sync.clover.errors` type naming the merchant, never another exception;
* a 2xx body (``gzip`` asked for, decoded with zlib; at most ``MAX_BODY_BYTES``) is JSON of
  the documented shape, or :class:`CloverBadResponse` says which part is not (an integer of
  absurd length stays text, so one field cannot make a page unreadable);
* ``requests`` counts every request, retries included, and a page knows Clover's clock
  (its first response's ``Date``);
* the access token goes into the ``Authorization`` header of each request and nowhere
  else: no log line, exception or repr of this module formats it, a token a header cannot
  carry is refused before anything is sent (``http.client``'s refusal would quote it), and
  the transport's exceptions (whose tracebacks hold the request) are never chained onto ours.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

from esl_sync import tls
from esl_sync.clover import json_body
from esl_sync.clover.errors import (
    CloverAuthError,
    CloverBadResponse,
    CloverConnectionError,
    CloverError,
    CloverOutOfTime,
    CloverRateLimited,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.headers import (
    count_rate_limit,
    date_ms,
    duration_text,
    named_limit,
    retry_after_seconds,
)
from esl_sync.clover.pacing import RequestPacer, default_pacer, token_key
from esl_sync.http_connections import Answer, Origin, Origins, Unanswered, Unreadable
from esl_sync.records import Item, ItemPage

_LOG = logging.getLogger(__name__)


_RETRY_AFTER_MARGIN_SECONDS = 0.05
_BODY_EXCERPT_CHARS = 120
#: The largest answer read, as sent and once decoded: a page of 1,000 items is a few MB.
MAX_BODY_BYTES = 64 << 20
#: An attempt's whole answer comes within this many timeouts (the timeout bounds each read):
#: a page of a few MB needs far less, and one written a byte at a time is cut off.
ANSWER_DEADLINE_TIMEOUTS = 3
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": "esl-sync"}
NOT_FOUND: Any = object()
"""What ``_get`` answers for an allowed 404 (a body ``null`` reads as ``None``)."""
# What a header can carry as it is (visible ASCII): RFC 6750's token68 is narrower still.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class CloverClient:
    """A pooled, paced, retrying client for Clover's inventory endpoints.

    ``sleep`` is used for every retry wait (tests inject a recorder). ``timeout_seconds``
    bounds the connection (with its TLS handshake) and then each read of the answer.
    """

    def __init__(
        self,
        *,
        page_size: int = 1000,
        timeout_seconds: float = 10.0,
        max_attempts: int = 5,
        backoff_base_seconds: float = 0.5,
        backoff_cap_seconds: float = 20.0,
        pacer: RequestPacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError(f"page_size must be 1..1000 (Clover's maximum), not {page_size}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, not {timeout_seconds}")
        self.page_size = page_size
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self.pacer = pacer if pacer is not None else default_pacer()
        self.sleep = sleep
        self.origins = Origins(
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            context=tls.for_https,  # the process's one context (esl_sync.tls says why)
            keep=20,
            deadline=self.attempt_seconds,
        )

    def __repr__(self) -> str:
        return f"CloverClient(page_size={self.page_size}, timeout_seconds={self.timeout_seconds})"

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt may take: its whole answer's deadline."""
        return ANSWER_DEADLINE_TIMEOUTS * self.timeout_seconds

    def merchant(
        self,
        merchant_id: str,
        token: str,
        base_url: str,
        time_left_ms: Callable[[], int] | None = None,
    ) -> MerchantCatalog:
        """The catalog of one merchant, read with ``token`` from ``base_url`` (its region);
        ``time_left_ms``: how long its requests may still take (None: no limit)."""
        if not merchant_id:
            raise ValueError("merchant_id must not be empty")
        if not token:
            raise ValueError(f"merchant {merchant_id}: the access token is empty")
        if not _HEADER_SAFE.fullmatch(token):
            raise ValueError(f"merchant {merchant_id}: the access token is not header-safe")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"merchant {merchant_id}: base_url must start with http(s)://")
        return MerchantCatalog(self, merchant_id, token, base_url, time_left_ms)

    def close(self) -> None:
        """Close every kept connection."""
        self.origins.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, origin: Origin, target: str, headers: dict[str, str], key: str) -> Answer:
        """One GET, in a slot of the pacing budget of ``key`` (a token's key); no retry."""
        with self.pacer.slot(key):
            return origin.exchange("GET", target, None, headers, limit=MAX_BODY_BYTES)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2.0**attempt)]."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2.0**attempt)
        return random.uniform(0, ceiling)


@dataclass
class _Tally:
    """Requests made for one page or item, and Clover's clock at its first response."""

    requests: int = 0
    clover_time_ms: int | None = None


class MerchantCatalog:
    """One merchant's items, read with its token. ``requests`` counts every HTTP request
    made through this object, retries included. Safe to share between threads."""

    def __init__(
        self,
        client: CloverClient,
        merchant_id: str,
        token: str,
        base_url: str,
        time_left_ms: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._time_left_ms = time_left_ms
        self.merchant_id = merchant_id
        self.base_url = base_url.rstrip("/")
        try:
            self._origin = client.origins.get(self.base_url)
        except ValueError as error:
            raise ValueError(f"merchant {merchant_id}: base_url: {error}") from None
        self._token = token
        self._key = token_key(token)
        self.items_path = f"/v3/merchants/{quote(merchant_id, safe='')}/items"
        self.requests = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"MerchantCatalog(merchant_id={self.merchant_id!r}, base_url={self.base_url!r}, "
            f"requests={self.requests})"
        )

    @property
    def page_size(self) -> int:
        return self._client.page_size

    # -- the two reads ---------------------------------------------------------------

    def list_page(self, params: Sequence[tuple[str, str]]) -> ItemPage:
        """One request of the items listing (``filter``, ``orderBy``, ``limit``, ``offset``
        as given): its elements, each a JSON object, as the documented shape says."""
        tally = _Tally()
        body = self._get(self.items_path, params, tally)
        if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
            raise self._bad(self.items_path, "body has no 'elements' list")
        elements: list[Item] = body["elements"]
        for index, element in enumerate(elements):
            if not isinstance(element, dict):
                raise self._bad(self.items_path, f"elements[{index}] is not an object")
        return ItemPage(elements, tally.requests, tally.clover_time_ms)

    def get_item(self, item_id: str) -> Item | None:
        """The item as Clover holds it now, or ``None`` when Clover answers 404."""
        path = f"{self.items_path}/{quote(item_id, safe='')}"
        body = self._get(path, [], _Tally(), not_found_ok=True)
        if body is NOT_FOUND:
            return None
        if not isinstance(body, dict):  # JSON null included: only a 404 says gone
            raise self._bad(path, "body is not a JSON object")
        return body

    # -- HTTP ------------------------------------------------------------------------

    def _get(
        self,
        path: str,
        params: Sequence[tuple[str, str]],
        tally: _Tally,
        *,
        not_found_ok: bool = False,
    ) -> Any:
        """GET with pacing and retries; the parsed JSON body, or :data:`NOT_FOUND` on an
        allowed 404 (not ``None``, which is also what a body ``null`` reads as)."""
        client, origin = self._client, self._origin
        query = urlencode(params, quote_via=quote)
        target = origin.path.rstrip("/") + path + (f"?{query}" if query else "")
        where = f"GET {path}" + (f"?{query}" if query else "")
        headers = {**_HEADERS, "Authorization": f"Bearer {self._token}"}
        for attempt in range(client.max_attempts):
            last = attempt + 1 >= client.max_attempts
            self._require_time(client.attempt_seconds, where)
            try:
                response = client.send(origin, target, headers, self._key)
            except Unanswered as failed:  # timeouts included
                self._count(tally, None)
                if last:
                    raise self._transport_failure(failed, where) from None
                reason = type(failed.error).__name__
                self._retry_sleep(client.backoff(attempt), where, reason, attempt)
                continue
            except Unreadable as error:
                self._count(tally, None)
                raise self._bad(path, str(error)) from None

            self._count(tally, response)
            status = response.status
            _LOG.debug(
                "clover %s -> %s (merchant %s, attempt %d)",
                where,
                status,
                self.merchant_id,
                attempt + 1,
            )
            if 200 <= status < 300:
                return self._json(self._content(response, path), response.headers, path)
            if status == 404 and not_found_ok:
                return NOT_FOUND
            if status in (401, 403):
                raise CloverAuthError(
                    f"{where}: HTTP {status} (token expired, revoked or lacking permission)",
                    merchant_id=self.merchant_id,
                    status=status,
                )
            if status == 429:
                limit = named_limit(response.headers)
                count_rate_limit(limit)
                retry_after = retry_after_seconds(response.headers)
                wait = retry_after if retry_after is not None else _equal_jitter(client, attempt)
                scope = None if limit and "crossToken" in limit else self._key
                # A wait longer than the longest backoff is not waited out: the poll would
                # sleep into the Lambda timeout (the batch's other polls with it), and a
                # pause that long would stall every later poll of the token (of everyone,
                # cross-token) here. It pauses the longest backoff and fails now.
                too_long = wait > client.backoff_cap_seconds
                if too_long or not last:
                    client.pacer.pause(scope, min(wait, client.backoff_cap_seconds))
                if too_long or last:
                    why = (
                        f"asking to wait {duration_text(wait)} (Retry-After), longer than the "
                        f"longest backoff ({client.backoff_cap_seconds:g}s): not waited out"
                        if too_long
                        else f"after {client.max_attempts} attempts"
                    )
                    raise CloverRateLimited(
                        f"{where}: HTTP 429 ({limit or 'limit not named'}) {why}",
                        merchant_id=self.merchant_id,
                        retry_after_seconds=wait,
                        limit=limit,
                    )
                self._retry_sleep(wait + _RETRY_AFTER_MARGIN_SECONDS, where, "429", attempt)
                continue
            if status >= 500:
                if last:
                    raise CloverServerError(
                        f"{where}: HTTP {status} after {client.max_attempts} attempts",
                        merchant_id=self.merchant_id,
                        status=status,
                    )
                self._retry_sleep(client.backoff(attempt), where, str(status), attempt)
                continue
            raise CloverRequestRejected(
                f"{where}: HTTP {status}: {self._rejected_excerpt(response)}",
                merchant_id=self.merchant_id,
                status=status,
            )
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _transport_failure(self, failed: Unanswered, where: str) -> CloverError:
        """The error of a request that got no answer on its last attempt."""
        kind, attempts = type(failed.error).__name__, self._client.max_attempts
        if failed.timed_out:
            client = self._client  # a read's timeout, or the whole answer's deadline
            return CloverTimeout(
                f"{where}: no answer within {client.timeout_seconds}s (a read) or "
                f"{client.attempt_seconds:g}s (the whole answer) ({kind}) "
                f"after {attempts} attempts",
                merchant_id=self.merchant_id,
            )
        return CloverConnectionError(
            f"{where}: {kind}: {self._redact(str(failed.error))[:200]} after {attempts} attempts",
            merchant_id=self.merchant_id,
        )

    def _require_time(self, seconds: float, where: str) -> None:
        """Start nothing the invocation cannot wait out: a request needs the longest an attempt
        may take left (:attr:`CloverClient.attempt_seconds`), a retry its wait too. Cut off
        by Lambda's timeout, a poll records nothing, its batch's other polls report nothing,
        and its lease holds the merchant until it expires."""
        left = self._time_left_ms() if self._time_left_ms is not None else None
        if left is not None and left < seconds * 1000:
            raise CloverOutOfTime(
                f"{where}: not sent: {left} ms left in the invocation, {seconds * 1000:.0f} ms"
                " needed",
                merchant_id=self.merchant_id,
            )

    def _retry_sleep(self, seconds: float, where: str, reason: str, attempt: int) -> None:
        self._require_time(seconds + self._client.attempt_seconds, where)
        _LOG.debug(
            "clover %s: %s on attempt %d, retrying in %.2fs (merchant %s)",
            where,
            reason,
            attempt + 1,
            seconds,
            self.merchant_id,
        )
        self._client.sleep(seconds)

    def _count(self, tally: _Tally, response: Answer | None) -> None:
        with self._lock:
            self.requests += 1
        tally.requests += 1
        if response is not None and tally.clover_time_ms is None:
            tally.clover_time_ms = date_ms(response.headers.get("Date"))

    def _content(self, response: Answer, path: str) -> bytes:
        """The body as decoded, or :class:`CloverBadResponse` saying why it cannot be."""
        try:
            return response.content(MAX_BODY_BYTES)
        except Unreadable as error:
            raise self._bad(path, str(error)) from None

    def _json(self, body: bytes, headers: Message, path: str) -> Any:
        try:
            try:
                return json_body.loads(body)  # json.loads, faster
            except ValueError:  # not JSON, or an integer too long for Python: see _json_int
                return json.loads(body, parse_int=_json_int)
        except RecursionError:
            raise self._bad(path, "body is nested too deeply to read") from None
        except ValueError:
            content_type = headers.get("Content-Type", "no content type")
            raise self._bad(
                path,
                f"body is not JSON ({content_type}, {len(body)} bytes: {self._excerpt(body)})",
            ) from None

    def _bad(self, path: str, what: str) -> CloverBadResponse:
        return CloverBadResponse(f"GET {path}: {what}", merchant_id=self.merchant_id)

    def _excerpt(self, body: bytes) -> str:
        text = body[: _BODY_EXCERPT_CHARS * 4].decode("utf-8", "replace")
        text = self._redact(text)[:_BODY_EXCERPT_CHARS]
        return repr(text)

    def _rejected_excerpt(self, response: Answer) -> str:
        try:
            return self._excerpt(response.content(MAX_BODY_BYTES))
        except Unreadable as error:
            return f"({error})"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def _json_int(text: str) -> int | str:
    """A JSON integer; one Python refuses to read (over 4,300 digits) stays text, so that
    one absurd field gets its item refused by name instead of making the page unreadable."""
    try:
        return int(text)
    except ValueError:
        return text


def _equal_jitter(client: CloverClient, attempt: int) -> float:
    """A 429 without Retry-After: at least half of the capped exponential delay."""
    delay = min(client.backoff_cap_seconds, client.backoff_base_seconds * 2.0**attempt)
    return delay / 2 + random.uniform(0, delay / 2)
