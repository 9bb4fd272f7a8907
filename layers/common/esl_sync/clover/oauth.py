"""The one OAuth call the sync makes: ``POST /oauth/v2/refresh``.

The refresh endpoint lives on the merchant's REST API host (``apisandbox.dev.clover.com``,
``api.clover.com``, ``api.eu.clover.com``, …) and takes only ``client_id`` and
``refresh_token``; the client secret belongs to the code exchange, which this app does not do.
The tokens it returns are :class:`esl_sync.credentials.CloverTokens`.

No token ever reaches a log line, an error or a repr: errors name the status and never
quote Clover's body, and a body that is not a token pair is refused by the names of the
fields at fault.
"""

from __future__ import annotations

import httpx

from esl_sync.clover.errors import (
    CloverBadResponse,
    CloverConnectionError,
    CloverRefreshRejected,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.pacing import RequestPacer, default_pacer, token_key
from esl_sync.credentials import CloverTokens

REFRESH_PATH = "/oauth/v2/refresh"


class CloverOAuthClient:
    """Refreshes v2 token pairs. One request per refresh, never retried here: a refresh
    token works once, so a retry after an answer that got lost would only be refused."""

    def __init__(
        self,
        client_id: str,
        *,
        timeout_seconds: float = 10.0,
        pacer: RequestPacer | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client_id = client_id
        self._pacer = pacer if pacer is not None else default_pacer()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            headers={"Accept": "application/json", "User-Agent": "esl-sync"},
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return "CloverOAuthClient()"

    def refresh(self, base_url: str, merchant_id: str, refresh_token: str) -> CloverTokens:
        """A new pair for ``refresh_token`` (which dies with this call, whatever happens)."""
        where = f"POST {REFRESH_PATH}"
        try:
            with self._pacer.slot(token_key(refresh_token)):
                response = self._http.post(
                    base_url.rstrip("/") + REFRESH_PATH,
                    json={"client_id": self._client_id, "refresh_token": refresh_token},
                )
        except httpx.TimeoutException:
            raise CloverTimeout(f"{where}: no answer", merchant_id=merchant_id) from None
        except httpx.TransportError as exc:
            raise CloverConnectionError(
                f"{where}: {type(exc).__name__}", merchant_id=merchant_id
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise CloverRefreshRejected(
                f"{where}: HTTP {status} (refresh token used, revoked or expired)",
                merchant_id=merchant_id,
                status=status,
            )
        if status >= 500:
            raise CloverServerError(
                f"{where}: HTTP {status}", merchant_id=merchant_id, status=status
            )
        if status != 200:
            raise CloverRequestRejected(
                f"{where}: HTTP {status}", merchant_id=merchant_id, status=status
            )
        return self._tokens(response, merchant_id, where)

    def _tokens(self, response: httpx.Response, merchant_id: str, where: str) -> CloverTokens:
        try:
            tokens = CloverTokens.parse(response.content, where)
        except ValueError as error:
            raise CloverBadResponse(str(error), merchant_id=merchant_id) from None
        if tokens.refresh_token is None:
            raise CloverBadResponse(f"{where}: no refresh_token", merchant_id=merchant_id)
        return tokens

    def close(self) -> None:
        self._http.close()
