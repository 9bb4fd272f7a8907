"""The Clover inventory client: paging, retries, pacing and typed errors.

One :class:`CloverClient` holds one httpx connection pool for the whole process (or
Lambda instance); :meth:`CloverClient.merchant` binds a merchant, its token and its
regional base URL into a :class:`MerchantCatalog`, which reads items three ways:

* :meth:`MerchantCatalog.iter_items_modified_since` walks the items changed since a
  time, sorted by ``modifiedTime`` and moving by key (see :class:`ItemWalk`);
* :meth:`MerchantCatalog.list_all_item_ids` lists every present id (the poll does not
  use it: it sweeps with a complete walk, which reads every item's content as well);
* :meth:`MerchantCatalog.get_item` reads one item, ``None`` when Clover answers 404.

The access token goes into the ``Authorization`` header of each request and nowhere
else: no log line, exception or repr of this module formats it, and httpx exceptions
(which hold the request and its headers) are never chained onto ours.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import httpx

from esl_sync.clover.errors import (
    CloverAuthError,
    CloverBadResponse,
    CloverConnectionError,
    CloverError,
    CloverRateLimited,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.items import is_deleted
from esl_sync.clover.pacing import RequestPacer, default_pacer, token_key
from esl_sync.observability import NAMESPACE, SERVICE, MetricUnit, metrics, single_metric

_LOG = logging.getLogger(__name__)

Item = dict[str, Any]

#: ``X-RateLimit-*`` headers that name the limit a 429 hit; cross-token ones pause everyone.
RATE_LIMIT_HEADERS = (
    "X-RateLimit-tokenLimit",
    "X-RateLimit-tokenConcurrentLimit",
    "X-RateLimit-crossTokenLimit",
    "X-RateLimit-crossTokenConcurrentLimit",
)
#: How often a walk re-reads ranges an edit may have shifted before it gives up on key
#: paging and falls back to a complete walk.
MAX_REREAD_ROUNDS = 5
_RETRY_AFTER_MARGIN_SECONDS = 0.05
_BODY_EXCERPT_CHARS = 120


class CloverClient:
    """A pooled, paced, retrying client for Clover's inventory endpoints.

    ``sleep`` is used for every retry wait (tests inject a recorder); ``transport`` lets
    tests replace the network (``httpx.MockTransport``).
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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            headers={"Accept": "application/json", "User-Agent": "esl-sync"},
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"CloverClient(page_size={self.page_size}, timeout_seconds={self.timeout_seconds})"

    def merchant(self, merchant_id: str, token: str, base_url: str) -> MerchantCatalog:
        """The catalog of one merchant, read with ``token`` from ``base_url`` (its region)."""
        if not merchant_id:
            raise ValueError("merchant_id must not be empty")
        if not token:
            raise ValueError(f"merchant {merchant_id}: the access token is empty")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"merchant {merchant_id}: base_url must start with http(s)://")
        return MerchantCatalog(self, merchant_id, token, base_url)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2.0**attempt)]."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2.0**attempt)
        return random.uniform(0, ceiling)


@dataclass
class _Tally:
    """Requests made for one operation, and Clover's clock at its first response."""

    requests: int = 0
    clover_time_ms: int | None = None


@dataclass(frozen=True)
class ItemIdListing:
    """Every id Clover listed as present (deleted-flagged items excluded)."""

    ids: frozenset[str]
    requests: int
    clover_time_ms: int | None


class MerchantCatalog:
    """One merchant's items, read with its token. ``requests`` counts every HTTP request
    made through this object, retries included. Safe to share between threads."""

    def __init__(self, client: CloverClient, merchant_id: str, token: str, base_url: str) -> None:
        self._client = client
        self.merchant_id = merchant_id
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._key = token_key(token)
        self._items_path = f"/v3/merchants/{quote(merchant_id, safe='')}/items"
        self.requests = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"MerchantCatalog(merchant_id={self.merchant_id!r}, base_url={self.base_url!r}, "
            f"requests={self.requests})"
        )

    # -- the three reads -------------------------------------------------------------

    def iter_items_modified_since(self, since_ms: int | None) -> ItemWalk:
        """Pages of items with ``modifiedTime >= since_ms`` (``None``: every item)."""
        return ItemWalk(self, since_ms)

    def list_all_item_ids(self) -> ItemIdListing:
        """Every present item id, by a complete offset walk (Clover has no id-only listing).

        Items flagged deleted (``deleted: true`` or a ``deletedTime``) are not present.
        """
        tally = _Tally()
        ids: set[str] = set()
        offset = 0
        size = self._client.page_size
        while True:
            params: list[tuple[str, str]] = [("limit", str(size))]
            if offset:
                params.append(("offset", str(offset)))
            elements = self._list(params, tally, need_modified_time=False)
            for element in elements:
                item_id = element.get("id")
                if isinstance(item_id, str) and item_id and not is_deleted(element):
                    ids.add(item_id)
            offset += len(elements)
            if len(elements) < size:
                break
        return ItemIdListing(frozenset(ids), tally.requests, tally.clover_time_ms)

    def get_item(self, item_id: str) -> Item | None:
        """The item as Clover holds it now, or ``None`` when Clover answers 404."""
        path = f"{self._items_path}/{quote(item_id, safe='')}"
        body = self._get(path, [], _Tally(), not_found_ok=True)
        if body is None:
            return None
        if not isinstance(body, dict):
            raise self._bad(path, "body is not a JSON object")
        return body

    # -- HTTP ------------------------------------------------------------------------

    def _list(
        self, params: list[tuple[str, str]], tally: _Tally, *, need_modified_time: bool
    ) -> list[Item]:
        """One list request: the page's elements, checked against the documented shape."""
        body = self._get(self._items_path, params, tally)
        if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
            raise self._bad(self._items_path, "body has no 'elements' list")
        elements: list[Item] = body["elements"]
        for index, element in enumerate(elements):
            if not isinstance(element, dict):
                raise self._bad(self._items_path, f"elements[{index}] is not an object")
            if need_modified_time and not _is_int(element.get("modifiedTime")):
                raise self._bad(
                    self._items_path, f"elements[{index}].modifiedTime is not an integer"
                )
        return elements

    def _get(
        self,
        path: str,
        params: list[tuple[str, str]],
        tally: _Tally,
        *,
        not_found_ok: bool = False,
    ) -> Any:
        """GET with pacing and retries; the parsed JSON body, or ``None`` on an allowed 404."""
        client = self._client
        query = urlencode(params, quote_via=quote)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        where = f"GET {path}" + (f"?{query}" if query else "")
        headers = {"Authorization": f"Bearer {self._token}"}
        for attempt in range(client.max_attempts):
            last = attempt + 1 >= client.max_attempts
            try:
                with client.pacer.slot(self._key):
                    response = client._http.get(url, headers=headers)
            except httpx.TimeoutException as exc:
                self._count(tally, None)
                kind = type(exc).__name__
                if last:
                    raise CloverTimeout(
                        f"{where}: no answer within {client.timeout_seconds}s ({kind}) "
                        f"after {client.max_attempts} attempts",
                        merchant_id=self.merchant_id,
                    ) from None
                self._retry_sleep(client._backoff(attempt), where, kind, attempt)
                continue
            except httpx.TransportError as exc:
                self._count(tally, None)
                kind = type(exc).__name__
                if last:
                    raise CloverConnectionError(
                        f"{where}: {kind}: {self._redact(str(exc))} "
                        f"after {client.max_attempts} attempts",
                        merchant_id=self.merchant_id,
                    ) from None
                self._retry_sleep(client._backoff(attempt), where, kind, attempt)
                continue

            self._count(tally, response)
            status = response.status_code
            _LOG.debug(
                "clover %s -> %s (merchant %s, attempt %d)",
                where,
                status,
                self.merchant_id,
                attempt + 1,
            )
            if 200 <= status < 300:
                return self._json(response, path)
            if status == 404 and not_found_ok:
                return None
            if status in (401, 403):
                raise CloverAuthError(
                    f"{where}: HTTP {status} (token expired, revoked or lacking permission)",
                    merchant_id=self.merchant_id,
                    status=status,
                )
            if status == 429:
                limit = _named_limit(response.headers)
                _count_rate_limit(limit)
                retry_after = _retry_after_seconds(response.headers)
                wait = retry_after if retry_after is not None else _equal_jitter(client, attempt)
                if last:
                    raise CloverRateLimited(
                        f"{where}: HTTP 429 ({limit or 'limit not named'}) "
                        f"after {client.max_attempts} attempts",
                        merchant_id=self.merchant_id,
                        retry_after_seconds=wait,
                        limit=limit,
                    )
                scope = None if limit and "crossToken" in limit else self._key
                client.pacer.pause(scope, wait)
                self._retry_sleep(wait + _RETRY_AFTER_MARGIN_SECONDS, where, "429", attempt)
                continue
            if status >= 500:
                if last:
                    raise CloverServerError(
                        f"{where}: HTTP {status} after {client.max_attempts} attempts",
                        merchant_id=self.merchant_id,
                        status=status,
                    )
                self._retry_sleep(client._backoff(attempt), where, str(status), attempt)
                continue
            raise CloverRequestRejected(
                f"{where}: HTTP {status}: {self._excerpt(response)}",
                merchant_id=self.merchant_id,
                status=status,
            )
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _retry_sleep(self, seconds: float, where: str, reason: str, attempt: int) -> None:
        _LOG.debug(
            "clover %s: %s on attempt %d, retrying in %.2fs (merchant %s)",
            where,
            reason,
            attempt + 1,
            seconds,
            self.merchant_id,
        )
        self._client.sleep(seconds)

    def _count(self, tally: _Tally, response: httpx.Response | None) -> None:
        with self._lock:
            self.requests += 1
        tally.requests += 1
        if response is not None and tally.clover_time_ms is None:
            tally.clover_time_ms = _date_ms(response.headers.get("Date"))

    def _json(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json(parse_int=_json_int)
        except RecursionError:
            raise self._bad(path, "body is nested too deeply to read") from None
        except ValueError:
            content_type = response.headers.get("Content-Type", "no content type")
            raise self._bad(
                path,
                f"body is not JSON ({content_type}, {len(response.content)} bytes: "
                f"{self._excerpt(response)})",
            ) from None

    def _bad(self, path: str, what: str) -> CloverBadResponse:
        return CloverBadResponse(f"GET {path}: {what}", merchant_id=self.merchant_id)

    def _excerpt(self, response: httpx.Response) -> str:
        text = response.content[: _BODY_EXCERPT_CHARS * 4].decode("utf-8", "replace")
        text = self._redact(text)[:_BODY_EXCERPT_CHARS]
        return repr(text)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


class _FallBack(Exception):
    """Key paging cannot be trusted for this walk; read everything instead."""


@dataclass
class _OffsetRead:
    """A list request that skipped ``offset`` items at or above ``low``.

    If one of the skipped items moved away before the request, the request skipped one
    item too many: some item with a ``modifiedTime`` in [``low``, ``first``] (``first``
    being the first time the page returned, or ``high``/unbounded if it was empty).
    """

    low: int
    high: int | None
    first: int | None
    tainted: bool = False

    @property
    def window(self) -> tuple[int, int | None]:
        return (self.low, self.first if self.first is not None else self.high)

    def covers(self, modified_ms: int) -> bool:
        low, high = self.window
        return modified_ms >= low and (high is None or modified_ms <= high)


class ItemWalk(Iterator[list[Item]]):
    """Pages of raw items with ``modifiedTime >= since`` (every item when ``since`` is None).

    Pages are requested lazily as the walk is iterated. Each id is yielded once, again
    only if it comes back with a newer ``modifiedTime``; empty pages are not yielded.

    How it moves: ``filter=modifiedTime>=<ms>``, ``orderBy=modifiedTime ASC``,
    ``limit=page_size``; the next page asks from the last ``modifiedTime`` seen with
    ``offset`` = the number of items already passed at exactly that ms. The walk ends on
    a page shorter than ``limit``. An item edited between two requests moves to the end
    (its ``modifiedTime`` grows), so it is read again there; if it had been counted in an
    offset, that offset skipped one unread item, which lies between the offset's ms and
    the first ms the page returned. When a seen id comes back newer, every offset request
    it may have been counted in is re-read over that window (usually a single ms, offset
    paging, deduplicated), and if such a re-read needed more than one page the tail is
    read again to catch items that moved meanwhile. Every page is verified (times
    non-decreasing, inside the filter); if one is not, or Clover rejects the sorted query
    (400), or re-reads keep finding moved items, the walk sets ``fell_back`` and reads
    every item instead (default order, offset paging, deduplicated; repeated once if an
    id showed up twice with a newer ``modifiedTime``).

    ``clover_time_ms`` is Clover's clock (the ``Date`` of the walk's first response, so
    whole seconds, rounded down); ``max_modified_ms`` the largest ``modifiedTime``
    yielded; ``requests`` the HTTP requests made, retries included.
    """

    def __init__(self, catalog: MerchantCatalog, since_ms: int | None) -> None:
        self._catalog = catalog
        self._since = since_ms
        self._tally = _Tally()
        self._seen: dict[str, int] = {}
        self._offset_reads: list[_OffsetRead] = []
        self._pending: deque[tuple[int, int | None]] = deque()
        self._complete_walk_running = False
        self.fell_back = False
        self.max_modified_ms: int | None = None
        self._pages = self._run()

    def __repr__(self) -> str:
        return (
            f"ItemWalk(merchant_id={self._catalog.merchant_id!r}, since_ms={self._since}, "
            f"requests={self.requests}, fell_back={self.fell_back})"
        )

    @property
    def clover_time_ms(self) -> int | None:
        return self._tally.clover_time_ms

    @property
    def requests(self) -> int:
        return self._tally.requests

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> list[Item]:
        return next(self._pages)

    # -- the walk --------------------------------------------------------------------

    def _run(self) -> Generator[list[Item]]:
        try:
            yield from self._key_walk()
        except _FallBack as reason:
            self.fell_back = True
            _LOG.warning(
                "clover merchant %s: %s; falling back to a complete walk",
                self._catalog.merchant_id,
                reason,
            )
            yield from self._complete_walk()

    def _key_walk(self) -> Generator[list[Item]]:
        tail_low = yield from self._range(self._since, None)
        rounds = 0
        while self._pending:
            rounds += 1
            if rounds > MAX_REREAD_ROUNDS:
                raise _FallBack(f"items kept moving after {MAX_REREAD_ROUNDS} re-reads")
            reread_paged = False
            while self._pending:
                low, high = self._pending.popleft()
                before = len(self._offset_reads)
                _LOG.debug(
                    "clover merchant %s: re-reading modifiedTime %s..%s (an edit shifted offsets)",
                    self._catalog.merchant_id,
                    low,
                    "" if high is None else high,
                )
                end = yield from self._range(low, high)
                if high is None:
                    tail_low = _later(tail_low, end)
                elif len(self._offset_reads) > before:
                    reread_paged = True
            if reread_paged:
                # A multi-page re-read used offsets itself; items that moved during it went
                # to the tail: read the tail again so they are seen (and re-read if need be).
                tail_low = yield from self._range(tail_low, None)

    def _range(self, low: int | None, high: int | None) -> Generator[list[Item], None, int | None]:
        """Key-page through ``low <= modifiedTime <= high``; return the last cursor ms."""
        size = self._catalog._client.page_size
        cursor, offset = low, 0
        read_here: set[str] = set()
        while True:
            params: list[tuple[str, str]] = []
            if cursor is not None and high is not None and cursor == high:
                params.append(("filter", f"modifiedTime={cursor}"))
            else:
                if cursor is not None:
                    params.append(("filter", f"modifiedTime>={cursor}"))
                if high is not None:
                    params.append(("filter", f"modifiedTime<={high}"))
            params += [("orderBy", "modifiedTime ASC"), ("limit", str(size))]
            if offset:
                params.append(("offset", str(offset)))
            try:
                elements = self._catalog._list(params, self._tally, need_modified_time=True)
            except CloverRequestRejected as error:
                if error.status == 400:
                    raise _FallBack("Clover rejected the sorted query (HTTP 400)") from None
                raise
            times: list[int] = [element["modifiedTime"] for element in elements]
            _check_sorted(times, cursor, high)
            if offset and cursor is not None:
                self._offset_reads.append(_OffsetRead(cursor, high, times[0] if times else None))
                if len(elements) == size and _ids(elements) <= read_here:
                    raise _FallBack("a page past an offset repeated only items already read")
            read_here |= _ids(elements)
            page = self._accept(elements)
            if page:
                yield page
            if times:
                last = times[-1]
                ties = len(times) - _first_index_of(times, last)
                if last == cursor:
                    offset += ties
                else:
                    cursor, offset = last, ties
            if len(elements) < size:
                return cursor

    def _complete_walk(self) -> Generator[list[Item]]:
        self._complete_walk_running = True
        size = self._catalog._client.page_size
        for round_number in (1, 2):
            changed = False
            this_walk: dict[str, int] = {}
            offset = 0
            while True:
                params: list[tuple[str, str]] = [("limit", str(size))]
                if offset:
                    params.append(("offset", str(offset)))
                elements = self._catalog._list(params, self._tally, need_modified_time=True)
                if offset and len(elements) == size and _ids(elements) <= this_walk.keys():
                    raise self._catalog._bad(
                        self._catalog._items_path,
                        f"the page at offset {offset} repeats only items already read "
                        "(is 'offset' ignored?)",
                    )
                for element in elements:
                    item_id, modified = element.get("id"), element["modifiedTime"]
                    if isinstance(item_id, str):
                        if item_id in this_walk and modified > this_walk[item_id]:
                            changed = True
                        this_walk[item_id] = max(modified, this_walk.get(item_id, modified))
                page = self._accept(elements)
                if page:
                    yield page
                offset += len(elements)
                if len(elements) < size:
                    break
            if not changed:
                return
            if round_number == 1:
                _LOG.info(
                    "clover merchant %s: catalog changed during the complete walk; walking again",
                    self._catalog.merchant_id,
                )

    def _accept(self, elements: list[Item]) -> list[Item]:
        """The elements not yet yielded in this version; notes ids that moved."""
        page: list[Item] = []
        for element in elements:
            item_id = element.get("id")
            modified: int = element["modifiedTime"]
            if not isinstance(item_id, str) or not item_id:
                page.append(element)  # the transform rejects it; the caller counts it
                continue
            previous = self._seen.get(item_id)
            if previous is not None and modified <= previous:
                continue
            self._seen[item_id] = modified
            page.append(element)
            if self.max_modified_ms is None or modified > self.max_modified_ms:
                self.max_modified_ms = modified
            if previous is not None and not self._complete_walk_running:
                self._moved(previous)
        return page

    def _moved(self, old_ms: int) -> None:
        """An item seen at ``old_ms`` changed: re-read every offset it may have shifted."""
        for read in self._offset_reads:
            if not read.tainted and read.covers(old_ms):
                read.tainted = True
                self._pending.append(read.window)


def _check_sorted(times: list[int], low: int | None, high: int | None) -> None:
    previous = low
    for index, value in enumerate(times):
        if previous is not None and value < previous:
            what = "below the filter" if previous == low and index == 0 else "out of order"
            raise _FallBack(f"page not sorted by modifiedTime (elements[{index}] {what})")
        if high is not None and value > high:
            raise _FallBack(f"page not inside the filter (elements[{index}] above {high})")
        previous = value


def _ids(elements: list[Item]) -> set[str]:
    return {item_id for element in elements if isinstance(item_id := element.get("id"), str)}


def _later(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


def _first_index_of(times: list[int], value: int) -> int:
    index = len(times) - 1
    while index > 0 and times[index - 1] == value:
        index -= 1
    return index


def _count_rate_limit(limit: str | None) -> None:
    """A 429 as metrics: the total (which an alarm compares with ``CloverRequests``) and
    one by the limit that was hit, so an operator sees which budget ran out."""
    metrics.add_metric(name="CloverRateLimited", unit=MetricUnit.Count, value=1)
    named = (limit or "unnamed").removeprefix("X-RateLimit-")
    with single_metric(
        name="CloverRateLimitedByLimit",
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE},
    ) as metric:
        metric.add_dimension(name="Limit", value=named)


def _json_int(text: str) -> int | str:
    """A JSON integer; one Python refuses to read (over 4,300 digits) stays text, so that
    one absurd field gets its item refused by name instead of making the page unreadable."""
    try:
        return int(text)
    except ValueError:
        return text


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _date_ms(value: str | None) -> int | None:
    """An HTTP ``Date`` header as epoch milliseconds, ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        _LOG.debug("clover: unreadable Date header %r", value)
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), ``None`` when absent."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    then = _date_ms(value)
    if then is None:
        return None
    now = _date_ms(headers.get("Date"))
    reference = now if now is not None else int(time.time() * 1000)
    return max(0.0, (then - reference) / 1000)


def _named_limit(headers: httpx.Headers) -> str | None:
    """Which ``X-RateLimit-*`` header named the limit a 429 hit."""
    for name in RATE_LIMIT_HEADERS:
        if name in headers:
            return name
    for name, _value in headers.items():
        if name.lower().startswith("x-ratelimit-"):
            return name
    return None


def _equal_jitter(client: CloverClient, attempt: int) -> float:
    """A 429 without Retry-After: at least half of the capped exponential delay."""
    delay = min(client.backoff_cap_seconds, client.backoff_base_seconds * 2.0**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


__all__ = [
    "CloverClient",
    "CloverError",
    "ItemIdListing",
    "ItemWalk",
    "MerchantCatalog",
    "is_deleted",
]
