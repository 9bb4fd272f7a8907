"""HTTP client for the Hipoink product API.

Hipoink answers HTTP 200 even for errors; ``error_code`` decides, and its ``error_msg``
says which class of :mod:`esl_sync.hipoink.errors` the error is. The ``sign`` is a shared secret: it
is sent in the body and never appears in a log line, error or repr. It is read through a
callable on every call, so a rotated secret is picked up when its cache expires.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from esl_sync import tls
from esl_sync.hipoink.errors import (
    HipoinkConfigError,
    HipoinkNotFound,
    HipoinkRecordError,
    HipoinkRetryable,
    classify,
)
from esl_sync.hipoink.records import HipoinkRecord


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
        # The process's one TLS context (esl_sync.tls says why).
        self._http = httpx.Client(timeout=timeout_seconds, verify=tls.for_https())

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
