"""A Clover REST API on loopback: faithful where the sync relies on Clover, hostile on demand.

It reproduces what docs/clover-api.md states (paging, filters, ordering,
auth, rate limits) and can play both sides of what that document leaves unconfirmed
(``orderBy`` ignored, deleted items listed, stock bumping ``modifiedTime``), plus the faults a
sync must survive: injected statuses, slow answers, late visibility, listings that miss items
and a catalog that changes between page requests.

It also plays Clover's v2 OAuth: the install's authorize page (``GET /oauth/v2/authorize``:
an automatic approval by the merchant ``signed_in_merchant`` that redirects to the
``redirect_uri``, a subpath of ``site_url``, with a one-time code, the merchant id and the
``state``), the code exchange (``POST /oauth/v2/token``: codes that expire, work once and
need the app's client secret), and the refresh (``POST /oauth/v2/refresh``): access tokens
that expire (settable lifetimes), single-use refresh tokens (the old one is refused with
"401 invalid refresh token" as soon as it has been used), and a switch that revokes a
merchant's refresh token.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import operator
import random
import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from devkit.loopback import LoopbackServer, LoopbackService

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_EXPANSIONS = 3

# The filter fields of the items endpoint, as named in X-Clover-Allowed-Filter-Fields.
ALLOWED_FILTER_FIELDS = (
    "modifiedTime",
    "createdTime",
    "hidden",
    "deleted",
    "available",
    "id",
    "sku",
    "itemCode",
    "price",
    "itemStock.quantity",
    "itemGroup.id",
    "isAgeRestricted",
)
_NUMERIC_FIELDS = frozenset({"modifiedTime", "createdTime", "price", "itemStock.quantity"})
# Boolean fields and the value an item that lacks the field has (Clover omits false flags).
_BOOLEAN_DEFAULTS = {"hidden": False, "deleted": False, "available": True, "isAgeRestricted": False}
# Two-character operators first, so that "<=" is not read as "<" followed by "=value".
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}
_ORDERABLE = frozenset({"modifiedTime", "createdTime"})
_EXPANDABLE = frozenset(
    {"tags", "categories", "taxRates", "modifierGroups", "itemStock", "options"}
)
_ID_ALPHABET = string.ascii_uppercase + string.digits

_LIMIT_HEADERS = {
    "token_rps": "X-RateLimit-tokenLimit",
    "token_concurrency": "X-RateLimit-tokenConcurrentLimit",
    "app_rps": "X-RateLimit-crossTokenLimit",
    "app_concurrency": "X-RateLimit-crossTokenConcurrentLimit",
}


def token_fingerprint(token: str) -> str:
    """What the simulator records instead of a token, so no secret lands in test output."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RequestRecord:
    """One answered request; ``time`` is when it arrived, in seconds since the epoch."""

    time: float
    merchant_id: str | None
    endpoint: str
    status: int
    token_fingerprint: str | None
    query: dict[str, list[str]]


@dataclass
class _Merchant:
    # Valid access tokens and when each expires (Unix seconds on Clover's clock; None: never).
    access_tokens: dict[str, int | None]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    list_requests: int = 0
    refresh_token: str | None = None
    refresh_expiration: int | None = None


@dataclass
class _Code:
    """An authorization code the authorize page issued: for one merchant and app, until
    ``expires`` (Clover's clock, Unix seconds), once."""

    merchant_id: str
    client_id: str
    expires: int
    used: bool = False


@dataclass
class _Fault:
    status: int
    remaining: int
    merchant_id: str | None
    body: str | None


@dataclass
class _Delay:
    seconds: float
    remaining: int


@dataclass
class _Block:
    """A token that got a 429: it must stay away until ``until`` (monotonic seconds)."""

    until: float
    limit: str


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _BadRequest(Exception):
    """A query Clover would refuse with 400; the message goes to the client."""


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    """JSON as ``json.dumps`` writes it: everything beyond ASCII escaped, so an item holding
    a lone surrogate (which no UTF-8 can carry) goes out as a ``\\ud800`` escape, as a real
    server could send it; NaN and Infinity as the non-standard tokens many parsers accept."""
    return _Response(status, json.dumps(payload).encode(), headers or {})


def _error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> _Response:
    """Clover's error body, ``{"message": ...}``, by default "<status> <reason>"."""
    text = message or f"{status} {HTTPStatus(status).phrase}"
    return _json_response(status, {"message": text}, headers)


@dataclass(frozen=True)
class _Filter:
    field: str
    op: str
    value: str | int | float | bool

    @classmethod
    def parse(cls, text: str) -> _Filter:
        position = next((i for i, char in enumerate(text) if char in "<>=!"), -1)
        if position <= 0:
            raise _BadRequest(f"Invalid filter: {text}")
        name = text[:position]
        op = next((o for o in _OPERATORS if text.startswith(o, position)), None)
        if op is None:
            raise _BadRequest(f"Invalid filter operator in: {text}")
        if name not in ALLOWED_FILTER_FIELDS:
            raise _BadRequest(f"Invalid filter field: {name}")
        raw = text[position + len(op) :]
        value: str | int | float | bool = raw
        if name in _NUMERIC_FIELDS:
            try:
                value = float(raw) if "." in raw else int(raw)
            except ValueError:
                raise _BadRequest(f"Invalid number in filter: {text}") from None
        elif name in _BOOLEAN_DEFAULTS:
            if raw not in ("true", "false") or op not in ("=", "!="):
                raise _BadRequest(f"Invalid boolean filter: {text}")
            value = raw == "true"
        return cls(name, op, value)

    def matches(self, item: dict[str, Any]) -> bool:
        """Whether the item passes; an item without the field passes no comparison."""
        actual = _field_value(item, self.field)
        return actual is not None and _OPERATORS[self.op](actual, self.value)


def _stock(item: dict[str, Any]) -> dict[str, Any]:
    """The item's stock; untracked stock reads as zero since the item's creation."""
    stock: dict[str, Any] = item.get("itemStock") or {
        "quantity": 0.0,
        "modifiedTime": item["createdTime"],
    }
    return stock


def _field_value(item: dict[str, Any], name: str) -> Any:
    if name in _BOOLEAN_DEFAULTS:
        return item.get(name, _BOOLEAN_DEFAULTS[name])
    if name == "itemCode":
        return item.get("code")
    if name == "itemGroup.id":
        return (item.get("itemGroup") or {}).get("id")
    if name == "itemStock.quantity":
        return _stock(item)["quantity"]
    return item.get(name)


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise _BadRequest(f"Invalid {name}: {values[0]}") from None


def _order(query: dict[str, list[str]]) -> tuple[str, bool]:
    """The ordering field and whether it is descending; ``+`` and ``%20`` both read as space."""
    values = query.get("orderBy")
    if not values:
        return "createdTime", True
    parts = values[0].split()
    direction = parts[1].upper() if len(parts) == 2 else "ASC"
    if not 1 <= len(parts) <= 2 or parts[0] not in _ORDERABLE or direction not in ("ASC", "DESC"):
        raise _BadRequest(f"Invalid orderBy: {values[0]}")
    return parts[0], direction == "DESC"


def _expansions(query: dict[str, list[str]]) -> set[str]:
    names = [name for value in query.get("expand", []) for name in value.split(",") if name]
    unknown = sorted(set(names) - _EXPANDABLE)
    if unknown:
        raise _BadRequest(f"Invalid expand: {', '.join(unknown)}")
    if len(names) > MAX_EXPANSIONS:
        raise _BadRequest(f"At most {MAX_EXPANSIONS} expansions are allowed")
    return set(names)


def _public(item: dict[str, Any], expand: set[str]) -> dict[str, Any]:
    """The item as the API shows it: stock only when expanded, other expansions empty."""
    shown = {key: value for key, value in item.items() if key != "itemStock"}
    for name in expand:
        shown[name] = _stock(item) if name == "itemStock" else {"elements": []}
    return shown


def _route(path: str) -> tuple[str, str | None, str | None]:
    """(endpoint, merchant id, item id) of a request path."""
    parts = path.split("/")
    if len(parts) in (5, 6) and parts[:3] == ["", "v3", "merchants"] and parts[4] == "items":
        if len(parts) == 5:
            return "list", parts[3], None
        return "get", parts[3], parts[5]
    return "other", None, None


def _bearer(authorization: str | None) -> str | None:
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization.removeprefix("Bearer ").strip() or None


class CloverSimulator(LoopbackService):
    """Clover's items API for tests, on 127.0.0.1 with an ephemeral port.

    Behaviour switches are plain attributes that tests may flip while the server runs.
    """

    thread_name = "clover-simulator"

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        self.token_rps = 16
        self.token_concurrency = 5
        self.app_rps = 50
        self.app_concurrency = 10
        self.retry_after_seconds = 1
        self.rate_limits_enabled = True
        self.delay_seconds = 0.0
        self.ignore_order_by = False
        self.send_date = True  # False: answers without a Date header (a proxy that drops it)
        # Added to the Date header alone (items are stamped by the clock): a glitching
        # front end whose Date is wrong while the catalog's stamps are right.
        self.date_offset_ms = 0
        # True: a GET whose Accept-Encoding names gzip is answered gzip-compressed.
        self.gzip_answers = False
        self.list_deleted = False
        self.stock_bumps_modified_time = False
        self.visibility_lag_ms = 0
        self.clock_offset_ms = 0
        self.before_list_page: Callable[[int], None] | None = None
        # Called with the page's number once the page is read, before it is answered: an
        # answer that Clover (or the network) delivers late, holding what it read then.
        self.after_list_page: Callable[[int], None] | None = None
        # Ids every list response leaves out while the single-item GET still serves them:
        # a listing that silently misses items, or one item that becomes visible late.
        self.hide_from_listing: set[str] = set()
        # Item id → the status its single-item GET answers every time (an item Clover's
        # read keeps refusing: 400, 410, a 5xx), the listing unchanged.
        self.item_read_status: dict[str, int] = {}
        # OAuth: the app's client id, and the lifetimes of the tokens this Clover issues.
        self.client_id = "sim-clover-app"
        self.client_secret = "sim-clover-app-secret"
        self.access_token_lifetime_seconds = 1800
        self.refresh_token_lifetime_seconds = 31 * 86_400
        # The install flow: who is signed in to Clover in the browser (the merchant that
        # approves), the app's site URL (redirect URIs must be under it; None: any), and
        # how long an authorization code lives.
        self.signed_in_merchant: str | None = None
        self.site_url: str | None = None
        self.code_lifetime_seconds = 60
        self._codes: dict[str, _Code] = {}

        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._frozen_ms: int | None = None
        self._merchants: dict[str, _Merchant] = {}
        self._known_ids: set[str] = set()
        self._faults: list[_Fault] = []
        self._delays: deque[_Delay] = deque()
        # Rate limiting: keys are token fingerprints, None is the whole app.
        self._admitted: Counter[str | None] = Counter()
        self._windows: dict[str | None, deque[float]] = {}
        self._blocks: dict[str, _Block] = {}
        # Observability: every request, refused ones included, from arrival to answer.
        self._open: Counter[str | None] = Counter()
        self._peak_open: Counter[str | None] = Counter()
        self._early_retries: Counter[str] = Counter()
        self._records: list[RequestRecord] = []

        self._stopping = threading.Event()
        self._issued: set[str] = set()

    # Lifecycle

    def _make_server(self) -> LoopbackServer:
        self._stopping.clear()
        return _Server(self)

    def _stopping_now(self) -> None:
        """Delayed answers are cut short so that stopping never hangs."""
        self._stopping.set()

    # Clock

    def clock_ms(self) -> int:
        """Clover's clock: ours plus ``clock_offset_ms``, or the frozen instant."""
        frozen = self._frozen_ms
        if frozen is not None:
            return frozen
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    def freeze_clock(self, ms: int | None) -> None:
        """Stops Clover's clock at ``ms`` (stamps, Date header, visibility); None restarts it."""
        self._frozen_ms = ms

    def http_date(self) -> str:
        """Clover's clock as an HTTP-date, which has one-second resolution."""
        return formatdate((self.clock_ms() + self.date_offset_ms) / 1000, usegmt=True)

    # Catalog state

    def add_merchant(
        self, merchant_id: str, token: str, items: list[dict[str, Any]] | None = None
    ) -> None:
        """Adds a merchant with copies of ``items``; missing ids and times come from Clover."""
        with self._lock:
            if merchant_id in self._merchants:
                raise ValueError(f"merchant {merchant_id} exists")
            merchant = _Merchant({token: None})
            self._issued.add(token)
            now = self.clock_ms()
            for source in items or []:
                item = copy.deepcopy(source)
                item.setdefault("id", self._new_id())
                if item["id"] in self._known_ids:
                    raise ValueError(f"duplicate item id {item['id']}")
                self._known_ids.add(item["id"])
                item.setdefault("createdTime", now)
                item.setdefault("modifiedTime", now)
                merchant.items[item["id"]] = item
            self._merchants[merchant_id] = merchant

    def set_token(self, merchant_id: str, token: str) -> None:
        """Replaces the merchant's tokens by a plain one; the old ones get 401 from now on."""
        with self._lock:
            merchant = self._merchant(merchant_id)
            merchant.access_tokens = {token: None}
            merchant.refresh_token = merchant.refresh_expiration = None
            self._issued.add(token)

    def issue_tokens(
        self,
        merchant_id: str,
        *,
        access_lifetime_seconds: int | None = None,
        refresh_lifetime_seconds: int | None = None,
    ) -> dict[str, Any]:
        """A new authorization: a v2 pair, as ``/oauth/v2/token`` returns it; every earlier
        token of the merchant stops working. Lifetimes default to the simulator's."""
        with self._lock:
            merchant = self._merchant(merchant_id)
            merchant.access_tokens.clear()
            return self._new_pair(merchant, access_lifetime_seconds, refresh_lifetime_seconds)

    def revoke_refresh_token(self, merchant_id: str) -> None:
        """The merchant's refresh token is refused from now on (its access token lives on)."""
        with self._lock:
            self._merchant(merchant_id).refresh_token = None

    def issued_tokens(self) -> frozenset[str]:
        """Every access and refresh token and authorization code the simulator ever accepted
        or issued: what must never show in a log line or a page (the local stack checks
        them)."""
        with self._lock:
            return frozenset(self._issued)

    def access_token(self, merchant_id: str) -> str | None:
        """The merchant's newest access token (the one a refresh issued last)."""
        with self._lock:
            tokens = self._merchant(merchant_id).access_tokens
            return next(reversed(tokens), None)

    def create_item(self, merchant_id: str, **fields: Any) -> dict[str, Any]:
        """Creates an item; Clover assigns ``createdTime``, ``modifiedTime`` and ``id`` (a
        test may choose the id, one never used, so that a replayed test makes the same)."""
        with self._lock:
            merchant = self._merchant(merchant_id)
            now = self.clock_ms()
            chosen = fields.pop("id", None)
            if chosen is not None and chosen in self._known_ids:
                raise ValueError(f"duplicate item id {chosen}")
            item: dict[str, Any] = {
                "name": "",
                "price": 0,
                "priceType": "FIXED",
                "hidden": False,
                "available": True,
                "isRevenue": True,
                "isAgeRestricted": False,
                **copy.deepcopy(fields),
                "id": chosen or self._new_id(),
                "createdTime": now,
                "modifiedTime": now,
            }
            self._known_ids.add(item["id"])
            merchant.items[item["id"]] = item
            return copy.deepcopy(item)

    def update_item(self, merchant_id: str, item_id: str, **fields: Any) -> dict[str, Any]:
        """Changes fields of a live item and stamps ``modifiedTime``."""
        if "id" in fields:
            raise ValueError("an item id never changes")
        with self._lock:
            item = self._live_item(merchant_id, item_id)
            item.update(copy.deepcopy(fields))
            item["modifiedTime"] = self.clock_ms()
            return copy.deepcopy(item)

    def delete_item(self, merchant_id: str, item_id: str) -> dict[str, Any]:
        """Deletes an item the way Clover keeps it: flagged, with ``deletedTime``."""
        with self._lock:
            item = self._live_item(merchant_id, item_id)
            now = self.clock_ms()
            item.update(deleted=True, deletedTime=now, modifiedTime=now)
            return copy.deepcopy(item)

    def hide_item(self, merchant_id: str, item_id: str) -> dict[str, Any]:
        """Hides the item from the register; Clover still lists it, with ``hidden: true``."""
        return self.update_item(merchant_id, item_id, hidden=True)

    def unhide_item(self, merchant_id: str, item_id: str) -> dict[str, Any]:
        """Shows the item on the register again."""
        return self.update_item(merchant_id, item_id, hidden=False)

    def bulk_price_change(
        self,
        merchant_id: str,
        item_ids: list[str],
        *,
        price: int | None = None,
        delta: int | None = None,
    ) -> list[dict[str, Any]]:
        """Sets ``price`` or adds ``delta`` on all items at once (all or none change)."""
        if (price is None) == (delta is None):
            raise ValueError("give exactly one of price and delta")
        with self._lock:
            targets = [self._live_item(merchant_id, item_id) for item_id in item_ids]
            for item in targets:
                item["price"] = price if price is not None else item["price"] + delta
                item["modifiedTime"] = self.clock_ms()
            return copy.deepcopy(targets)

    def set_stock(self, merchant_id: str, item_id: str, quantity: float) -> dict[str, Any]:
        """Sets the stock, which has its own ``modifiedTime``.

        Whether this also bumps the item's ``modifiedTime`` is unconfirmed for Clover, so
        ``stock_bumps_modified_time`` decides.
        """
        with self._lock:
            item = self._live_item(merchant_id, item_id)
            now = self.clock_ms()
            item["itemStock"] = {"quantity": float(quantity), "modifiedTime": now}
            if self.stock_bumps_modified_time:
                item["modifiedTime"] = now
            return copy.deepcopy(item)

    def items(self, merchant_id: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of the merchant's items in creation order, whatever the API would show."""
        with self._lock:
            return [
                copy.deepcopy(item)
                for item in self._merchant(merchant_id).items.values()
                if include_deleted or not item.get("deleted")
            ]

    def item(self, merchant_id: str, item_id: str) -> dict[str, Any] | None:
        """A copy of the item, deleted or not; None when it never existed."""
        with self._lock:
            return copy.deepcopy(self._merchant(merchant_id).items.get(item_id))

    # Faults

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        merchant_id: str | None = None,
        body: str | None = None,
    ) -> None:
        """Answers the next ``count`` requests (of ``merchant_id``, or any) with ``status``.

        The body is Clover's JSON error, or ``body`` verbatim (e.g. garbage under a 200).
        """
        HTTPStatus(status)  # refuses a status no server could send
        with self._lock:
            self._faults.append(_Fault(status, count, merchant_id, body))

    def clear_faults(self, merchant_id: str | None = None) -> int:
        """Forget the failures ``fail_next`` queued that no request met yet: those of
        ``merchant_id`` only, or (None) every one and the delays ``delay_next`` queued too;
        how many failed answers were forgotten (a test that queued them for requests never made
        cleans up after itself)."""
        with self._lock:
            unused = [f for f in self._faults if merchant_id in (None, f.merchant_id)]
            self._faults = [f for f in self._faults if merchant_id not in (None, f.merchant_id)]
            if merchant_id is None:
                self._delays.clear()
            return sum(f.remaining for f in unused)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Holds the next ``count`` admitted requests ``seconds`` long, not ``delay_seconds``."""
        with self._lock:
            self._delays.append(_Delay(seconds, count))

    # Observability

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request so far, in the order of the answers."""
        with self._lock:
            return list(self._records)

    def request_count(self, merchant_id: str | None = None, endpoint: str | None = None) -> int:
        """Answered requests, refused ones included, optionally of one merchant or endpoint."""
        return sum(
            1
            for record in self.requests
            if merchant_id in (None, record.merchant_id) and endpoint in (None, record.endpoint)
        )

    def max_in_flight(self, token: str | None = None) -> int:
        """Peak number of requests open at once, of one token or of the whole app."""
        with self._lock:
            return self._peak_open[self._key(token)]

    def max_rps(self, token: str | None = None) -> int:
        """Most requests that arrived within any one second, of one token or of the whole app."""
        key = self._key(token)
        arrivals = sorted(r.time for r in self.requests if key in (None, r.token_fingerprint))
        most = 0
        first = 0
        for last, arrived in enumerate(arrivals):
            while arrived - arrivals[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    def early_retries(self, token: str | None = None) -> int:
        """Requests sent while a Retry-After of their token was still running."""
        with self._lock:
            if token is None:
                return sum(self._early_retries.values())
            return self._early_retries[token_fingerprint(token)]

    def reset_counters(self) -> None:
        """Forgets what was observed (records, peaks, list numbering), not the rate windows."""
        with self._lock:
            self._records.clear()
            self._early_retries.clear()
            self._peak_open = Counter(self._open)
            for merchant in self._merchants.values():
                merchant.list_requests = 0

    # Serving

    def _serve(self, target: str, authorization: str | None) -> _Response:
        """Answers one GET; called by the HTTP handler thread."""
        arrived = time.time()
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path == "/oauth/v2/authorize":  # a browser's page: no token, no rate limit
            merchant_id, response = self._authorize(query)
            with self._lock:
                self._records.append(
                    RequestRecord(arrived, merchant_id, "authorize", response.status, None, {})
                )
            return response
        endpoint, merchant_id, item_id = _route(url.path)
        token = _bearer(authorization)
        key = self._key(token)
        with self._lock:
            self._open_request(key)
            refusal = self._admit(key, time.monotonic())
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        try:
            if refusal is not None:
                response = refusal
            else:
                self._stopping.wait(self._take_delay())
                response = self._answer(endpoint, merchant_id, item_id, token, query, target)
            status = response.status
            return response
        finally:
            # Before the answer is written, so a client that sends its next request at once
            # never finds this one still counted.
            with self._lock:
                self._close_request(key, admitted=refusal is None)
                self._records.append(
                    RequestRecord(arrived, merchant_id, endpoint, status, key, query)
                )

    def _serve_post(self, path: str, body: bytes) -> _Response:
        """Answers one POST: ``/oauth/v2/refresh`` or ``/oauth/v2/token``."""
        arrived = time.time()
        merchant_id: str | None = None
        response = _error(404)
        endpoint = {"/oauth/v2/refresh": "refresh", "/oauth/v2/token": "token"}.get(path, "other")
        if endpoint == "refresh":
            merchant_id, response = self._refresh(body)
        elif endpoint == "token":
            merchant_id, response = self._exchange(body)
        with self._lock:
            self._records.append(
                RequestRecord(arrived, merchant_id, endpoint, response.status, None, {})
            )
        return response

    def _authorize(self, query: dict[str, list[str]]) -> tuple[str | None, _Response]:
        """The signed-in merchant approves the app at once: a redirect to ``redirect_uri``
        with a one-time code (``state`` passed through when given)."""
        single = {k: v[0] for k, v in query.items() if len(v) == 1}
        client_id, redirect_uri = single.get("client_id"), single.get("redirect_uri", "")
        with self._lock:
            merchant_id = self.signed_in_merchant
            if merchant_id is None or merchant_id not in self._merchants:
                return merchant_id, _error(401, "no merchant signed in")
            if client_id != self.client_id:
                return merchant_id, _error(400, "unknown client_id")
            site = self.site_url
            if not redirect_uri.startswith("https://") or (
                site is not None and not redirect_uri.startswith(site.rstrip("/") + "/")
            ):
                return merchant_id, _error(400, "redirect_uri must be a subpath of the site URL")
            code = f"sim-code-{secrets.token_urlsafe(12)}"
            expires = self.clock_ms() // 1000 + self.code_lifetime_seconds
            self._codes[code] = _Code(merchant_id, client_id, expires)
            self._issued.add(code)
        back = {"merchant_id": merchant_id, "employee_id": "SIMEMPLOYEE01"}
        back |= {"client_id": client_id, "code": code}
        if "state" in single:
            back["state"] = single["state"]
        location = f"{redirect_uri}?{urlencode(back)}"
        return merchant_id, _Response(302, b"", {"Location": location})

    def _exchange(self, body: bytes) -> tuple[str | None, _Response]:
        """A pair for a live code of this app with the right secret; the code dies on its
        first exchange, and every earlier token of the merchant with it."""
        try:
            request = json.loads(body)
            client_id, secret, code = (request[k] for k in ("client_id", "client_secret", "code"))
        except (ValueError, TypeError, KeyError):
            return None, _error(400, "client_id, client_secret and code are required")
        with self._lock:
            issued = self._codes.get(code) if isinstance(code, str) else None
            merchant_id = issued.merchant_id if issued else None
        fault = self._take_fault(merchant_id)
        if fault is not None:
            return merchant_id, fault
        with self._lock:
            if client_id != self.client_id or secret != self.client_secret:
                return merchant_id, _error(401, "invalid client credentials")
            if issued is None or issued.used or issued.client_id != client_id:
                return merchant_id, _error(400, "invalid authorization code")
            issued.used = True
            if self.clock_ms() // 1000 >= issued.expires:
                return merchant_id, _error(400, "authorization code expired")
            merchant = self._merchant(issued.merchant_id)
            merchant.access_tokens.clear()
            return merchant_id, _json_response(200, self._new_pair(merchant, None, None))

    def _refresh(self, body: bytes) -> tuple[str | None, _Response]:
        """A new pair for a live refresh token, which dies at once (single use)."""
        try:
            request = json.loads(body)
            client_id, refresh_token = request["client_id"], request["refresh_token"]
        except (ValueError, TypeError, KeyError):
            return None, _error(400, "client_id and refresh_token are required")
        with self._lock:
            now = self.clock_ms() // 1000
            merchant_id, merchant = next(
                (
                    (mid, m)
                    for mid, m in self._merchants.items()
                    if refresh_token and m.refresh_token == refresh_token
                ),
                (None, None),
            )
        fault = self._take_fault(merchant_id)
        if fault is not None:
            return merchant_id, fault
        with self._lock:
            if client_id != self.client_id:
                return merchant_id, _error(401, "invalid client_id")
            if merchant is None or merchant.refresh_token != refresh_token:
                return merchant_id, _error(401, "invalid refresh token")
            if merchant.refresh_expiration is not None and now >= merchant.refresh_expiration:
                return merchant_id, _error(401, "invalid refresh token")
            return merchant_id, _json_response(200, self._new_pair(merchant, None, None))

    def _answer(
        self,
        endpoint: str,
        merchant_id: str | None,
        item_id: str | None,
        token: str | None,
        query: dict[str, list[str]],
        target: str,
    ) -> _Response:
        fault = self._take_fault(merchant_id)
        if fault is not None:
            return fault
        if endpoint == "other" or merchant_id is None:
            return _error(404)
        with self._lock:
            merchant = self._merchants.get(merchant_id)
            authorized = (
                merchant is not None
                and token is not None
                and token in merchant.access_tokens
                and _alive(merchant.access_tokens[token], self.clock_ms() // 1000)
            )
        if not authorized or "access_token" in query:
            return _error(401)
        try:
            if item_id is not None:
                return self._get_item(merchant_id, item_id, _expansions(query))
            return self._list_items(merchant_id, query, target)
        except _BadRequest as bad:
            return _error(400, str(bad))

    def _get_item(self, merchant_id: str, item_id: str, expand: set[str]) -> _Response:
        status = self.item_read_status.get(item_id)
        if status is not None:
            return _error(status)
        with self._lock:
            item = self._merchants[merchant_id].items.get(item_id)
            if item is None or item.get("deleted"):
                return _error(404)
            return _json_response(200, _public(item, expand))

    def _list_items(self, merchant_id: str, query: dict[str, list[str]], target: str) -> _Response:
        limit = _int_param(query, "limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        offset = _int_param(query, "offset", 0)
        if offset < 0:
            raise _BadRequest(f"offset must not be negative, got {offset}")
        filters = [_Filter.parse(text) for text in query.get("filter", [])]
        order_field, descending = _order(query)
        expand = _expansions(query)
        with self._lock:
            merchant = self._merchants[merchant_id]
            number = merchant.list_requests
            merchant.list_requests += 1
            hook = self.before_list_page
        if hook is not None:
            hook(number)
        with self._lock:
            if self.ignore_order_by:
                order_field, descending = "createdTime", True
            now = self.clock_ms()
            unlisted = set(self.hide_from_listing)
            listed = [
                item
                for item in merchant.items.values()
                if (self.list_deleted or not item.get("deleted"))
                and item["id"] not in unlisted
                and now >= item["modifiedTime"] + self.visibility_lag_ms
                and all(f.matches(item) for f in filters)
            ]
            # An item without the field (a test's hostile item) sorts as 0: where Clover would
            # put it is unknown, and a listing must not fail on it.
            listed.sort(
                key=lambda item: (item.get(order_field) or 0, item["id"]), reverse=descending
            )
            page = [_public(item, expand) for item in listed[offset : offset + limit]]
            late = self.after_list_page
        if late is not None:
            late(number)
        return _json_response(
            200,
            {"elements": page, "href": self.base_url + target},
            {"X-Clover-Allowed-Filter-Fields": ",".join(ALLOWED_FILTER_FIELDS)},
        )

    def _take_delay(self) -> float:
        with self._lock:
            if not self._delays:
                return self.delay_seconds
            pending = self._delays[0]
            pending.remaining -= 1
            if pending.remaining <= 0:
                self._delays.popleft()
            return pending.seconds

    def _take_fault(self, merchant_id: str | None) -> _Response | None:
        with self._lock:
            fault = next((f for f in self._faults if f.merchant_id in (None, merchant_id)), None)
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        if fault.body is not None:
            return _Response(fault.status, fault.body.encode())
        if fault.status == HTTPStatus.TOO_MANY_REQUESTS:
            return _error(fault.status, headers={"Retry-After": str(self.retry_after_seconds)})
        return _error(fault.status)

    # Internals; the callers hold the lock.

    @staticmethod
    def _key(token: str | None) -> str | None:
        """The rate-limit and record key of a token; None stands for the whole app."""
        return None if token is None else token_fingerprint(token)

    def _new_pair(
        self, merchant: _Merchant, access_lifetime: int | None, refresh_lifetime: int | None
    ) -> dict[str, Any]:
        now = self.clock_ms() // 1000
        access = f"sim-access-{secrets.token_urlsafe(12)}"
        refresh = f"sim-refresh-{secrets.token_urlsafe(12)}"
        access_expiration = now + (
            self.access_token_lifetime_seconds if access_lifetime is None else access_lifetime
        )
        refresh_expiration = now + (
            self.refresh_token_lifetime_seconds if refresh_lifetime is None else refresh_lifetime
        )
        merchant.access_tokens[access] = access_expiration
        merchant.refresh_token = refresh
        self._issued |= {access, refresh}
        merchant.refresh_expiration = refresh_expiration
        return {
            "access_token": access,
            "access_token_expiration": access_expiration,
            "refresh_token": refresh,
            "refresh_token_expiration": refresh_expiration,
        }

    def _merchant(self, merchant_id: str) -> _Merchant:
        merchant = self._merchants.get(merchant_id)
        if merchant is None:
            raise KeyError(f"unknown merchant {merchant_id}")
        return merchant

    def _live_item(self, merchant_id: str, item_id: str) -> dict[str, Any]:
        item = self._merchant(merchant_id).items.get(item_id)
        if item is None or item.get("deleted"):
            raise KeyError(f"no live item {item_id} at merchant {merchant_id}")
        return item

    def _new_id(self) -> str:
        while True:
            candidate = "".join(self._random.choices(_ID_ALPHABET, k=13))
            if candidate not in self._known_ids:
                return candidate

    def _open_request(self, key: str | None) -> None:
        for scope in {None, key}:
            self._open[scope] += 1
            self._peak_open[scope] = max(self._peak_open[scope], self._open[scope])

    def _close_request(self, key: str | None, *, admitted: bool) -> None:
        for scope in {None, key}:
            self._open[scope] -= 1
            if admitted:
                self._admitted[scope] -= 1

    def _admit(self, key: str | None, now: float) -> _Response | None:
        """Takes a slot under Clover's limits, or returns the 429 Clover would send instead.

        A token that asks again before its Retry-After ran out is refused and its wait starts
        over, as Clover warns.
        """
        if key is not None and self.rate_limits_enabled:
            block = self._blocks.get(key)
            if block is not None and now < block.until:
                self._early_retries[key] += 1
                block.until = now + self.retry_after_seconds
                return self._too_many(block.limit)
        for window in self._windows.values():
            while window and now - window[0] >= 1.0:
                window.popleft()
        hit = self._limit_hit(key) if self.rate_limits_enabled else None
        if hit is not None:
            if key is not None:
                self._blocks[key] = _Block(now + self.retry_after_seconds, hit)
            return self._too_many(hit)
        for scope in {None, key}:
            self._admitted[scope] += 1
            self._windows.setdefault(scope, deque()).append(now)
        return None

    def _limit_hit(self, key: str | None) -> str | None:
        """The first limit that one more request would break, if any."""
        checks = [
            ("app_rps", len(self._windows.get(None, ())) >= self.app_rps),
            ("app_concurrency", self._admitted[None] >= self.app_concurrency),
        ]
        if key is not None:
            checks[:0] = [
                ("token_rps", len(self._windows.get(key, ())) >= self.token_rps),
                ("token_concurrency", self._admitted[key] >= self.token_concurrency),
            ]
        return next((limit for limit, broken in checks if broken), None)

    def _too_many(self, limit: str) -> _Response:
        headers = {
            "Retry-After": str(self.retry_after_seconds),
            _LIMIT_HEADERS[limit]: str(getattr(self, limit)),
        }
        return _error(429, headers=headers)


def _alive(expiration: int | None, now: int) -> bool:
    return expiration is None or now < expiration


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests (keep-alive, like Clover's) into the simulator's answers."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, the body would wait for the
    # client's delayed ACK (about 40 ms a request), making rate-limit tests miss their second.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        simulator = self.server.simulator
        response = simulator._serve(self.path, self.headers.get("Authorization"))
        if simulator.gzip_answers and "gzip" in self.headers.get("Accept-Encoding", ""):
            headers = {**response.headers, "Content-Encoding": "gzip"}
            response = _Response(response.status, gzip.compress(response.body), headers)
        self._send(response)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(self.server.simulator._serve_post(urlsplit(self.path).path, body))

    def _send(self, response: _Response) -> None:
        simulator = self.server.simulator
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(response.body)),
            **({"Date": simulator.http_date()} if simulator.send_date else {}),
            **response.headers,
        }
        try:
            self.send_response_only(response.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test); nothing is left to answer.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stays quiet: a line per request would bury test output."""


class _Server(LoopbackServer):
    def __init__(self, simulator: CloverSimulator) -> None:
        super().__init__(simulator.address, _Handler)
        self.simulator = simulator
