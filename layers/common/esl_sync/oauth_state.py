"""The ``state`` of the app's install flow: signed, expiring, bound to one merchant.

The install route puts it in the authorize URL; Clover hands it back on the callback
unchanged. It is ``s1.<merchant id>.<issued ms>.<nonce>.<mac>``, the MAC an HMAC-SHA256
(standard library) over everything before it, under the key of the secret
``CLOVER_OAUTH_STATE_KEY``. Reading it proves that this app made it for that merchant, and
when; that it is used once is the callback's business (a conditional write of its issue
time, :mod:`esl_sync.onboarding`). Nothing in it is secret: it travels in URLs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from esl_sync.inputs import MERCHANT_ID
from esl_sync.settings import CLOCK_SKEW_MS as CLOCK_SKEW_MS

VERSION = "s1"
MIN_KEY_BYTES = 32
_CONTEXT = b"esl-sync clover install state\x00"
_SHAPE = re.compile(
    rf"{VERSION}\.(?P<merchant>{MERCHANT_ID.pattern})\.(?P<issued>[0-9]{{1,15}})"
    r"\.(?P<nonce>[A-Za-z0-9_-]{22})\.(?P<mac>[A-Za-z0-9_-]{43})"
)

Refusal = Literal["malformed", "forged", "expired"]


@dataclass(frozen=True)
class InstallState:
    """Who the sign-in was started for, and when (our clock, epoch ms)."""

    merchant_id: str
    issued_ms: int
    nonce: str


class StateRefused(ValueError):
    """The callback's ``state`` is not one to act on; ``reason`` names why."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason)
        self.reason: Refusal = reason


def issue(key: bytes, merchant_id: str, now_ms: int) -> tuple[str, InstallState]:
    """A fresh state for ``merchant_id`` (a checked merchant id) and its text."""
    nonce = secrets.token_urlsafe(16)  # 22 characters of base64url
    state = InstallState(merchant_id, now_ms, nonce)
    payload = f"{VERSION}.{merchant_id}.{now_ms}.{nonce}"
    return f"{payload}.{_mac(key, payload)}", state


def read(key: bytes, text: str, *, now_ms: int, ttl_ms: int) -> InstallState:
    """The state ``text`` holds, or :class:`StateRefused`: ``malformed`` (not the shape
    this app writes), ``forged`` (the MAC does not match, or it claims a future issue
    time), ``expired`` (issued more than ``ttl_ms`` ago)."""
    match = _SHAPE.fullmatch(text)  # ASCII only, at most 150 characters: bounded work
    if match is None:
        raise StateRefused("malformed")
    payload = text[: match.start("mac") - 1]
    if not hmac.compare_digest(_mac(key, payload), match["mac"]):
        raise StateRefused("forged")
    issued = int(match["issued"])
    if issued > now_ms + CLOCK_SKEW_MS:
        raise StateRefused("forged")
    if now_ms - issued > ttl_ms:
        raise StateRefused("expired")
    return InstallState(match["merchant"], issued, match["nonce"])


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, _CONTEXT + payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
