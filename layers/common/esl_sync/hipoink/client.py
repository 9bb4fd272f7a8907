"""HTTP client for the Hipoink product API.

Hipoink answers HTTP 200 even for errors; ``error_code`` decides, and its ``error_msg``
says which class of :mod:`esl_sync.hipoink.errors` the error is. The ``sign`` is a shared secret: it
is sent in the body and never appears in a log line, error or repr. It is read through a
callable on every call, so a rotated secret is picked up when its cache expires.

Each call ends within ``timeout_seconds`` as a whole (:mod:`esl_sync.http_deadline`), not
only each of its reads: the sender starts a job only while one call still fits in its
invocation, and an answer written a byte at a time ran it into its Lambda timeout.

A server certificate that fails verification is a configuration error, not a transient
one: retrying the same handshake gets the same refusal, so the store is blocked and
re-tested after the cool-down (and alarmed) instead of burning SQS receives into the
dead-letter queue. It means the wrong ``HIPOINK_API_BASE_URL``, a private CA missing from
``SSL_CERT_FILE``, or a certificate Hipoink let expire.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from esl_sync import http_deadline, tls
from esl_sync.hipoink.errors import (
    HipoinkConfigError,
    HipoinkNotFound,
    HipoinkRecordError,
    HipoinkRetryable,
    HipoinkUnreadable,
    classify,
)
from esl_sync.hipoink.records import FREE_FIELDS, HipoinkRecord
from esl_sync.http_connections import read_at_most
from esl_sync.records import UNREADABLE, HeldPage

ANSWER_MAX_BYTES = 1 << 20
"""Of an answer's body, what is read: Hipoink answers a few hundred bytes of JSON, and a
body past this (a base URL that serves something else, a broken proxy) is retried, never
held whole in a sender's memory."""
MESSAGE_MAX_CHARS = 500
"""Of Hipoink's ``error_msg``, what is kept (in the error, its log line, and each refused
label's failure in Postgres): enough to read, never a megabyte per label."""


class HipoinkClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        sign: Callable[[], str],
        *,
        timeout_seconds: float = 15.0,
        f1_encoding: Literal["array", "string"] = "array",
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/api/{client_id}/product/"
        self._sign = sign
        self._f1_encoding = f1_encoding
        self._timeout_seconds = timeout_seconds
        # The process's one TLS context (esl_sync.tls says why), under the call's deadline.
        self._http = httpx.Client(
            timeout=timeout_seconds, transport=http_deadline.transport(tls.for_https())
        )

    def __repr__(self) -> str:
        return f"HipoinkClient(url={self._url!r})"

    def upsert(self, store_code: str, records: Sequence[HipoinkRecord]) -> None:
        """``product/create_multiple``: create or replace each record by its ``pc``."""
        f1: object = list(records)
        if self._f1_encoding == "string":
            f1 = json.dumps(f1)
        self._post("create_multiple", {"store_code": store_code, "f1": f1, "is_base64": "0"})

    def delete(self, store_code: str, codes: Sequence[str]) -> int:
        """``product/del_multiple``; a single code Hipoink does not know counts as deleted.

        A batch answered "not found" raises :class:`HipoinkNotFound`: the server may have
        refused the whole batch, so the caller splits it down to single codes.
        """
        try:
            answer = self._post("del_multiple", {"store_code": store_code, "f1": list(codes)})
        except HipoinkNotFound:
            if len(codes) == 1:
                return 0
            raise
        count = answer.get("count", 0)
        return count if isinstance(count, int) else 0

    def query(self, store_code: str, page: int, page_size: int) -> HeldPage:
        """``product/query``: one page (from 1) of the products the store holds. Sent as a
        POST of a JSON body like every other call (the vendor lists it as a GET: a GET's
        sign would travel in the URL); the answer's shape is unconfirmed and read by
        :func:`held_page`, which refuses what it cannot read by name."""
        answer = self._post("query", {"store_code": store_code, "f1": page, "f2": page_size})
        return held_page(answer, page)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        sign = self._sign()
        status, content = self._exchange(path, {**body, "sign": sign})
        if status >= 500 or status in (408, 429):
            raise HipoinkRetryable(f"{path}: HTTP {status}")
        if status in (401, 403, 404):
            raise HipoinkConfigError(f"{path}: HTTP {status}")
        if status == 413:
            raise HipoinkRecordError(f"{path}: HTTP 413 (batch too large)")
        try:
            answer = json.loads(content)  # what httpx's Response.json() does
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
            raise HipoinkRetryable(f"{path}: answer is not JSON (HTTP {status})") from None
        if not isinstance(answer, dict):
            raise HipoinkRetryable(f"{path}: answer has no integer error_code")
        code = answer.get("error_code")
        # A boolean is not the integer Hipoink documents: ``false`` must not pass for 0 and
        # acknowledge labels the server may not hold (Python counts bools as ints).
        if not isinstance(code, int) or isinstance(code, bool):
            raise HipoinkRetryable(f"{path}: answer has no integer error_code")
        if code != 0:
            message = said(answer.get("error_msg"), sign)
            raise classify(message)(f"{path}: {message}")
        if not 200 <= status < 300:
            # error_code 0 under an error status (a 400, a redirect): not a success, so no
            # label is acknowledged that Hipoink may not hold; retried, then dead-lettered.
            raise HipoinkRetryable(f"{path}: HTTP {status} with error_code 0")
        return answer

    def _exchange(self, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        """One POST: its status and at most :data:`ANSWER_MAX_BYTES` of its body, or the
        transport's failure as a typed error (never chained: httpx's exceptions hold the
        request, and with it the sign)."""
        try:
            with (
                http_deadline.deadline(self._timeout_seconds),
                self._http.stream("POST", self._url + path, json=payload) as response,
            ):
                # iter_bytes() decodes: a compressed body counts unpacked.
                try:
                    content = read_at_most(response.iter_bytes(), ANSWER_MAX_BYTES)
                except httpx.DecodingError:
                    # A body its Content-Encoding does not decode (a broken proxy's gzip):
                    # unreadable like one that is not JSON. Not a TransportError, so it
                    # escaped as httpx's own, which no caller expects (a job crashed).
                    raise HipoinkRetryable(
                        f"{path}: answer cannot be decoded"
                        f" ({_encoding(response.headers)}, HTTP {response.status_code})"
                    ) from None
                if content is None:
                    raise HipoinkRetryable(
                        f"{path}: answer larger than {ANSWER_MAX_BYTES} bytes"
                        f" (HTTP {response.status_code})"
                    )
                return response.status_code, content
        except httpx.TimeoutException:
            raise HipoinkRetryable(f"{path}: timed out") from None
        except httpx.TransportError as error:
            refusal = certificate_refusal(error)
            if refusal is not None:
                raise HipoinkConfigError(
                    f"{path}: Hipoink's TLS certificate failed verification ({refusal})"
                ) from None
            raise HipoinkRetryable(f"{path}: {type(error).__name__}") from None


def _encoding(headers: httpx.Headers) -> str:
    """The answer's ``Content-Encoding`` as an error may quote it: one short line."""
    from esl_sync.storable import label_text  # see said()

    return label_text(headers.get("Content-Encoding", ""), 40) or "?"


COMPARED_FIELDS = ("pc", "pn", "pp", "pi", "pu", *FREE_FIELDS)
"""The fields a label record may carry: what a verify compares, and all it reads of a held
product (text or a number, of at most :data:`HELD_TEXT_MAX_CHARS`, without NUL or a lone
surrogate; anything else reads as :data:`~esl_sync.records.UNREADABLE`)."""
HELD_TEXT_MAX_CHARS = 1000
_LIST_KEYS = ("list", "records", "rows", "items", "data")
_TOTAL_KEYS = ("total",)
"""Where a listing's total may be. Not ``count``: Hipoink's ``del_multiple`` answers a
``count`` of what that one call did, and a ``count`` of one page's products read as the
total would end the listing after its first page (the rest would look drifted)."""


def held_page(answer: dict[str, Any], page: int) -> HeldPage:
    """An answer of ``product/query`` read tolerantly: the products are ``data``, a list, or
    a list under ``data.list`` (``records``, ``rows``, ``items``, ``data``); the total, if
    given, ``total`` beside them (else at the top). An answer without such a
    list is :class:`HipoinkUnreadable` (named, never quoting Hipoink's values).

    One product never spoils the page (a store may hold another system's products, with
    codes and names of its own): a product that is not an object or has no usable ``pc``
    (text, or an integer written out; :func:`esl_sync.storable.product_code`) is skipped and
    counted (no label of ours has such a code); a compared field that is not text a label
    holds (not text or a number; NUL, a lone surrogate, over :data:`HELD_TEXT_MAX_CHARS`)
    reads as :data:`~esl_sync.records.UNREADABLE`, which differs from every value we send."""
    from esl_sync.storable import clean_text, product_code  # see said()

    data = answer.get("data")
    totals: list[object] = [answer.get(key) for key in _TOTAL_KEYS]
    if isinstance(data, dict):
        totals = [data.get(key) for key in _TOTAL_KEYS] + totals
        data = next((data[k] for k in _LIST_KEYS if isinstance(data.get(k), list)), None)
    if not isinstance(data, list):
        raise HipoinkUnreadable(f"product/query page {page}: answer has no list of products (data)")
    products: list[dict[str, object]] = []
    skipped = 0
    for held in data:
        pc = held.get("pc") if isinstance(held, dict) else None
        if isinstance(pc, int) and not isinstance(pc, bool):
            pc = str(pc)
        code, problem = product_code(pc) if isinstance(pc, str) else ("", "is missing")
        if problem is not None or not code or not isinstance(held, dict):
            skipped += 1
            continue
        product: dict[str, object] = {}
        for field in COMPARED_FIELDS:
            value = held.get(field)
            if field not in held:
                continue
            text_ok = isinstance(value, str) and len(value) <= HELD_TEXT_MAX_CHARS
            number = isinstance(value, int | float) and not isinstance(value, bool)
            readable = value is None or number or (text_ok and clean_text(value) == value)
            product[field] = value if readable else UNREADABLE
        product["pc"] = code
        products.append(product)
    total = next((t for t in map(_count, totals) if t is not None), None)
    return HeldPage(products, total, skipped)


def _count(value: object) -> int | None:
    """A total as Hipoink may give it: an integer, or its digits as text; else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return value
    return None


def said(error_msg: object, sign: str) -> str:
    """Hipoink's ``error_msg`` as it is kept: the sign masked, made one line of storable
    text (no NUL or lone surrogate, which Postgres refuses: a refused label must be named,
    not crash the job) and cut to :data:`MESSAGE_MAX_CHARS`; ``no message`` if nothing
    is left. The sign is masked before cleaning and again after it (dropping characters
    could join one), then the text is cut, so no part of a masked sign survives."""
    # Imported here: only an error answer needs it, and esl_sync.storable loads orjson,
    # which a sender's cold start does not otherwise pay for.
    from esl_sync.storable import label_text

    text = error_msg if isinstance(error_msg, str) else str(error_msg or "")
    if sign:
        text = text.replace(sign, "***")
    text = label_text(text, len(text))
    if sign:
        text = text.replace(sign, "***")
    return label_text(text, MESSAGE_MAX_CHARS) or "no message"


_REFUSAL_MAX_CHARS = 200


def certificate_refusal(error: BaseException) -> str | None:
    """OpenSSL's reason (``self-signed certificate``, ``certificate has expired``,
    ``Hostname mismatch, …``) when ``error`` comes of a certificate that failed
    verification, else None. httpx raises its own error from httpcore's, raised from the
    ``ssl`` one: the causes are walked (a bounded chain: a cycle cannot hold it)."""
    from esl_sync.storable import label_text  # see said()

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            # Set by the ssl module on the errors it raises; read with a default all the same.
            for reason in (getattr(cause, "verify_message", None), getattr(cause, "reason", None)):
                shown = label_text(str(reason), _REFUSAL_MAX_CHARS) if reason else ""
                if shown:
                    return shown
            return "no reason given"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
