"""Clover's OAuth tokens and the one OAuth call the sync makes: ``POST /oauth/v2/refresh``.

A merchant holds either a plain token (sandbox test tokens, legacy non-expiring tokens) or
a v2 pair: a short-lived access token and a single-use refresh token, each with its own
expiration (Unix seconds, whatever Clover says: lifetimes are never assumed). The refresh
endpoint lives on the merchant's REST API host (``apisandbox.dev.clover.com``,
``api.clover.com``, ``api.eu.clover.com``, …) and takes only ``client_id`` and
``refresh_token``; the client secret belongs to the code exchange, which this app does not do.

No token ever reaches a log line, an error or a repr: the models hold them as ``SecretStr``,
errors name the status and never quote Clover's body, and validation errors are reduced to
the names of the fields at fault.
"""

from __future__ import annotations

import json
from typing import Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from esl_sync.clover.errors import (
    CloverBadResponse,
    CloverConnectionError,
    CloverRefreshRejected,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.pacing import RequestPacer, default_pacer, token_key

REFRESH_PATH = "/oauth/v2/refresh"


class CloverTokens(BaseModel):
    """A merchant's token material: a plain token, or a v2 pair with expirations."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    access_token: SecretStr = Field(min_length=1)
    access_token_expiration: int | None = Field(None, ge=0)
    refresh_token: SecretStr | None = Field(None, min_length=1)
    refresh_token_expiration: int | None = Field(None, ge=0)

    @classmethod
    def plain(cls, token: str) -> Self:
        """A token without refresh (sandbox test token or legacy token)."""
        return cls(access_token=SecretStr(token))

    @classmethod
    def parse(cls, text: str | bytes, what: str) -> Self:
        """Tokens from JSON; a ValueError that names ``what`` and the fields at fault only
        (pydantic's own message would quote the input, tokens included)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise ValueError(f"{what}: {_fields_at_fault(error)}") from None

    def expires_within(self, seconds: int, now: float) -> bool:
        """Whether the access token expires less than ``seconds`` from ``now`` (Unix time)."""
        expiration = self.access_token_expiration
        return expiration is not None and expiration - seconds <= now

    def secret_json(self) -> str:
        """The JSON stored encrypted in the state table: the only place tokens are written."""
        return json.dumps(
            {
                "access_token": self.access_token.get_secret_value(),
                "access_token_expiration": self.access_token_expiration,
                "refresh_token": (
                    self.refresh_token.get_secret_value() if self.refresh_token else None
                ),
                "refresh_token_expiration": self.refresh_token_expiration,
            }
        )


class AppCredentials(BaseModel):
    """The Clover app's credentials secret, ``{"client_id", "client_secret"}``; the refresh
    needs only the id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    client_id: str = Field(min_length=1)


def _fields_at_fault(error: ValidationError) -> str:
    problems = error.errors(include_input=False, include_url=False)
    return "; ".join(
        f"{'.'.join(str(p) for p in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in problems
    )


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
