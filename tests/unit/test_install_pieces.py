"""The install flow's small parts at their edges: the signed state's bounds and reasons,
the query reader's limits and messages, a page exactly as the browser gets it, and the
region table's answers for what is not a Clover host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from esl_sync import oauth_state
from esl_sync.clover.regions import authorize_base_url
from esl_sync.runtime import oauth_state_key
from esl_sync.settings import ConfigurationError, settings
from esl_sync.web import Page, QueryRefused, read_query

KEY = b"k" * 32
NOW_MS = 1_795_867_200_000
STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;"
    "color:#1b1b1b}h1{font-size:1.4em}.ref{color:#555;font-size:.9em}"
)
HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
)

# ---------------------------------------------------------------- the signed state


def _refusal(text: str, *, now_ms: int = NOW_MS, ttl_ms: int = 600_000) -> str:
    with pytest.raises(oauth_state.StateRefused) as refused:
        oauth_state.read(KEY, text, now_ms=now_ms, ttl_ms=ttl_ms)
    assert str(refused.value) == refused.value.reason
    return refused.value.reason


def test_a_state_lives_exactly_its_lifetime() -> None:
    text, state = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    assert oauth_state.read(KEY, text, now_ms=NOW_MS + 600_000, ttl_ms=600_000) == state
    assert _refusal(text, now_ms=NOW_MS + 600_001) == "expired"


def test_a_state_from_up_to_a_minute_ahead_is_another_instance_s_not_a_forgery() -> None:
    text, state = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    assert oauth_state.read(KEY, text, now_ms=NOW_MS - 60_000, ttl_ms=600_000) == state
    assert _refusal(text, now_ms=NOW_MS - 60_001) == "forged"


def test_a_state_s_text_is_its_parts_and_a_mac_without_padding() -> None:
    text, state = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    version, merchant, issued, nonce, mac = text.split(".")
    assert (version, merchant, issued, nonce) == ("s1", "MSTATE000001", str(NOW_MS), state.nonce)
    assert (len(nonce), len(mac)) == (22, 43)
    assert "=" not in text


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
def test_a_state_key_shorter_than_32_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key HMAC-SHA256 signs with has at least its 256 bits."""
    monkeypatch.setenv("CLOVER_OAUTH_STATE_KEY", "k" * 31)
    with pytest.raises(ConfigurationError) as refused:
        oauth_state_key()
    assert str(refused.value) == "invalid setting: CLOVER_OAUTH_STATE_KEY: at least 32 bytes"
    monkeypatch.setenv("CLOVER_OAUTH_STATE_KEY", "k" * 32)
    settings.cache_clear()
    key = oauth_state_key()
    text, state = oauth_state.issue(key, "MSTATE000001", NOW_MS)
    assert oauth_state.read(key, text, now_ms=NOW_MS, ttl_ms=0) == state


@pytest.mark.parametrize(
    "text",
    [
        "s1." + "M" * 1_000_000,
        "s1.M\u212a.1.AAAAAAAAAAAAAAAAAAAAAA." + "A" * 43,  # a Kelvin sign, K to a case-blind eye
        "s1.M1.\u0661.AAAAAAAAAAAAAAAAAAAAAA." + "A" * 43,  # an Arabic-Indic digit one
    ],
)
def test_a_huge_or_non_ascii_state_is_malformed(text: str) -> None:
    assert _refusal(text) == "malformed"


# ---------------------------------------------------------------- the query reader


def _query_refusal(raw: str) -> str:
    with pytest.raises(QueryRefused) as refused:
        read_query(raw, ("merchant_id",))
    return str(refused.value)


def test_a_query_may_be_4096_characters_long() -> None:
    longest = "merchant_id=" + "M" * (4096 - len("merchant_id="))
    assert read_query(longest, ("merchant_id",)) == {"merchant_id": "M" * 4084}
    assert _query_refusal(longest + "M") == "the address is too long"


def test_a_query_may_hold_32_parameters() -> None:
    most = "&".join(f"f{n}=1" for n in range(31)) + "&merchant_id=M1"
    assert read_query(most, ("merchant_id",)) == {"merchant_id": "M1"}
    assert _query_refusal(most + "&f31=1") == "the address has too many parameters"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("merchant_id=\u00e9", "the address holds characters a browser does not send"),
        ("merchant_id=M\x7f", "the address holds characters a browser does not send"),
        ("merchant_id=%C3%28", "the address is not valid UTF-8"),
        ("merchant_id=A&merchant_id=A", "the parameter merchant_id is given more than once"),
    ],
)
def test_a_refused_query_says_why_in_words_a_page_can_show(raw: str, message: str) -> None:
    assert _query_refusal(raw) == message


def test_a_query_is_decoded_as_utf_8() -> None:
    assert read_query("merchant_id=%C3%A9t%C3%A9", ("merchant_id",)) == {"merchant_id": "été"}


# ---------------------------------------------------------------- pages


def test_a_page_is_exactly_this_html() -> None:
    page = Page(302, "Go on", ("One & two.", "Three."), "ref-1", location="https://x/a?b=1&c=2")
    assert page.body == (
        f"{HEAD}<title>Go on</title><style>{STYLE}</style></head><body><h1>Go on</h1>"
        "<p>One &amp; two.</p><p>Three.</p>"
        '<p><a href="https://x/a?b=1&amp;c=2">Continue</a></p>'
        '<p class="ref">Reference: ref-1</p></body></html>'
    )
    assert Page(200, "Done").body == (
        f"{HEAD}<title>Done</title><style>{STYLE}</style></head><body><h1>Done</h1></body></html>"
    )


def test_a_page_is_html_in_utf_8_and_only_a_redirect_has_a_location() -> None:
    page = Page(200, "Done", reference="ref-1")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Location" not in page.headers
    assert page.body.endswith('<h1>Done</h1><p class="ref">Reference: ref-1</p></body></html>')


# ---------------------------------------------------------------- regions


def test_an_address_without_a_host_is_named_as_such() -> None:
    with pytest.raises(ValueError, match=r"^not a Clover REST host: ''$"):
        authorize_base_url("api.clover.com")  # no scheme: no host


def test_a_loopback_simulator_keeps_its_path_and_loses_only_trailing_slashes() -> None:
    assert authorize_base_url("http://localhost:4011/X//") == "http://localhost:4011/X"
    assert authorize_base_url("http://[::1]:4011") == "http://[::1]:4011"
