"""The shapes of outside values (esl_sync.inputs) and the CLI's terminal escaping."""

from __future__ import annotations

import pytest

from esl_sync import inputs
from esl_sync.inputs import InvalidInput
from esl_sync_ops.terminal import printable


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://api.clover.com", "https://api.clover.com"),
        ("https://api.clover.com/", "https://api.clover.com"),
        ("https://API.EU.CLOVER.COM:443", "https://api.eu.clover.com"),
        ("https://apisandbox.dev.clover.com", "https://apisandbox.dev.clover.com"),
    ],
)
def test_clovers_hosts_are_accepted_and_normalized(url: str, stored: str) -> None:
    assert inputs.clover_base_url(url) == stored
    assert inputs.clover_base_url(url, allow_loopback=True) == stored


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
)
def test_loopback_only_when_allowed(url: str) -> None:
    assert inputs.clover_base_url(url, allow_loopback=True) == url
    with pytest.raises(InvalidInput, match="expected https://"):
        inputs.clover_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254",
        "http://169.254.169.254:80",
        "https://api.clover.com@169.254.169.254",
        "https://169.254.169.254#@api.clover.com",
        "https://api.clover.com\\@evil.example",
        "https://api.clover.com:443@evil.example",
    ],
)
def test_the_metadata_service_and_userinfo_tricks_are_refused(url: str) -> None:
    for allow_loopback in (False, True):
        with pytest.raises(InvalidInput):
            inputs.clover_base_url(url, allow_loopback=allow_loopback)


def test_ids_and_codes() -> None:
    assert inputs.merchant_id("A1B2C3D4E5F6G") == "A1B2C3D4E5F6G"
    assert inputs.store_code("STORE-1.a_b") == "STORE-1.a_b"
    for bad in ("A\n", "A\x00", "Ä", "", "A" * 65):
        with pytest.raises(InvalidInput):
            inputs.merchant_id(bad)
    for bad in ("-S", "S" * 33, "S\u202e", "S'"):
        with pytest.raises(InvalidInput):
            inputs.store_code(bad)


def test_tokens() -> None:
    assert inputs.plain_token(b"  tok-1\n") == "tok-1"
    pair = inputs.token_pair(b'{"access_token": "a", "refresh_token": "r"}')
    assert pair.refresh_token is not None
    with pytest.raises(InvalidInput) as refused:
        inputs.token_pair(b'{"access_token": "secret value", "refresh_token": "r"}')
    assert "secret" not in str(refused.value)


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable("plain €") == "plain €"
    assert printable("\x1b[2J\x07\r\n\x00\ud800\u202e") == "\\x1b[2J\\x07\\r\\n\\x00\\ud800\\u202e"
    assert printable("x" * 500, limit=10) == "x" * 10 + "…"
