"""Clover's token material: what a merchant's authorization gives, what is stored, what
the app's credentials secret holds.

A merchant holds either a plain token (sandbox test tokens, legacy non-expiring tokens) or
a v2 pair: a short-lived access token and a single-use refresh token, each with its own
expiration (Unix seconds, whatever Clover says: lifetimes are never assumed).

No token ever reaches a log line, an error or a repr: the classes hold them as
:class:`~esl_sync.secret.Secret` and a refusal names the fields at fault only. Plain frozen
dataclasses, not pydantic models: the poller reads a merchant's tokens on every poll and
must start without pydantic (issue 15: its import and first model cost ≈ 110 ms of a cold
start). :mod:`esl_sync.json_fields` reads their JSON exactly as the pydantic models did
(``tests/unit/test_credentials.py`` checks it against them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Self

from esl_sync import json_fields
from esl_sync.json_fields import Fields
from esl_sync.secret import Secret

TOKEN = re.compile(r"[!-~]+")
"""Printable ASCII without spaces: what an HTTP ``Authorization`` header can carry.
Clover documents no length (and asks integrators not to assume one)."""
KMS_PLAINTEXT_BYTES = 4096
"""KMS encrypts at most this much: the stored tokens (both, as JSON) must fit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloverTokens:
    """A merchant's token material: a plain token, or a v2 pair with expirations."""

    access_token: Secret
    access_token_expiration: int | None = None
    refresh_token: Secret | None = None
    refresh_token_expiration: int | None = None

    def __post_init__(self) -> None:
        json_fields.check_built(
            type(self).__name__,
            secrets={"access_token": self.access_token},
            optional_secrets={"refresh_token": self.refresh_token},
            counts={
                "access_token_expiration": self.access_token_expiration,
                "refresh_token_expiration": self.refresh_token_expiration,
            },
        )

    @classmethod
    def plain(cls, token: str) -> Self:
        """A token without refresh (sandbox test token or legacy token)."""
        return cls(access_token=Secret(token))

    @classmethod
    def stored(cls, plaintext: bytes) -> Self:
        """A decrypted stored blob: JSON since pairs exist, the bare token before (still read)."""
        if plaintext.startswith(b"{"):
            return cls.parse(plaintext, "stored Clover tokens")
        return cls.plain(plaintext.decode())

    @classmethod
    def parse(cls, text: str | bytes, what: str) -> Self:
        """Tokens from JSON; a ValueError that names ``what`` and the fields at fault only
        (never a value: the input holds tokens)."""
        return cls.from_object(json_fields.loads(text, what), what)

    @classmethod
    def from_object(cls, data: object, what: str = "Clover tokens") -> Self:
        """Tokens from a decoded JSON object, read as :meth:`parse` reads one."""
        fields = Fields(data, what)
        access_token = fields.secret("access_token", required=True)
        access_token_expiration = fields.count("access_token_expiration")
        refresh_token = fields.secret("refresh_token")
        refresh_token_expiration = fields.count("refresh_token_expiration")
        fields.check()
        assert access_token is not None  # required: Fields.check refused its absence
        return cls(
            access_token=access_token,
            access_token_expiration=access_token_expiration,
            refresh_token=refresh_token,
            refresh_token_expiration=refresh_token_expiration,
        )

    def expires_within(self, seconds: int, now: float) -> bool:
        """Whether the access token expires less than ``seconds`` from ``now`` (Unix time)."""
        expiration = self.access_token_expiration
        return expiration is not None and expiration - seconds <= now

    def unusable_because(self) -> str | None:
        """Why these tokens cannot be sent or stored (a token that is not printable ASCII
        without spaces, which no HTTP header carries; more than KMS encrypts), or None.
        Whoever hands over tokens (an operator, Clover's code exchange or refresh) is held
        to this before they are stored: stored tokens never fail a poll for their text.
        Names the field at fault, never a value."""
        secrets = {"access_token": self.access_token, "refresh_token": self.refresh_token}
        for name, secret in secrets.items():
            if secret is not None and not TOKEN.fullmatch(secret.get_secret_value()):
                return f"{name}: expected printable ASCII without spaces"
        if len(self.secret_json().encode()) > KMS_PLAINTEXT_BYTES:
            return (
                f"too long to encrypt (KMS takes {KMS_PLAINTEXT_BYTES} bytes for the tokens"
                " together)"
            )
        return None

    def secret_json(self) -> str:
        """The JSON stored encrypted in the state table: the only place tokens are written.
        Byte for byte what it has always been (tokens stored long ago are read back)."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class AppCredentials:
    """The Clover app's credentials secret, ``{"client_id", "client_secret"}``; the refresh
    needs only the id, the install flow's code exchange both."""

    client_id: str
    client_secret: Secret | None = None

    def __post_init__(self) -> None:
        json_fields.check_built(
            type(self).__name__,
            texts={"client_id": self.client_id},
            optional_secrets={"client_secret": self.client_secret},
        )

    @classmethod
    def parse(cls, text: str | bytes, what: str) -> Self:
        """The secret's JSON; a ValueError naming ``what`` and the fields at fault only."""
        fields = Fields(json_fields.loads(text, what), what)
        client_id = fields.text("client_id", required=True)
        client_secret = fields.secret("client_secret")
        fields.check()
        assert client_id is not None  # required: Fields.check refused its absence
        return cls(client_id=client_id, client_secret=client_secret)

    def with_client_id(self, client_id: str) -> Self:
        """The same credentials under another id (a ``CLOVER_CLIENT_ID`` set apart wins)."""
        return replace(self, client_id=client_id)


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
