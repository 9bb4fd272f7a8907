"""HTTP client for the Hipoink product API, with the three error classes of a sender.

Hipoink answers HTTP 200 even for errors; ``error_code`` decides, and its ``error_msg``
says which class the error is (see :func:`classify`). The ``sign`` is a shared secret: it
is sent in the body and never appears in a log line, error or repr. It is read through a
callable on every call, so a rotated secret is picked up when its cache expires.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from esl_sync.hipoink.records import HipoinkRecord

# A message that starts by naming a product is about that record ("product 123: missing
# field pp", "product #4: …"); one that names the sign, the app key (client id), the store
# or the f1 envelope is about our configuration ("sign error", "app key x not found",
# "default missing store_code field", "store S not found", "f1 must be a JSON array").
_NAMES_PRODUCT = re.compile(r"^\s*product\b", re.IGNORECASE)
_TOO_MANY = re.compile(r"too many|too large", re.IGNORECASE)
_CONFIGURATION = re.compile(
    r"\bsign\b|app ?key|client.?id|\bstore|\bf1\b|invalid json", re.IGNORECASE
)
_NOT_FOUND = re.compile(r"not (found|exist)", re.IGNORECASE)


class HipoinkError(Exception):
    """Base of the sender's errors; the message is safe to log and to store."""


class HipoinkRetryable(HipoinkError):
    """Timeout, 5xx, 429, 408 or a body that is not JSON: retry later."""


class HipoinkRecordError(HipoinkError):
    """Hipoink refused the batch because of what is in it: split it, do not retry it."""


class HipoinkNotFound(HipoinkRecordError):
    """A product code Hipoink does not know; for a delete of that one code, that is done."""


class HipoinkConfigError(HipoinkError):
    """Wrong sign, client id, store code or ``f1`` encoding: stop sending for the store."""


def classify(message: str) -> type[HipoinkError]:
    """The class of an ``error_code != 0`` answer, from its message.

    A refusal that names neither a product nor our configuration is treated as a refusal
    of the batch's content (split, not retried): retrying ``error_code`` 1 as if it were
    transient is a mistake public integrations made (docs/hipoink-api.md). "Too many
    products" also splits the batch, which adapts to a server whose limit is below
    ``HIPOINK_BATCH_SIZE``.
    """
    if _NAMES_PRODUCT.search(message):
        return HipoinkNotFound if _NOT_FOUND.search(message) else HipoinkRecordError
    if _TOO_MANY.search(message):
        return HipoinkRecordError
    if _CONFIGURATION.search(message):
        return HipoinkConfigError
    if _NOT_FOUND.search(message):
        return HipoinkNotFound
    return HipoinkRecordError


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
        self._http = httpx.Client(timeout=timeout_seconds)

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

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        sign = self._sign()
        try:
            response = self._http.post(self._url + path, json={**body, "sign": sign})
        except httpx.TimeoutException:
            raise HipoinkRetryable(f"{path}: timed out") from None
        except httpx.TransportError as error:
            raise HipoinkRetryable(f"{path}: {type(error).__name__}") from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise HipoinkRetryable(f"{path}: HTTP {status}")
        if status in (401, 403, 404):
            raise HipoinkConfigError(f"{path}: HTTP {status}")
        if status == 413:
            raise HipoinkRecordError(f"{path}: HTTP 413 (batch too large)")
        try:
            answer = response.json()
        except ValueError:
            raise HipoinkRetryable(f"{path}: answer is not JSON (HTTP {status})") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("error_code"), int):
            raise HipoinkRetryable(f"{path}: answer has no integer error_code")
        if answer["error_code"] != 0:
            message = str(answer.get("error_msg") or "no message")
            if sign:
                message = message.replace(sign, "***")
            raise classify(message)(f"{path}: {message}")
        return answer
