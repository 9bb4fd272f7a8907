"""A Hipoink ESL server on loopback that answers like the real one, faults included.

It follows docs/hipoink-api.md: every call is
``POST /api/{client_id}/<path>`` with a JSON body carrying ``sign`` and ``store_code``;
errors come as HTTP 200 with ``error_code`` 1, and one bad record fails its whole batch.
What that page leaves unconfirmed (``f1`` encoding, largest batch) is a setting, so
tests can play each variant. Fault switches (5xx, non-JSON bodies, outages, delays) let
tests drive the sender's retry and error-class logic over real HTTP.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from devkit.loopback import LoopbackServer, LoopbackService

F1Encoding = Literal["array", "string", "both"]
UnknownDelete = Literal["count", "error"]

_PRICE = re.compile(r"\d+(\.\d{1,2})?", re.ASCII)
# Body keys of ``product/create`` that address the call rather than describe the product.
_ENVELOPE_KEYS = frozenset({"store_code", "is_base64", "sign"})
_BATCH_PATHS = frozenset({"product/create_multiple", "product/del_multiple"})


@dataclass(frozen=True)
class HipoinkRequest:
    """One request as the simulator saw it; the sign is deliberately never kept."""

    time: float
    path: str
    store_code: str | None
    n_records: int
    codes: list[str]
    http_status: int
    error_code: int | None
    error_msg: str | None


@dataclass(frozen=True)
class _Reply:
    """What goes back on the wire, plus the error fields the request log records."""

    status: int
    body: bytes
    content_type: str = "application/json"
    error_code: int | None = None
    error_msg: str | None = None
    content_encoding: str | None = None

    @classmethod
    def api(cls, error_code: int, error_msg: str, extra: dict[str, Any] | None = None) -> _Reply:
        """An HTTP 200 JSON answer, the way Hipoink reports success and errors alike."""
        payload = {"error_code": error_code, "error_msg": error_msg, **(extra or {})}
        return cls(200, json.dumps(payload).encode(), error_code=error_code, error_msg=error_msg)

    @classmethod
    def raw(cls, status: int, text: str | None = None, encoding: str | None = None) -> _Reply:
        """A non-JSON answer, as a proxy or a crashed server would send (with ``encoding``,
        sent as its ``Content-Encoding``, whatever the body is)."""
        body = HTTPStatus(status).phrase if text is None else text
        return cls(
            status,
            body.encode(),
            content_type="text/plain; charset=utf-8",
            content_encoding=encoding,
        )


class _ApiError(Exception):
    """An ``error_code`` 1 answer, raised where the problem is found."""


class HipoinkSimulator(LoopbackService):
    """An in-process Hipoink server with inspectable state and switchable faults."""

    thread_name = "hipoink-simulator"

    def __init__(
        self, *, client_id: str = "default", sign: str = "test-sign", stores: Iterable[str] = ()
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.sign = sign
        self.f1_encoding: F1Encoding = "both"
        # What del_multiple does with a code it does not hold (unconfirmed): leave it out of
        # ``count``, or refuse the whole batch with "product X not found".
        self.unknown_delete: UnknownDelete = "count"
        self.max_batch_size: int | None = None
        self.down = False
        self.down_stores: set[str] = set()
        self.delay_seconds = 0.0
        self.reject_pcs: set[str] = set()
        self.reject_pcs_in: dict[str, set[str]] = {}  # refused by that store only
        # Whether an empty ``pp`` (a label without a price: what a VARIABLE-price item
        # sends by default) is taken, or refused like any non-decimal price (unconfirmed).
        self.blank_price_accepted = True
        self._lock = threading.Lock()
        self._stores: dict[str, dict[str, dict[str, Any]]] = {code: {} for code in stores}
        self._bindings: dict[str, dict[str, str]] = {code: {} for code in self._stores}
        self._history: defaultdict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self._requests: list[HipoinkRequest] = []
        self._faults: deque[tuple[int, str | None, str | None]] = deque()
        self._delays: deque[float] = deque()
        self._routes: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
            "product/create": self._create,
            "product/create_multiple": self._create_multiple,
            "product/del_multiple": self._del_multiple,
            "product/query": self._query,
        }

    # Lifecycle

    def _make_server(self) -> LoopbackServer:
        return _Server(self)

    # Setup and inspection

    def add_store(self, store_code: str) -> None:
        """Create a store; an existing one keeps its products."""
        with self._lock:
            self._stores.setdefault(store_code, {})
            self._bindings.setdefault(store_code, {})

    def remove_store(self, store_code: str) -> None:
        """Forget a store, as if it never existed (a store code an operator mistyped):
        calls for it are refused ("store … not found")."""
        with self._lock:
            self._stores.pop(store_code, None)
            self._bindings.pop(store_code, None)

    def bind(self, store_code: str, esl_code: str, pc: str) -> None:
        """Bind a label to a product, as store staff do in the Hipoink console."""
        with self._lock:
            if pc not in self._stores[store_code]:
                raise KeyError(f"product {pc} not in store {store_code}")
            self._bindings[store_code][esl_code] = pc

    def edit(self, store_code: str, pc: str, **fields: Any) -> None:
        """Change a stored product's fields (``None`` removes one) as store staff do in the
        Hipoink console, or as a restore from backup leaves it: no call of ours made it, so
        ``upserts_of`` does not list it."""
        with self._lock:
            record = self._stores[store_code][pc]
            for name, value in fields.items():
                if value is None:
                    record.pop(name, None)
                else:
                    record[name] = value

    def forget(self, store_code: str, pc: str) -> None:
        """Lose a product (and its label bindings) without a call of ours: a restore from a
        backup older than the product."""
        with self._lock:
            self._stores[store_code].pop(pc, None)
            bound = self._bindings[store_code]
            for esl_code in [e for e, code in bound.items() if code == pc]:
                del bound[esl_code]

    def bindings(self, store_code: str) -> dict[str, str]:
        """ESL code → product code for one store (a copy)."""
        with self._lock:
            return dict(self._bindings[store_code])

    def labels(self, store_code: str) -> dict[str, dict[str, Any]]:
        """Product code → stored record for one store (a deep copy)."""
        with self._lock:
            return copy.deepcopy(self._stores[store_code])

    def upserts_of(self, store_code: str, pc: str) -> list[dict[str, Any]]:
        """Every version of a product ever stored, oldest first, to spot duplicate sends."""
        with self._lock:
            return copy.deepcopy(self._history.get((store_code, pc), []))

    @property
    def requests(self) -> list[HipoinkRequest]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, path: str | None = None, store_code: str | None = None) -> int:
        """How many requests matched the given path and store (``None`` matches any)."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (path is None or r.path == path)
                and (store_code is None or r.store_code == store_code)
            )

    def reset_requests(self) -> None:
        """Forget the request log, so a test counts only its own phase."""
        with self._lock:
            self._requests.clear()

    # Faults

    def fail_next(
        self,
        status: int | None = None,
        count: int = 1,
        *,
        body: str | None = None,
        content_encoding: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests with a bare HTTP status, without processing them.

        With ``body``, that raw non-JSON text is sent (status 200 unless given); otherwise
        the status defaults to 500. With ``content_encoding``, the answer claims it (a
        broken proxy's ``gzip`` over a body that is not).
        """
        answer = status if status is not None else (500 if body is None else 200)
        with self._lock:
            self._faults.extend([(answer, body, content_encoding)] * count)

    def clear_faults(self) -> int:
        """Forget the failures and delays ``fail_next`` and ``delay_next`` queued that no
        request met yet (the next requests are answered normally); how many failures there
        were (a test that queued them for calls never made cleans up after itself)."""
        with self._lock:
            unused = len(self._faults)
            self._faults.clear()
            self._delays.clear()
            return unused

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` requests (on top of ``delay_seconds``), for client timeouts.

        The delayed request is still processed afterwards, as a slow real server would.
        """
        with self._lock:
            self._delays.extend([seconds] * count)

    # Request handling

    def _serve(self, method: str, url_path: str, raw: bytes) -> _Reply:
        """Answer one request and log it."""
        arrived = time.time()
        target = _split_path(url_path)
        body = _parse_body(raw)
        path = target[1] if target is not None else url_path
        store_code, n_records, codes = _summarize(path, body)
        reply = self._answer(method, target, body)
        entry = HipoinkRequest(
            time=arrived,
            path=path,
            store_code=store_code,
            n_records=n_records,
            codes=codes,
            http_status=reply.status,
            error_code=reply.error_code,
            error_msg=reply.error_msg,
        )
        with self._lock:
            self._requests.append(entry)
        return reply

    def _answer(
        self, method: str, target: tuple[str, str] | None, body: dict[str, Any] | None
    ) -> _Reply:
        """Faults first, then the checks in the order the real server makes them."""
        if self.down or (body is not None and body.get("store_code") in self.down_stores):
            return _Reply.raw(503)
        with self._lock:
            if self._faults:
                return _Reply.raw(*self._faults.popleft())
            delay = self.delay_seconds + (self._delays.popleft() if self._delays else 0.0)
        if delay > 0:
            time.sleep(delay)
        if target is None or target[1] not in self._routes:
            return _Reply.raw(404)
        client_id, path = target
        route = self._routes[path]
        if method != "POST" and path != "product/query":
            return _Reply.raw(405)
        try:
            if client_id != self.client_id:
                raise _ApiError(f"app key {client_id} not found")
            if body is None:
                raise _ApiError("invalid json")
            if body.get("sign") != self.sign:
                raise _ApiError("sign error")
            extra = route(self._store_of(client_id, body), body)
        except _ApiError as error:
            return _Reply.api(1, str(error))
        return _Reply.api(0, "", extra)

    def _store_of(self, client_id: str, body: dict[str, Any]) -> str:
        """The body's store, which must exist."""
        code = body.get("store_code")
        if code is None or code == "":
            raise _ApiError(f"{client_id} missing store_code field")
        with self._lock:
            if isinstance(code, str) and code in self._stores:
                return code
        raise _ApiError(f"store {code} not found")

    def _create(self, store_code: str, body: dict[str, Any]) -> dict[str, Any]:
        record = {k: v for k, v in body.items() if k not in _ENVELOPE_KEYS}
        self._upsert(store_code, [record])
        return {}

    def _create_multiple(self, store_code: str, body: dict[str, Any]) -> dict[str, Any]:
        self._upsert(store_code, self._batch(body))
        return {}

    def _del_multiple(self, store_code: str, body: dict[str, Any]) -> dict[str, Any]:
        codes = self._batch(body)
        if not all(isinstance(code, str) for code in codes):
            raise _ApiError("f1 must be a list of product codes")
        with self._lock:
            products = self._stores[store_code]
            unknown = [code for code in codes if code not in products]
            if unknown and self.unknown_delete == "error":
                raise _ApiError(f"product {unknown[0]} not found")
            deleted = {code for code in codes if products.pop(code, None) is not None}
            bound = self._bindings[store_code]
            for esl_code in [e for e, pc in bound.items() if pc in deleted]:
                del bound[esl_code]
        return {"count": len(deleted)}

    def _query(self, store_code: str, body: dict[str, Any]) -> dict[str, Any]:
        page = _positive_int(body, "f1")
        size = _positive_int(body, "f2")
        with self._lock:
            records = list(self._stores[store_code].values())
            start = (page - 1) * size
            return {"data": copy.deepcopy(records[start : start + size]), "total": len(records)}

    def _batch(self, body: dict[str, Any]) -> list[Any]:
        """The ``f1`` list in the configured encoding, within the batch limit."""
        items = _decode_f1(body.get("f1"), self.f1_encoding)
        limit = self.max_batch_size
        if limit is not None and len(items) > limit:
            raise _ApiError(f"too many products (max {limit})")
        return items

    def _upsert(self, store_code: str, records: list[Any]) -> None:
        """Store all records, replacing by ``pc``, or none of them if one is bad."""
        rejected = set(self.reject_pcs) | self.reject_pcs_in.get(store_code, set())
        blank = self.blank_price_accepted
        valid = [_check_record(i, record, rejected, blank) for i, record in enumerate(records)]
        with self._lock:
            products = self._stores[store_code]
            for pc, record in valid:
                products[pc] = copy.deepcopy(record)
                self._history[(store_code, pc)].append(copy.deepcopy(record))


class _Server(LoopbackServer):
    """The HTTP server, carrying the simulator its handlers answer for."""

    def __init__(self, simulator: HipoinkSimulator) -> None:
        super().__init__(simulator.address, _Handler)
        self.simulator = simulator


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only; every decision is the simulator's."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle plus delayed ACKs
    # add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self._reply("POST")

    def do_GET(self) -> None:
        self._reply("GET")

    def _reply(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        reply = self.server.simulator._serve(method, self.path, self.rfile.read(length))
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            if reply.content_encoding is not None:
                self.send_header("Content-Encoding", reply.content_encoding)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test); the request was still processed.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: test output is for the tests."""


def _split_path(url_path: str) -> tuple[str, str] | None:
    """``/api/{client_id}/<path>`` → (client_id, path); None for any other URL."""
    parts = url_path.split("?", 1)[0].strip("/").split("/", 2)
    if len(parts) == 3 and parts[0] == "api" and parts[1] and parts[2]:
        return parts[1], parts[2]
    return None


def _parse_body(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in the body, or None when there is none."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _summarize(path: str, body: dict[str, Any] | None) -> tuple[str | None, int, list[str]]:
    """Store, record count and codes of a request for the log, whatever its validity."""
    if body is None:
        return None, 0, []
    store = body.get("store_code")
    store_code = store if isinstance(store, str) else None
    if path == "product/create":
        pc = body.get("pc")
        return store_code, 1, [pc] if isinstance(pc, str) else []
    if path not in _BATCH_PATHS:
        return store_code, 0, []
    try:
        items = _decode_f1(body.get("f1"), "both")
    except _ApiError:
        return store_code, 0, []
    if path == "product/del_multiple":
        return store_code, len(items), [c for c in items if isinstance(c, str)]
    pcs = [r["pc"] for r in items if isinstance(r, dict) and isinstance(r.get("pc"), str)]
    return store_code, len(items), pcs


def _decode_f1(value: Any, encoding: F1Encoding) -> list[Any]:
    """``f1`` as a list, refusing the encoding the server is not configured to accept."""
    if isinstance(value, list):
        if encoding == "string":
            raise _ApiError("f1 must be a JSON-encoded string of an array, not an array")
        return value
    if isinstance(value, str):
        if encoding == "array":
            raise _ApiError("f1 must be a JSON array, not a string")
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            return decoded
        raise _ApiError("f1 is not a JSON-encoded array")
    raise _ApiError("missing f1 field" if value is None else "f1 must be an array")


def _check_record(
    index: int, record: Any, rejected: set[str], blank_price_accepted: bool = False
) -> tuple[str, dict[str, Any]]:
    """(pc, record) of a valid product; otherwise the error names the field and the pc.

    A record without a usable ``pc`` is named by its 0-based position in the batch.
    """
    if not isinstance(record, dict):
        raise _ApiError(f"product #{index}: record must be an object")
    pc = _text_field(record, "pc", 64, f"product #{index}")
    name = f"product {pc}"
    _text_field(record, "pn", 127, name)
    pp = record.get("pp")
    if pp is None:
        raise _ApiError(f"{name}: missing field pp")
    if not (isinstance(pp, str) and (_PRICE.fullmatch(pp) or (blank_price_accepted and not pp))):
        raise _ApiError(f"{name}: field pp must be a decimal string")
    if pc in rejected:
        raise _ApiError(f"{name}: rejected")
    return pc, record


def _text_field(record: dict[str, Any], key: str, max_len: int, name: str) -> str:
    """A required non-empty string field of at most ``max_len`` characters."""
    value = record.get(key)
    if value is None:
        raise _ApiError(f"{name}: missing field {key}")
    if not (isinstance(value, str) and 0 < len(value) <= max_len):
        raise _ApiError(
            f"{name}: field {key} must be a non-empty string of at most {max_len} chars"
        )
    return value


def _positive_int(body: dict[str, Any], key: str) -> int:
    """A paging field given as a positive integer or its decimal string."""
    value = body.get(key)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise _ApiError(f"field {key} must be a positive integer")
