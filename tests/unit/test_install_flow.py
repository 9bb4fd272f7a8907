"""The install flow's pure parts: the signed state, the strict query reader, the pages, the
region hosts, the code exchange's answers, and the flow's decisions over in-memory ports
(the integration tests run the same flow through the real function, stores and Clover
simulator: tests/integration/test_onboarding.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import final

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esl_sync import oauth_state
from esl_sync.clover.errors import (
    CloverCodeRejected,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.oauth import CloverOAuthClient
from esl_sync.clover.pacing import RequestPacer
from esl_sync.clover.regions import CLOVER_API_HOSTS, REGIONS, authorize_base_url
from esl_sync.clover.tokens import ReauthRequired, TokenKeeper
from esl_sync.credentials import CloverTokens, StoredTokens
from esl_sync.messages import PollRequest
from esl_sync.onboarding import (
    LOCK_WAIT_SECONDS,
    REFUSALS,
    REPORTING_MS,
    OnboardingDeps,
    finish_install,
    start_install,
)
from esl_sync.ports import InstallTokens, MerchantRegistry, PollQueue
from esl_sync.records import Merchant
from esl_sync.settings import ConfigurationError, Settings, load_settings
from esl_sync.web import MAX_QUERY_CHARS, SECURITY_HEADERS, Page, QueryRefused, read_query
from esl_sync.webhooks import read_webhook
from esl_sync_ops.cli import main
from tests.fakes import (
    INSTALL_PAIR,
    MemoryExchanger,
    MemoryPollQueue,
    MemoryTokens,
    StaticRefresher,
)

KEY = b"k" * 32
NOW_MS = 1_795_867_200_000
PAIR = INSTALL_PAIR

# ---------------------------------------------------------------- the signed state


def test_a_state_reads_back_as_the_merchant_and_time_it_was_made_for() -> None:
    text, state = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    assert oauth_state.read(KEY, text, now_ms=NOW_MS + 599_999, ttl_ms=600_000) == state
    assert state.merchant_id == "MSTATE000001"
    assert state.issued_ms == NOW_MS
    other, _ = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    assert other != text  # a fresh nonce each time


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.replace("MSTATE000001", "MSTATE000002"), "forged"),  # another merchant
        (lambda t: t.replace(f".{NOW_MS}.", f".{NOW_MS + 1}."), "forged"),  # another time
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "forged"),
        (lambda t: oauth_state.issue(b"x" * 32, "MSTATE000001", NOW_MS)[0], "forged"),
        (lambda t: t + ".extra", "malformed"),
        (lambda t: t.replace("s1.", "s2.", 1), "malformed"),
        (lambda t: "", "malformed"),
        (lambda t: t + "\x00", "malformed"),
        (lambda t: "s1." + "M" * 300, "malformed"),
        (lambda t: t.replace("M", "\u039c", 1), "malformed"),
    ],
)
def test_a_changed_or_foreign_state_is_refused(change: Callable[[str], str], reason: str) -> None:
    text, _ = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    with pytest.raises(oauth_state.StateRefused) as refused:
        oauth_state.read(KEY, change(text), now_ms=NOW_MS, ttl_ms=600_000)
    assert refused.value.reason == reason


def test_a_state_expires_after_its_lifetime_and_cannot_come_from_the_future() -> None:
    text, _ = oauth_state.issue(KEY, "MSTATE000001", NOW_MS)
    with pytest.raises(oauth_state.StateRefused, match="expired"):
        oauth_state.read(KEY, text, now_ms=NOW_MS + 600_001, ttl_ms=600_000)
    # Another instance's clock may run a little behind; far behind means not ours.
    oauth_state.read(KEY, text, now_ms=NOW_MS - oauth_state.CLOCK_SKEW_MS, ttl_ms=600_000)
    with pytest.raises(oauth_state.StateRefused, match="forged"):
        oauth_state.read(KEY, text, now_ms=NOW_MS - oauth_state.CLOCK_SKEW_MS - 1, ttl_ms=600_000)


@given(st.text(max_size=400))
def test_reading_any_text_as_a_state_refuses_it_by_name(text: str) -> None:
    with pytest.raises(oauth_state.StateRefused) as refused:
        oauth_state.read(KEY, text, now_ms=NOW_MS, ttl_ms=600_000)
    assert refused.value.reason in ("malformed", "forged")


# ---------------------------------------------------------------- queries and pages


def test_the_query_reader_decodes_what_it_knows_and_ignores_the_rest() -> None:
    query = "merchant_id=M1&x=1&x=2&state=a%2Bb+c&employee_id="
    assert read_query(query, ("merchant_id", "state", "employee_id")) == {
        "merchant_id": "M1",
        "state": "a+b c",
        "employee_id": "",
    }


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("merchant_id=A&merchant_id=B", "more than once"),
        ("merchant_id=%ff", "not valid UTF-8"),
        ("merchant_id=\u00e9", "characters a browser does not send"),
        ("merchant_id=\x00", "characters a browser does not send"),
        ("merchant_id=" + "M" * MAX_QUERY_CHARS, "too long"),
        ("&".join(f"f{i}=1" for i in range(40)), "too many parameters"),
    ],
)
def test_the_query_reader_refuses_what_no_redirect_of_clover_holds(query: str, why: str) -> None:
    with pytest.raises(QueryRefused, match=why):
        read_query(query, ("merchant_id",))


@given(st.text(max_size=600))
def test_the_query_reader_answers_any_text_or_refuses_it_by_name(raw: str) -> None:
    try:
        found = read_query(raw, ("merchant_id", "code"))
    except QueryRefused:
        return
    assert set(found) <= {"merchant_id", "code"}


def test_a_page_escapes_everything_and_carries_the_security_headers() -> None:
    page = Page(400, "<b>t</b>", ("a & <script>",), 'ref"<x>', location="https://x/?a=1&b=<2>")
    assert "<b>" not in page.body
    assert "<script>" not in page.body
    assert "&lt;script&gt;" in page.body
    assert 'href="https://x/?a=1&amp;b=&lt;2&gt;"' in page.body
    assert page.headers["Location"] == "https://x/?a=1&b=<2>"
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    # The one inline style is exactly the one the policy's hash allows.
    style = re.search(r"<style>(.*?)</style>", page.body)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style[1].encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


# ---------------------------------------------------------------- regions, settings


def test_each_region_authorizes_on_its_web_host_and_only_clover_hosts_have_one() -> None:
    assert {r.api_host: authorize_base_url(f"https://{r.api_host}") for r in REGIONS} == {
        "api.clover.com": "https://www.clover.com",
        "api.eu.clover.com": "https://www.eu.clover.com",
        "api.la.clover.com": "https://www.la.clover.com",
        "apisandbox.dev.clover.com": "https://sandbox.dev.clover.com",
    }
    assert {r.api_host for r in REGIONS} == CLOVER_API_HOSTS
    assert authorize_base_url("http://127.0.0.1:4011/") == "http://127.0.0.1:4011"
    with pytest.raises(ValueError, match="not a Clover REST host"):
        authorize_base_url("https://api.clover.com.evil.example")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ONBOARDING_STORE_CODE_TEMPLATE", "STORE-1"),  # one store for every merchant
        ("ONBOARDING_STORE_CODE_TEMPLATE", "{merchant}"),
        ("ONBOARDING_STORE_CODE_TEMPLATE", "{merchant_id!r}"),
        ("ONBOARDING_STORE_CODE_TEMPLATE", "{merchant_id"),
        ("CLOVER_OAUTH_REDIRECT_URI", "https://x/clover/oauth/callback?x=1"),
        ("CLOVER_OAUTH_REDIRECT_URI", "ftp://x/cb"),
        ("CLOVER_OAUTH_STATE_TTL_SECONDS", "30"),
        ("CLOVER_AUTHORIZE_BASE_URL", "www.clover.com"),
    ],
)
def test_install_settings_are_checked_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings()


# ---------------------------------------------------------------- the code exchange


def _oauth(answer: Callable[[httpx.Request], httpx.Response]) -> CloverOAuthClient:
    return CloverOAuthClient("app-id", pacer=RequestPacer(), transport=httpx.MockTransport(answer))


def test_the_exchange_posts_id_secret_and_code_to_the_region_s_host() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=json.loads(PAIR.secret_json()))

    tokens = _oauth(answer).exchange_code("https://api.la.clover.com/", "M1", "CODE", "SECRET")

    assert str(seen[0].url) == "https://api.la.clover.com/oauth/v2/token"
    assert json.loads(seen[0].content) == {
        "client_id": "app-id",
        "client_secret": "SECRET",
        "code": "CODE",
    }
    assert tokens == PAIR


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, CloverCodeRejected),
        (401, CloverCodeRejected),
        (403, CloverCodeRejected),
        (404, CloverRequestRejected),
        (502, CloverServerError),
    ],
)
def test_a_refused_exchange_is_typed_and_never_quotes_the_code_or_secret(
    status: int, error: type[Exception]
) -> None:
    client = _oauth(lambda _r: httpx.Response(status, json={"message": "bad CODE SECRET"}))
    with pytest.raises(error) as raised:
        client.exchange_code("https://api.clover.com", "M1", "CODE", "SECRET")
    assert "CODE" not in str(raised.value)
    assert "SECRET" not in str(raised.value)
    assert raised.value.__cause__ is None


def test_an_exchange_without_an_answer_is_a_timeout_not_chained() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(CloverTimeout) as raised:
        _oauth(answer).exchange_code("https://api.clover.com", "M1", "CODE", "SECRET")
    assert raised.value.__context__ is None


# ---------------------------------------------------------------- the flow's decisions


@final
class MemoryInstalls(InstallTokens):
    """One state item: the lock, the sign-ins used, the tokens stored (never decrypted)."""

    def __init__(self) -> None:
        self.lock: str | None = None
        self.claimed_ms: int | None = None
        self.authorized_ms: int | None = None
        self.sealed: bytes | None = None
        self.tokens_elsewhere = False  # an operator stores tokens during the exchange

    def acquire_refresh_lock(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> bool:
        if self.lock is not None:
            return False
        self.lock = owner
        return True

    def release_refresh_lock(self, merchant_id: str, owner: str) -> None:
        if self.lock == owner:
            self.lock = None

    def claim_install(self, merchant_id: str, *, issued_ms: int, nonce: str) -> bool:
        newer = [t for t in (self.claimed_ms, self.authorized_ms) if t is not None]
        if any(t >= issued_ms for t in newer):
            return False
        self.claimed_ms = issued_ms
        return True

    def seal_tokens(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        return f"sealed for {merchant_id}".encode()

    def write_installed_tokens(
        self, merchant_id: str, sealed: bytes, *, issued_ms: int, now_ms: int
    ) -> bool:
        if self.tokens_elsewhere:
            self.authorized_ms = now_ms
        if self.authorized_ms is not None and self.authorized_ms >= issued_ms:
            return False
        self.sealed, self.authorized_ms = sealed, now_ms
        return True


@final
class MemoryRegistry(MerchantRegistry):
    def __init__(self) -> None:
        self.merchants: dict[str, Merchant] = {}
        self.assigned: dict[str, str] = {}

    def register_install(
        self,
        merchant_id: str,
        clover_base_url: str,
        store_code: str | None,
        *,
        then: Callable[[], object],
    ) -> Merchant:
        known = self.merchants.get(merchant_id)
        code = (known and known.store_code) or self.assigned.get(merchant_id) or store_code
        merchant = Merchant(merchant_id, code, clover_base_url, active=True)
        then()  # raises: nothing written
        self.merchants[merchant_id] = merchant
        self.assigned.pop(merchant_id, None)
        return merchant

    def assign_store(self, merchant_id: str, store_code: str) -> bool:
        if merchant_id in self.merchants:
            self.merchants[merchant_id] = replace(
                self.merchants[merchant_id], store_code=store_code
            )
            return True
        self.assigned[merchant_id] = store_code
        return False


def _deps(exchanger: MemoryExchanger | None = None, *, template: str = "") -> OnboardingDeps:
    exchange = exchanger or MemoryExchanger()
    now = [NOW_MS / 1000]  # a clock that only sleeping moves

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return OnboardingDeps(
        client_id=lambda: "app-id",
        client_secret=lambda: "app-SECRET",
        state_key=lambda: KEY,
        redirect_uri=None,
        api_base_url="https://api.eu.clover.com",
        authorize_base_url="https://www.eu.clover.com",
        state_ttl_seconds=600,
        store_code_template=template,
        exchanger=lambda: exchange,
        tokens=MemoryInstalls(),
        merchants=MemoryRegistry(),
        poll_queue=MemoryPollQueue(),
        clock=lambda: now[0],
        sleep=sleep,
    )


def _callback(merchant_id: str = "MFLOW0000001", code: str = "CODE-1") -> str:
    state, _ = oauth_state.issue(KEY, merchant_id, NOW_MS - 1000)
    return f"code={code}&merchant_id={merchant_id}&client_id=app-id&state={state}"


def _reason(page: Page) -> str:
    assert page.reference is not None
    return page.reference.rsplit("(", 1)[1].rstrip(")")


def test_the_install_sends_the_browser_to_the_region_s_authorize_page() -> None:
    page = start_install(
        "merchant_id=MFLOW0000001&client_id=app-id", _deps(), reference="r1", host="api.example"
    )
    assert page.status == 302
    assert page.location is not None
    assert page.location.startswith(
        "https://www.eu.clover.com/oauth/v2/authorize?client_id=app-id&redirect_uri="
        "https%3A%2F%2Fapi.example%2Fclover%2Foauth%2Fcallback&state=s1.MFLOW0000001."
    )


@pytest.mark.parametrize(
    ("query", "host", "reason"),
    [
        ("merchant_id=MFLOW0000001&client_id=another-app", "api.example", "other_app"),
        ("employee_id=E1", "api.example", "no_merchant"),
        ("merchant_id=MFLOW0000001", None, "bad_request"),  # no API host, none configured
    ],
)
def test_the_install_refuses_by_name(query: str, host: str | None, reason: str) -> None:
    page = start_install(query, _deps(), reference="r1", host=host)
    assert (page.status, _reason(page)) == (REFUSALS[reason][0], reason)
    assert page.location is None


def test_a_callback_registers_the_merchant_with_the_rule_s_store_and_queues_its_poll() -> None:
    deps = _deps(template="CLV-{merchant_id}")
    page = finish_install(_callback(), deps, reference="r2")
    assert page.status == 200
    assert page.title == "esl-sync is connected"
    assert isinstance(deps.merchants, MemoryRegistry)
    assert deps.merchants.merchants["MFLOW0000001"] == Merchant(
        "MFLOW0000001", "CLV-MFLOW0000001", "https://api.eu.clover.com", active=True
    )
    assert isinstance(deps.poll_queue, MemoryPollQueue)
    assert [(r.merchant_id, r.reason) for r, _ in deps.poll_queue.sent] == [
        ("MFLOW0000001", "install")
    ]
    assert isinstance(deps.tokens, MemoryInstalls)
    assert deps.tokens.sealed == b"sealed for MFLOW0000001"
    assert deps.tokens.lock is None  # given back


@final
class DownPollQueue(PollQueue):
    def send(self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None) -> None:
        raise ConnectionError("SQS is down")


def test_a_first_poll_that_cannot_be_queued_leaves_the_merchant_connected() -> None:
    deps = replace(_deps(template="{merchant_id}"), poll_queue=DownPollQueue())
    page = finish_install(_callback(), deps, reference="r9")
    assert (page.status, page.title) == (200, "esl-sync is connected")
    assert isinstance(deps.merchants, MemoryRegistry)
    assert deps.merchants.merchants["MFLOW0000001"].store_code == "MFLOW0000001"


def test_an_assigned_store_wins_over_the_rule_and_an_unusable_rule_gives_none() -> None:
    deps = _deps(template="{merchant_id}-with-a-suffix-too-long-for-a-store-code")
    assert isinstance(deps.merchants, MemoryRegistry)
    page = finish_install(_callback(), deps, reference="r3")
    assert page.title == "esl-sync is connected and awaits its setup"
    assert deps.merchants.merchants["MFLOW0000001"].store_code is None
    assert isinstance(deps.poll_queue, MemoryPollQueue)
    assert deps.poll_queue.sent == []
    deps = _deps(template="CLV-{merchant_id}")
    assert isinstance(deps.merchants, MemoryRegistry)
    deps.merchants.assign_store("MFLOW0000001", "ASSIGNED-1")
    finish_install(_callback(), deps, reference="r4")
    assert deps.merchants.merchants["MFLOW0000001"].store_code == "ASSIGNED-1"


def test_a_held_lock_is_waited_for_then_answered_busy_without_a_claim() -> None:
    deps = _deps()
    assert isinstance(deps.tokens, MemoryInstalls)
    deps.tokens.lock = "a refresh or another callback"
    page = finish_install(_callback(), deps, reference="r5")
    assert (page.status, _reason(page)) == (409, "busy")
    assert deps.tokens.claimed_ms is None


def test_tokens_stored_during_the_exchange_win_and_nothing_is_registered() -> None:
    deps = _deps()
    assert isinstance(deps.tokens, MemoryInstalls)
    deps.tokens.tokens_elsewhere = True
    page = finish_install(_callback(), deps, reference="r6")
    assert (page.status, _reason(page)) == (409, "newer_tokens")
    assert isinstance(deps.merchants, MemoryRegistry)
    assert deps.merchants.merchants == {}
    assert deps.tokens.lock is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CloverCodeRejected("refused", merchant_id="M", status=401), "code_refused"),
        (CloverTimeout("no answer", merchant_id="M"), "clover_unavailable"),
        (CloverServerError("down", merchant_id="M", status=503), "clover_unavailable"),
    ],
)
def test_a_failed_exchange_is_named_and_stores_no_tokens(error: Exception, reason: str) -> None:
    deps = _deps(MemoryExchanger(error))
    page = finish_install(_callback(), deps, reference="r7")
    assert (page.status, _reason(page)) == (REFUSALS[reason][0], reason)
    assert isinstance(deps.tokens, MemoryInstalls)
    assert deps.tokens.sealed is None
    assert deps.tokens.lock is None


TOKEN_TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\n\r \x7f\ud800"), min_size=1
) | st.builds(lambda n: "A" * n, st.integers(1, 5_000))


@given(
    access=TOKEN_TEXT,
    refresh=TOKEN_TEXT,
    expiration=st.none() | st.integers(min_value=0, max_value=2**63),
)
def test_an_exchanged_pair_is_stored_only_if_its_tokens_can_be_sent_and_stored(
    access: str, refresh: str, expiration: int | None
) -> None:
    """Clover's answer is stored only if each token is printable ASCII without spaces (an
    HTTP header carries it) and the pair fits what KMS encrypts; otherwise the callback is
    Clover failing (502) and nothing is sealed. Its expirations, whatever they are, are
    taken (milliseconds included: a late one only delays a refresh until a 401)."""
    pair = CloverTokens.from_object(
        {"access_token": access, "refresh_token": refresh, "access_token_expiration": expiration}
    )
    deps = _deps(MemoryExchanger(pair))
    page = finish_install(_callback(), deps, reference="r9")
    assert isinstance(deps.tokens, MemoryInstalls)
    header_safe = all(re.fullmatch("[!-~]+", token) for token in (access, refresh))
    if header_safe and len(pair.secret_json().encode()) <= 4096:
        assert page.status == 200
        assert deps.tokens.sealed is not None
    else:
        assert (page.status, _reason(page)) == (502, "clover_unavailable")
        assert deps.tokens.sealed is None


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (lambda: _callback(code=""), "no_code"),
        (lambda: _callback(code="a%20b"), "bad_request"),
        (lambda: _callback(code="x" * 3000), "bad_request"),
        (lambda: _callback().replace("client_id=app-id", "client_id=other"), "other_app"),
        (
            lambda: _callback().replace("merchant_id=MFLOW0000001", "merchant_id=MOTHER000001"),
            "merchant_mismatch",
        ),
    ],
)
def test_a_callback_that_cannot_be_right_is_refused_before_any_write(
    query: Callable[[], str], reason: str
) -> None:
    deps = _deps()
    page = finish_install(query(), deps, reference="r8")
    assert (page.status, _reason(page)) == (REFUSALS[reason][0], reason)
    assert isinstance(deps.tokens, MemoryInstalls)
    assert (deps.tokens.claimed_ms, deps.tokens.lock) == (None, None)


def test_every_refusal_is_a_4xx_or_a_gateway_error_with_advice() -> None:
    for name, (status, title, advice) in REFUSALS.items():
        assert 400 <= status < 500 or (name, status) == ("clover_unavailable", 502)
        assert title
        assert advice


# ---------------------------------------------------------------- uninstall hints


def test_an_app_delete_event_is_an_uninstall_hint_for_a_registered_merchant() -> None:
    body = json.dumps(
        {
            "appId": "APP",
            "merchants": {
                "MKNOWN000001": [
                    {"objectId": "A:APP", "type": "DELETE", "ts": 5},
                    {"objectId": "A:APP", "type": "DELETE", "ts": 9},
                    {"objectId": "A:APP", "type": "UPDATE", "ts": 7},
                ],
                "MSTRANGER001": [{"objectId": "A:APP", "type": "DELETE", "ts": 9}],
            },
        }
    ).encode()
    result = read_webhook(body, "auth", lambda: "auth", lambda _m: False, lambda m: "KNOWN" in m)
    assert result.uninstalled == {"MKNOWN000001": 9}
    assert result.unknown_merchants == ["MSTRANGER001"]
    assert result.ignored_events == 2  # the subscription change, the stranger's
    assert result.merchants_to_poll == []


def test_tokens_authorized_before_an_uninstall_count_as_refused() -> None:
    store = MemoryTokens(StoredTokens(PAIR, 3, uninstalled=True))
    keeper = TokenKeeper(store=store, refresher=lambda: StaticRefresher(PAIR), margin_seconds=0)
    with pytest.raises(ReauthRequired, match="uninstalled"):
        keeper.access_token("M", "https://api.clover.com")
    assert store.marks == [3]


def test_settings_default_to_no_redirect_uri_and_ten_minutes() -> None:
    defaults = Settings()
    assert defaults.clover_oauth_redirect_uri is None
    assert defaults.clover_oauth_state_ttl_seconds == 600
    assert defaults.onboarding_store_code_template == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["merchants", "set-store", "MSTORE000001", "bad code"],
        ["merchants", "set-store", "MSTORE000001", "-leading-dash"],
        ["merchants", "set-store", "MSTORE000001", "S" * 33],
        ["merchants", "set-store", "M\x00NUL", "STORE-1"],
        ["merchants", "set-store", "MSTORE000001"],
    ],
)
def test_set_store_checks_its_arguments_like_merchants_add(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2  # refused before anything is read or written (nothing is reachable)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "\x00" not in err


def test_a_registration_after_the_lock_wait_and_the_exchange_still_has_time_to_answer() -> None:
    """Onboarding's statements end 2 s before the function's 25 s timeout (README, "A
    server gone without a word"): the merchant's lock given back and the page sent in them,
    and a registration reached after the lock's wait (8 s) and Clover's exchange (10 s)
    still has 5 s. The literal, not the constant's own value: the README states it."""
    assert REPORTING_MS == 2_000
    assert 25 - LOCK_WAIT_SECONDS - 10 - REPORTING_MS / 1000 == 5
