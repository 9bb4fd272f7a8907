"""Clover's two OAuth calls: ``POST /oauth/v2/refresh`` (the sync) and
``POST /oauth/v2/token`` (the install flow's code exchange).

Both live on the merchant's REST API host (``apisandbox.dev.clover.com``,
``api.clover.com``, ``api.eu.clover.com``, …). The refresh takes only ``client_id`` and
``refresh_token``; the exchange takes ``client_id``, ``client_secret`` and the ``code``.
Both answer a token pair, :class:`esl_sync.credentials.CloverTokens`, and neither is ever
retried: a refresh token and a code each work once, so a retry after an answer that got
lost would only be refused.

No token ever reaches a log line, an error or a repr: errors name the status and never
quote Clover's body, and a body that is not a token pair is refused by the names of the
fields at fault.

An expiration in the answer that is no count (``1e400``, ``1e19``, negative, a fraction,
text) does not refuse the pair: the call has spent the refresh token (or the code) already,
so a refused pair would leave the merchant to be installed again, for a number the keeper
only uses to refresh early. It is taken as unknown (None): that access token is refreshed
at its first 401, as one whose expiry is read as too late is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import httpx

from esl_sync import http_deadline, json_fields, tls
from esl_sync.clover.errors import (
    CloverBadResponse,
    CloverCodeRejected,
    CloverConnectionError,
    CloverError,
    CloverRefreshRejected,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.pacing import RequestPacer, default_pacer, token_key
from esl_sync.credentials import CloverTokens
from esl_sync.http_connections import read_at_most
from esl_sync.observability import logger


class _Answer(NamedTuple):
    status: int
    content: bytes


ANSWER_MAX_BYTES = 1 << 20
"""Of an answer's body, what is read (unpacked): a token pair is a few hundred bytes."""
EXPIRATIONS = ("access_token_expiration", "refresh_token_expiration")
REFRESH_PATH = "/oauth/v2/refresh"
TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 - a path, not a password


class CloverOAuthClient:
    """Refreshes v2 token pairs and exchanges authorization codes for them: one request
    each, never retried here. ``client_id`` is the app's id, or what reads it for each
    request: a warm function kept the id it was built with, while the install flow reads
    the id (and the secret) anew, so a changed app was half used until the process ended."""

    def __init__(
        self,
        client_id: str | Callable[[], str],
        *,
        timeout_seconds: float = 10.0,
        pacer: RequestPacer | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client_id = client_id if callable(client_id) else lambda: client_id
        self._pacer = pacer if pacer is not None else default_pacer()
        self._timeout_seconds = timeout_seconds
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            headers={"Accept": "application/json", "User-Agent": "esl-sync"},
            follow_redirects=False,
            # The process's one TLS context (esl_sync.tls says why); each call ends within
            # the timeout as a whole (esl_sync.http_deadline), well within the refresh lock.
            transport=transport or http_deadline.transport(tls.for_https()),
        )

    def __repr__(self) -> str:
        return "CloverOAuthClient()"

    def refresh(self, base_url: str, merchant_id: str, refresh_token: str) -> CloverTokens:
        """A new pair for ``refresh_token`` (which dies with this call, whatever happens)."""
        where = f"POST {REFRESH_PATH}"
        body = {"client_id": self._client_id(), "refresh_token": refresh_token}
        with self._pacer.slot(token_key(refresh_token)):
            response = self._post(
                base_url.rstrip("/") + REFRESH_PATH,
                body,
                merchant_id,
                where,
            )
        if response.status in (401, 403):
            raise CloverRefreshRejected(
                f"{where}: HTTP {response.status} (refresh token used, revoked or expired)",
                merchant_id=merchant_id,
                status=response.status,
            )
        return self._tokens(response, merchant_id, where)

    def exchange_code(
        self, base_url: str, merchant_id: str, code: str, client_secret: str
    ) -> CloverTokens:
        """The pair an authorization ``code`` stands for (the code dies with this call).
        :class:`CloverCodeRejected` when Clover refuses it (400, 401, 403)."""
        where = f"POST {TOKEN_PATH}"
        body = {"client_id": self._client_id(), "client_secret": client_secret, "code": code}
        with self._pacer.slot(token_key(code)):
            response = self._post(
                base_url.rstrip("/") + TOKEN_PATH,
                body,
                merchant_id,
                where,
            )
        if response.status in (400, 401, 403):
            raise CloverCodeRejected(
                f"{where}: HTTP {response.status} (code expired or used, or the app's"
                " client id or secret is wrong)",
                merchant_id=merchant_id,
                status=response.status,
            )
        return self._tokens(response, merchant_id, where)

    def _post(self, url: str, body: dict[str, str], merchant_id: str, where: str) -> _Answer:
        """One POST, ended within the timeout as a whole (an answer written a byte at a time
        held a refresh past its lock, and another poller refreshed the same single-use
        token): its status and at most :data:`ANSWER_MAX_BYTES` of its body (a token
        pair is a few hundred bytes; a larger answer is not read further), transport
        failures as typed errors (never chained: httpx's exceptions hold the request, and
        with it the body's secrets)."""
        error: CloverError
        try:
            with (
                http_deadline.deadline(self._timeout_seconds),
                self._http.stream("POST", url, json=body) as response,
            ):
                content = read_at_most(response.iter_bytes(), ANSWER_MAX_BYTES)
                if content is None:
                    error = CloverBadResponse(
                        f"{where}: answer larger than {ANSWER_MAX_BYTES} bytes"
                        f" (HTTP {response.status_code})",
                        merchant_id=merchant_id,
                    )
                else:
                    return _Answer(response.status_code, content)
        except httpx.TimeoutException:
            error = CloverTimeout(f"{where}: no answer", merchant_id=merchant_id)
        except httpx.TransportError as exc:
            error = CloverConnectionError(f"{where}: {type(exc).__name__}", merchant_id=merchant_id)
        raise error

    def _tokens(self, response: _Answer, merchant_id: str, where: str) -> CloverTokens:
        status = response.status
        if status >= 500:
            raise CloverServerError(
                f"{where}: HTTP {status}", merchant_id=merchant_id, status=status
            )
        if status != 200:
            raise CloverRequestRejected(
                f"{where}: HTTP {status}", merchant_id=merchant_id, status=status
            )
        try:
            data = json_fields.loads(response.content, where)
            tokens = CloverTokens.from_object(_known_expirations(data, merchant_id, where), where)
        except ValueError as error:
            raise CloverBadResponse(str(error), merchant_id=merchant_id) from None
        if tokens.refresh_token is None:
            raise CloverBadResponse(f"{where}: no refresh_token", merchant_id=merchant_id)
        return tokens

    def close(self) -> None:
        self._http.close()


def _known_expirations(data: object, merchant_id: str, where: str) -> object:
    """``data`` with each expiration that is no count (what :class:`CloverTokens` would
    refuse) made null, and a warning naming those fields (never a value); the module doc
    says why the pair is not refused for them."""
    if not isinstance(data, dict):
        return data
    unreadable = []
    for name in EXPIRATIONS:
        fields = json_fields.Fields({name: data.get(name)}, where)
        fields.count(name)
        try:
            fields.check()
        except ValueError:
            unreadable.append(name)
    if not unreadable:
        return data
    logger.warning(
        "Clover's token pair has an expiration that is no Unix time: taken as unknown (the"
        " access token is refreshed at its first 401)",
        merchant_id=merchant_id,
        request=where,
        fields=unreadable,
    )
    return {**data, **dict.fromkeys(unreadable)}
