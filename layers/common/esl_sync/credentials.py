"""Clover's token material: what a merchant's authorization gives, what is stored, what
the app's credentials secret holds.

A merchant holds either a plain token (sandbox test tokens, legacy non-expiring tokens) or
a v2 pair: a short-lived access token and a single-use refresh token, each with its own
expiration (Unix seconds, whatever Clover says: lifetimes are never assumed).

No token ever reaches a log line, an error or a repr: the models hold them as ``SecretStr``
and validation errors are reduced to the names of the fields at fault. This module needs
nothing but pydantic, so the state store, the operator's input checks and the webhook can
use it without loading an HTTP client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError


class CloverTokens(BaseModel):
    """A merchant's token material: a plain token, or a v2 pair with expirations."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

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
    needs only the id, the install flow's code exchange both."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = Field(None, min_length=1)


def _fields_at_fault(error: ValidationError) -> str:
    problems = error.errors(include_input=False, include_url=False)
    return "; ".join(
        f"{'.'.join(str(p) for p in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in problems
    )


@dataclass(frozen=True)
class StoredTokens:
    """A merchant's tokens as stored, with the generation that guards every change of them.

    Every write of new tokens (an operator's, a refresh's) makes a new generation, so a
    poll that got a 401 on an old token can tell that newer tokens arrived meanwhile.
    """

    tokens: CloverTokens
    generation: int
    needs_reauth: bool = False
    # Clover reported the app uninstalled after these tokens were authorized (a webhook
    # hint): they are treated as refused.
    uninstalled: bool = False


@dataclass(frozen=True)
class SealedTokens:
    """A merchant's tokens as the state table holds them: still encrypted, with their
    generation. The poll reads them with its lease (one write that returns the item) and
    opens them where it uses them, so a KMS failure fails the poll under its lease."""

    ciphertext: bytes = field(repr=False)
    generation: int
    needs_reauth: bool = False
    uninstalled: bool = False  # as in StoredTokens
