"""The shapes of values that come from outside, checked before anything is written.

An operator types merchant ids, store codes, Clover URLs and tokens into ``esl-sync``;
Clover's webhook sends merchant ids. Each checker returns the value to use (normalized)
or raises :class:`InvalidInput` with one line that says what is wrong, never quoting a
token and never echoing control characters. The rules are deliberately narrow: a value
that passes can go into Postgres, DynamoDB, a KMS request, an HTTP header and a terminal
without surprises.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from esl_sync.clover.regions import CLOVER_API_HOSTS, LOOPBACK_HOSTS
from esl_sync.credentials import TOKEN, CloverTokens

MERCHANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Clover's merchant ids are 13 upper-case letters and digits; this is the ``merchants``
table's own CHECK, a little wider so that test and sandbox ids fit."""
STORE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
"""Hipoink store codes as this service accepts them: 1–32 ASCII letters, digits, ``-``,
``_`` and ``.``, starting with a letter or digit. Hipoink itself documents no rule; codes
seen in the field are short identifiers (``001``, ``STORE-12``), and anything wider would
reach a JSON body, a log line and an operator's terminal."""
STACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}")
"""CloudFormation's rule for stack names."""
MAX_STDIN_BYTES = 64 * 1024
"""Tokens are read from standard input up to this much; more is refused unread."""
LATEST_EXPIRATION = 100_000_000_000
"""Token expirations are Unix seconds; later than this (year 5138) is not one."""


class InvalidInput(ValueError):
    """A value outside its documented shape; the message is one line, safe to print."""


def merchant_id(text: str) -> str:
    if not MERCHANT_ID.fullmatch(text):
        raise InvalidInput(
            f"merchant id {_shown(text)}: expected 1–64 ASCII letters, digits, '-' or '_'"
        )
    return text


def store_code(text: str) -> str:
    if not STORE_CODE.fullmatch(text):
        raise InvalidInput(
            f"store code {_shown(text)}: expected 1–32 ASCII letters, digits, '-', '_' or '.',"
            " starting with a letter or digit"
        )
    return text


def stack_name(text: str) -> str:
    if not STACK_NAME.fullmatch(text):
        raise InvalidInput(f"stack name {_shown(text)}: not a CloudFormation stack name")
    return text


def clover_base_url(text: str, *, allow_loopback: bool = False) -> str:
    """``https://`` and one of Clover's API hosts (no user info, port, path or query), or,
    when ``allow_loopback`` (the local stack), ``http(s)://`` a loopback host with a port.
    Returns the URL normalized (``https://api.eu.clover.com``)."""
    where = f"Clover URL {_shown(text)}"
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise InvalidInput(f"{where}: not a plain URL")
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(f"{where}: not a valid port") from None
    host = parts.hostname or ""
    hosts = ", ".join(sorted(CLOVER_API_HOSTS))
    local = " (or a loopback host with a port, for the local stack)" if allow_loopback else ""
    if not host:
        raise InvalidInput(f"{where}: expected https:// and one of {hosts}{local}")
    if "@" in parts.netloc:
        raise InvalidInput(f"{where}: user info is not allowed")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"{where}: only scheme and host are allowed (no path or query)")
    if host in CLOVER_API_HOSTS:
        if parts.scheme != "https" or port not in (None, 443):
            raise InvalidInput(f"{where}: Clover is reached over https on port 443 only")
        return f"https://{host}"
    if allow_loopback and host in LOOPBACK_HOSTS and parts.scheme in ("http", "https") and port:
        shown_host = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{shown_host}:{port}"
    raise InvalidInput(f"{where}: expected https:// and one of {hosts}{local}")


def plain_token(raw: bytes) -> str:
    """One line of standard input holding a plain Clover token."""
    text = _text(raw, "token on standard input")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InvalidInput("no token on standard input")
    if len(lines) > 1:
        raise InvalidInput("token on standard input: expected one line")
    token = lines[0]
    if token.startswith("{"):
        raise InvalidInput("token on standard input looks like JSON: use --token-pair-stdin")
    if not TOKEN.fullmatch(token):
        raise InvalidInput("token on standard input: expected printable ASCII without spaces")
    usable_pair(CloverTokens.plain(token), "token on standard input")  # left: KMS's limit
    return token


def token_pair(raw: bytes) -> CloverTokens:
    """The JSON Clover's ``/oauth/v2/token`` returns: both tokens and their expirations."""
    what = "token pair on standard input"
    try:  # the message names the fields at fault, never their values
        pair = CloverTokens.parse(_text(raw, what), what)
    except InvalidInput:
        raise
    except ValueError as error:
        raise InvalidInput(str(error)) from None
    if pair.refresh_token is None:
        raise InvalidInput(f"{what}: no refresh_token (plain token: use --token-stdin)")
    for name in ("access_token_expiration", "refresh_token_expiration"):
        value = getattr(pair, name)
        if value is not None and value > LATEST_EXPIRATION:
            raise InvalidInput(f"{what}: {name}: not a Unix time in seconds")
    return usable_pair(pair, what)


def usable_pair(pair: CloverTokens, what: str) -> CloverTokens:
    """``pair`` if its tokens can be sent and stored
    (:meth:`~esl_sync.credentials.CloverTokens.unusable_because`), else the reason as
    :class:`InvalidInput` naming ``what``.

    Expirations are not judged here: Clover's are taken as they come (it documents seconds
    and may change them; one read as too late only delays a refresh until a 401), while an
    operator's pasted pair is held to Unix seconds by :func:`token_pair`."""
    problem = pair.unusable_because()
    if problem is not None:
        raise InvalidInput(f"{what}: {problem}")
    return pair


def _text(raw: bytes, what: str) -> str:
    if len(raw) > MAX_STDIN_BYTES:
        raise InvalidInput(f"{what}: more than {MAX_STDIN_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what}: not UTF-8 text") from None


def _shown(text: str, limit: int = 40) -> str:
    """A value as it may appear in a message: escaped (``ascii``) and cut short."""
    return ascii(text[:limit]) + ("…" if len(text) > limit else "")
