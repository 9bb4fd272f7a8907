"""Clover tokens: the refresh call, what is kept secret, and the keeper's lock discipline."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from esl_sync.clover import tokens as tokens_module
from esl_sync.clover.errors import (
    CloverAuthError,
    CloverBadResponse,
    CloverRefreshRejected,
    CloverServerError,
)
from esl_sync.clover.oauth import ANSWER_MAX_BYTES, CloverOAuthClient
from esl_sync.clover.pacing import RequestPacer
from esl_sync.clover.tokens import ReauthRequired, TokenKeeper, TokenRefreshBusy
from esl_sync.credentials import CloverTokens, StoredTokens
from tests.fakes import MemoryTokens, StaticRefresher

NOW = 1_795_867_200.0
PAIR = {
    "access_token": "new-access-SECRET",
    "access_token_expiration": 1_795_869_000,
    "refresh_token": "new-refresh-SECRET",
    "refresh_token_expiration": 1_798_459_200,
}


def _client(answer: Callable[[httpx.Request], httpx.Response]) -> CloverOAuthClient:
    return CloverOAuthClient("app-id", pacer=RequestPacer(), transport=httpx.MockTransport(answer))


def test_a_refresh_posts_client_id_and_refresh_token_to_the_merchant_s_host() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PAIR)

    tokens = _client(answer).refresh("https://api.eu.clover.com/", "M1", "old-refresh-SECRET")

    assert str(seen[0].url) == "https://api.eu.clover.com/oauth/v2/refresh"
    assert json.loads(seen[0].content) == {
        "client_id": "app-id",
        "refresh_token": "old-refresh-SECRET",
    }
    assert tokens == CloverTokens.from_object(PAIR)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"message": "invalid refresh token old-refresh-SECRET"}, CloverRefreshRejected),
        (403, {}, CloverRefreshRejected),
        (503, {"message": "old-refresh-SECRET"}, CloverServerError),
        (200, {**PAIR, "refresh_token": None}, CloverBadResponse),
        (200, {**PAIR, "access_token": {"value": "new-access-SECRET"}}, CloverBadResponse),
    ],
)
def test_failures_are_typed_and_never_quote_a_token(
    status: int, body: dict[str, object], error: type[Exception]
) -> None:
    client = _client(lambda _request: httpx.Response(status, json=body))

    with pytest.raises(error) as caught:
        client.refresh("https://api.clover.com", "M1", "old-refresh-SECRET")

    assert "SECRET" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("status", [200, 401, 503])
def test_an_answer_past_its_bound_is_not_read_further(status: int) -> None:
    """A token pair is a few hundred bytes: a body past ANSWER_MAX_BYTES (a host that
    serves something else) is refused by its size, in chunks never read whole."""
    chunk = b'{"access_token": "new-access-SECRET", "pad": "' + b"x" * 65_536
    chunks_read = 0

    def endless() -> Iterator[bytes]:
        nonlocal chunks_read
        while True:
            chunks_read += 1
            yield chunk

    client = _client(lambda _request: httpx.Response(status, content=endless()))

    with pytest.raises(CloverBadResponse) as caught:
        client.refresh("https://api.clover.com", "M1", "old-refresh-SECRET")

    assert str(caught.value) == (
        f"merchant M1: POST /oauth/v2/refresh: answer larger than {ANSWER_MAX_BYTES} bytes"
        f" (HTTP {status})"
    )
    assert chunks_read == ANSWER_MAX_BYTES // len(chunk) + 1  # stopped at the first past it
    assert caught.value.__cause__ is None


def test_an_answer_within_its_bound_is_read_whole() -> None:
    padded = json.dumps({**PAIR, "pad": "x" * (ANSWER_MAX_BYTES - 400)}).encode()
    assert len(padded) <= ANSWER_MAX_BYTES
    client = _client(lambda _request: httpx.Response(200, content=padded))
    assert client.refresh("https://api.clover.com", "M1", "r") == CloverTokens.from_object(PAIR)


def test_tokens_never_show_in_a_repr_or_a_parse_error() -> None:
    tokens = CloverTokens.from_object(PAIR)
    assert "SECRET" not in repr(tokens)
    assert "SECRET" not in str(tokens)
    with pytest.raises(ValueError, match="refresh_token_expiration") as caught:
        CloverTokens.parse(json.dumps({**PAIR, "refresh_token_expiration": "SECRET"}), "pair")
    assert "SECRET" not in str(caught.value)
    assert CloverTokens.parse(tokens.secret_json(), "stored") == tokens


def test_close_to_expiry_means_within_the_margin_and_plain_tokens_never_expire() -> None:
    tokens = CloverTokens.from_object(PAIR)
    assert not tokens.expires_within(300, now=PAIR["access_token_expiration"] - 301)
    assert tokens.expires_within(300, now=PAIR["access_token_expiration"] - 300)
    assert not CloverTokens.plain("t").expires_within(300, now=NOW)


# -- the keeper, on an in-memory store ---------------------------------------------------


EXPIRED = StoredTokens(
    CloverTokens.from_object(
        {**PAIR, "access_token": "old-access", "access_token_expiration": int(NOW)}
    ),
    generation=3,
)


def _keeper(
    store: MemoryTokens,
    refresher: StaticRefresher,
    while_waiting: Callable[[], None] = lambda: None,
) -> TokenKeeper:
    clock = [NOW]

    def sleep(seconds: float) -> None:
        clock[0] += seconds
        while_waiting()

    return TokenKeeper(
        store=store,
        refresher=lambda: refresher,
        margin_seconds=300,
        lock_ms=5_000,
        clock=lambda: clock[0],
        sleep=sleep,
    )


def test_an_expiring_token_is_refreshed_under_the_lock_and_stored_as_a_new_generation() -> None:
    store, refresher = MemoryTokens(EXPIRED), StaticRefresher(CloverTokens.from_object(PAIR))

    got = _keeper(store, refresher).access_token("M1", "https://api.clover.com")

    assert got == StoredTokens(CloverTokens.from_object(PAIR), 4)
    assert (refresher.calls, store.locks_taken, store.lock_owner) == (1, 1, None)


def test_a_waiter_uses_what_the_lock_holder_stored_and_makes_no_call() -> None:
    store, refresher = (
        MemoryTokens(EXPIRED, lock_owner="another poller"),
        StaticRefresher(AssertionError("must not refresh")),
    )

    def holder_finishes() -> None:
        store.write_token("M1", CloverTokens.from_object(PAIR))

    got = _keeper(store, refresher, holder_finishes).access_token("M1", "https://x")

    assert got is not None
    assert got.tokens.access_token.get_secret_value() == PAIR["access_token"]
    assert refresher.calls == 0


def test_a_waiter_gives_up_when_the_lock_stays_held_and_reports_a_refused_refresh() -> None:
    held = MemoryTokens(EXPIRED, lock_owner="a poller that hangs")
    with pytest.raises(TokenRefreshBusy):
        _keeper(held, StaticRefresher(AssertionError())).access_token("M1", "https://x")

    refused = MemoryTokens(EXPIRED, lock_owner="a poller whose refresh is refused")

    def holder_marks() -> None:
        refused.mark_needs_reauth("M1", generation=3)

    with pytest.raises(ReauthRequired):
        _keeper(refused, StaticRefresher(AssertionError()), holder_marks).access_token("M1", "x")


def test_a_refused_refresh_marks_the_merchant_once_on_the_generation_it_refreshed() -> None:
    rejection = CloverRefreshRejected("invalid refresh token", merchant_id="M1", status=401)
    store = MemoryTokens(EXPIRED)

    with pytest.raises(ReauthRequired) as caught:
        _keeper(store, StaticRefresher(rejection)).access_token("M1", "https://x")

    assert caught.value.cause is rejection
    assert store.marks == [3]
    assert store.stored is not None
    assert store.stored.needs_reauth


def test_after_a_401_a_plain_token_is_marked_unless_a_newer_one_was_stored() -> None:
    error = CloverAuthError("HTTP 401", merchant_id="M1", status=401)
    plain = StoredTokens(CloverTokens.plain("old"), generation=1)
    store = MemoryTokens(plain)
    store.write_token("M1", "stored-meanwhile")

    renewed = _keeper(store, StaticRefresher(AssertionError())).renew("M1", "x", plain, error)

    assert renewed.tokens.access_token.get_secret_value() == "stored-meanwhile"
    with pytest.raises(ReauthRequired):
        _keeper(store, StaticRefresher(AssertionError())).renew("M1", "x", renewed, error)
    assert store.marks == [2]


def test_a_refreshed_pair_the_store_fails_to_take_is_stored_by_a_retry_never_refreshed_twice() -> (
    None
):
    """Clover spends the old refresh token as it answers: a refreshed pair lost to one
    failed write (a KMS or DynamoDB error past the client's own retries) left the merchant
    needing a new install. The write is tried again, the refresh never is."""
    store, refresher = MemoryTokens(EXPIRED), StaticRefresher(CloverTokens.from_object(PAIR))
    store.replace_failures = [RuntimeError("KMS throttled"), RuntimeError("DynamoDB 500")]

    got = _keeper(store, refresher).access_token("M1", "https://api.clover.com")

    assert got == StoredTokens(CloverTokens.from_object(PAIR), 4)
    assert store.stored == got
    assert (refresher.calls, store.lock_owner, store.marks) == (1, None, [])


def test_a_refreshed_pair_that_cannot_be_stored_at_all_fails_the_poll_and_marks_nothing() -> None:
    store, refresher = MemoryTokens(EXPIRED), StaticRefresher(CloverTokens.from_object(PAIR))
    store.replace_failures = [RuntimeError(f"KMS down {n}") for n in range(10)]

    with pytest.raises(RuntimeError, match="KMS down"):
        _keeper(store, refresher).access_token("M1", "https://api.clover.com")

    assert (refresher.calls, store.lock_owner, store.marks) == (1, None, [])
    assert len(store.replace_failures) == 10 - tokens_module.STORE_ATTEMPTS


# -- expirations Clover's answer holds that are no count ---------------------------------

UNREADABLE_EXPIRATIONS = {
    "1e400": "1e400",
    "1e19": "1e19",
    "negative": "-1",
    "a fraction": "1795869000.5",
    "text": '"soon"',
    "an object": "{}",
}


def _pair_text(field: str, value: str) -> bytes:
    """PAIR as JSON with ``field``'s value written as is (1e400 has no Python float)."""
    body = json.dumps({**PAIR, field: 0})
    return body.replace(f'"{field}": 0', f'"{field}": {value}').encode()


@pytest.mark.parametrize("field", ["access_token_expiration", "refresh_token_expiration"])
@pytest.mark.parametrize(
    "value", list(UNREADABLE_EXPIRATIONS.values()), ids=list(UNREADABLE_EXPIRATIONS)
)
def test_a_refreshed_pair_with_an_unreadable_expiration_is_stored_with_it_unknown(
    field: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Clover spends the old refresh token as it answers: a new pair refused for one
    expiration that is no count (1e400, 1e19, negative, a fraction, text) was lost,
    and the merchant's next refresh, with the spent token, marked it for re-authorization:
    every label of the store frozen until someone installs the app again, for a number the
    keeper only uses to refresh early. The pair is stored, that expiration unknown (None):
    an access token of unknown expiry is refreshed at its first 401."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=_pair_text(field, value))

    store = MemoryTokens(EXPIRED)
    keeper = TokenKeeper(
        store=store,
        refresher=lambda: _client(answer),
        margin_seconds=300,
        lock_ms=5_000,
        clock=lambda: NOW,
    )

    got = keeper.access_token("M1", "https://api.clover.com")

    expected = CloverTokens.from_object({**PAIR, field: None})
    assert got == StoredTokens(expected, 4)
    assert store.stored == got
    assert store.marks == []
    assert len(seen) == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [getattr(r, "fields", None) for r in warnings] == [[field]]
    assert not [r for r in caplog.records if "SECRET" in str(r.__dict__)]
    # Unknown expiry: not refreshed again before Clover refuses the token.
    if field == "access_token_expiration":
        assert not expected.expires_within(300, NOW + 10**9)
