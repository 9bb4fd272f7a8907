"""AWS Signature Version 4 for one POST request, and the credentials that sign it.

Hand-written rather than botocore's ``SigV4Auth``: botocore cost a poller ≈ 130–150 ms of
its cold start (its import, its configuration and endpoint data, three clients) and
≈ 1.5 ms CPU per DynamoDB call (event hooks, endpoint rules, validation, parsing), while
the semantics needed here are small and exact: the requests are JSON POSTs to ``/`` with
no query string. tests/integration/test_aws_json.py signs the same requests with
botocore's ``SigV4Auth`` and compares the Authorization header byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
# What botocore leaves unsigned (proxies and the SDK may change them on the way).
_UNSIGNED = frozenset({"user-agent", "x-amzn-trace-id", "expect", "connection", "te"})


@dataclass(frozen=True, repr=False)
class Credentials:
    """One set of keys (the secret and the token never show in a repr or a log line)."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key=***, token=***)"


def timestamp(now: datetime) -> str:
    """``X-Amz-Date``'s form of a UTC time."""
    return now.strftime("%Y%m%dT%H%M%SZ")


def authorization(
    credentials: Credentials,
    *,
    region: str,
    service: str,
    host: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    amz_date: str,
) -> str:
    """The Authorization header of a POST to ``host`` + ``path`` (no query string) with
    ``headers`` (which must already hold X-Amz-Date = ``amz_date`` and, with a session
    token, X-Amz-Security-Token) and ``body``."""
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed = {name: value for name, value in signed.items() if name not in _UNSIGNED}
    signed["host"] = host
    names = sorted(signed)
    canonical = "\n".join(
        (
            "POST",
            quote(path or "/", safe="/~"),
            "",
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        )
    )
    day = amz_date[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope},"
        f" SignedHeaders={';'.join(names)}, Signature={signature}"
    )


_keys_lock = threading.Lock()
_keys: dict[tuple[str, str, str, str], bytes] = {}


def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    """The day's key for a region and service (kept: it changes once a day, and four
    HMACs per request are a third of the signing)."""
    cache_key = (hashlib.sha256(secret.encode()).hexdigest(), day, region, service)
    with _keys_lock:
        found = _keys.get(cache_key)
    if found is not None:
        return found
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    with _keys_lock:
        if len(_keys) > 64:  # a process signs for a few services on one day or two
            _keys.clear()
        _keys[cache_key] = key
    return key


# -- credentials ---------------------------------------------------------------------------

_chain_lock = threading.Lock()
_chain: Any = None  # botocore's credentials (refreshable or not), built on first need


def credentials() -> Credentials:
    """The environment's keys (what Lambda gives every function); without them (an
    operator's CLI with a profile or SSO) botocore's credential chain, imported only then,
    whose refreshable credentials renew themselves as they near their expiry."""
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        token = env.get("AWS_SESSION_TOKEN") or None
        for name, value in (
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_SESSION_TOKEN", token),
        ):
            _check_key(name, value)
        return Credentials(key, secret, token)
    return _from_botocore()


def _check_key(name: str, value: str | None) -> None:
    """Keys are printable ASCII without spaces. Anything else (a pasted line break, say)
    would make ``http.client`` refuse the header with its value in the message: refused
    here, by the variable's name alone."""
    if value is not None and not (value.isascii() and value.isprintable() and " " not in value):
        from esl_sync.settings import ConfigurationError

        raise ConfigurationError(f"invalid setting: {name}: not a key (a character it cannot hold)")


def _from_botocore() -> Credentials:
    global _chain
    from esl_sync.settings import ConfigurationError

    with _chain_lock:
        if _chain is None:
            from esl_sync.store import aws  # botocore's session: the CLI's path only

            _chain = aws.session().get_credentials()
        chain = _chain
    if chain is None:
        raise ConfigurationError(
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY"
        )
    frozen = chain.get_frozen_credentials()  # refreshes expiring ones first
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)


def forget_credentials() -> None:
    """Drop botocore's chain (tests that change the profile in between)."""
    global _chain
    with _chain_lock:
        _chain = None
