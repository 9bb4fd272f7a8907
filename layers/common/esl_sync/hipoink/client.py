"""HTTP client for the Hipoink product API, with the three error classes of a sender.

Hipoink answers HTTP 200 even for errors; ``error_code`` decides. The ``sign`` is a shared
secret: it is sent in the body and never appears in a log line, error or repr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from esl_sync.hipoink.records import HipoinkRecord

_CONFIG_HINTS = ("sign", "app key", "client", "store")


class HipoinkError(Exception):
    """Base of the sender's errors; the message is safe to log and to store."""


class HipoinkRetryable(HipoinkError):
    """Timeout, 5xx, 429, 408 or a body that is not JSON: retry later."""


class HipoinkRecordError(HipoinkError):
    """Hipoink refused the batch because of a record in it: isolate it, do not retry."""


class HipoinkConfigError(HipoinkError):
    """Wrong sign, client id or store code: stop sending for the store and alert."""


class HipoinkClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        sign: str,
        *,
        timeout_seconds: float = 15.0,
        f1_encoding: Literal["array", "string"] = "array",
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/api/{client_id}/product/"
        self._sign = sign
        self._f1_encoding = f1_encoding
        self._http = httpx.Client(timeout=timeout_seconds)
        self.calls = 0

    def __repr__(self) -> str:
        return f"HipoinkClient(url={self._url!r})"

    def upsert(self, store_code: str, records: Sequence[HipoinkRecord]) -> None:
        f1: object = list(records)
        if self._f1_encoding == "string":
            f1 = json.dumps(f1)
        self._post("create_multiple", {"store_code": store_code, "f1": f1, "is_base64": "0"})

    def delete(self, store_code: str, codes: Sequence[str]) -> int:
        answer = self._post("del_multiple", {"store_code": store_code, "f1": list(codes)})
        count = answer.get("count", 0)
        return count if isinstance(count, int) else 0

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        try:
            response = self._http.post(self._url + path, json={**body, "sign": self._sign})
        except httpx.TimeoutException:
            raise HipoinkRetryable(f"{path}: timed out") from None
        except httpx.TransportError as error:
            raise HipoinkRetryable(f"{path}: {type(error).__name__}") from None
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise HipoinkRetryable(f"{path}: HTTP {response.status_code}")
        if response.status_code in (401, 403, 404):
            raise HipoinkConfigError(f"{path}: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise HipoinkRetryable(f"{path}: answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("error_code"), int):
            raise HipoinkRetryable(f"{path}: answer has no integer error_code")
        if answer["error_code"] != 0:
            message = str(answer.get("error_msg") or "no message").replace(self._sign, "***")
            if any(hint in message.lower() for hint in _CONFIG_HINTS) and "product" not in (
                message.lower()
            ):
                raise HipoinkConfigError(f"{path}: {message}")
            raise HipoinkRecordError(f"{path}: {message}")
        return answer
