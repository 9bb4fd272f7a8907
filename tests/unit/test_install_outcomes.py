"""What the install flow shows, writes, logs and counts for each outcome: the merchant's
page word for word, the calls to the ports with their arguments, the operator's log lines
and the metrics (tests/unit/test_install_flow.py covers its decisions)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import final
from urllib.parse import parse_qs, urlsplit

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync import oauth_state
from esl_sync.clover.errors import CloverCodeRejected, CloverTimeout
from esl_sync.credentials import CloverTokens
from esl_sync.messages import PollRequest
from esl_sync.observability import metrics
from esl_sync.onboarding import (
    OnboardingDeps,
    finish_install,
    malformed,
    not_found,
    start_install,
    unavailable,
)
from esl_sync.ports import InstallTokens, MerchantRegistry, PollQueue
from esl_sync.records import Merchant
from esl_sync.web import Page
from tests.fakes import INSTALL_PAIR, MemoryExchanger, MemoryLog, MemoryPollQueue

KEY = b"k" * 32
NOW_MS = 1_795_867_200_000
MERCHANT = "MFLOW0000001"
PAIR = INSTALL_PAIR
START = "Open esl-sync again from your Clover dashboard to start over."


@final
class Installs(InstallTokens):
    """The state item's install calls, recorded; ``busy_for`` refusals of the lock first."""

    def __init__(self, *, busy_for: int = 0, claim: bool = True, write: bool = True) -> None:
        self.busy_for, self.claim, self.write = busy_for, claim, write
        self.calls: list[tuple[object, ...]] = []

    def acquire_refresh_lock(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> bool:
        self.calls.append(("lock", merchant_id, now_ms, duration_ms))
        self.owner = owner
        if self.busy_for:
            self.busy_for -= 1
            return False
        return True

    def release_refresh_lock(self, merchant_id: str, owner: str) -> None:
        assert owner == self.owner
        self.calls.append(("release", merchant_id))

    def claim_install(self, merchant_id: str, *, issued_ms: int, nonce: str) -> bool:
        self.calls.append(("claim", merchant_id, issued_ms, nonce))
        return self.claim

    def seal_tokens(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        self.calls.append(("seal", merchant_id, tokens))
        return b"sealed"

    def write_installed_tokens(
        self, merchant_id: str, sealed: bytes, *, issued_ms: int, now_ms: int
    ) -> bool:
        self.calls.append(("write", merchant_id, sealed, issued_ms, now_ms))
        return self.write


@final
class Registry(MerchantRegistry):
    def __init__(self, assigned: str | None = None) -> None:
        self.assigned = assigned
        self.calls: list[tuple[str, str, str | None]] = []

    def register_install(
        self,
        merchant_id: str,
        clover_base_url: str,
        store_code: str | None,
        *,
        then: Callable[[], object],
    ) -> Merchant:
        self.calls.append((merchant_id, clover_base_url, store_code))
        then()
        return Merchant(merchant_id, self.assigned or store_code, clover_base_url)


@final
class DownQueue(PollQueue):
    def send(self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None) -> None:
        raise ConnectionError("SQS is down")


@final
class Clock:
    """Our clock, in seconds; only sleeping moves it."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self) -> float:
        return NOW_MS / 1000 + round(sum(self.slept), 6)  # no drift: 40 x 0.2 is 8.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _deps(
    *,
    installs: Installs | None = None,
    exchanger: MemoryExchanger | None = None,
    registry: Registry | None = None,
    template: str = "CLV-{merchant_id}",
) -> OnboardingDeps:
    clock = Clock()
    exchange = exchanger or MemoryExchanger()
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
        tokens=installs or Installs(),
        merchants=registry or Registry(),
        poll_queue=MemoryPollQueue(),
        clock=clock,
        sleep=clock.sleep,
    )


def _state(issued_ms: int = NOW_MS - 1000, merchant_id: str = MERCHANT, key: bytes = KEY) -> str:
    return oauth_state.issue(key, merchant_id, issued_ms)[0]


def _callback(code: str = "CODE-1", state: str | None = None, client: str = "app-id") -> str:
    return f"code={code}&merchant_id={MERCHANT}&client_id={client}&state={state or _state()}"


@pytest.fixture
def emf(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The metrics the code under test wrote, as EMF lines."""
    metrics.clear_metrics()

    def lines() -> list[str]:
        metrics.flush_metrics()
        return capsys.readouterr().out.splitlines()

    yield lines
    metrics.clear_metrics()


def _refusal(status: int, title: str, advice: str, reason: str) -> Page:
    return Page(status, title, (advice,), f"ref-1 ({reason})")


REFUSED = {
    "bad_request": _refusal(400, "This address cannot be read", START, "bad_request"),
    "no_merchant": _refusal(
        400, "No Clover business named", "Open esl-sync from your Clover dashboard.", "no_merchant"
    ),
    "other_app": _refusal(400, "This link belongs to another app", START, "other_app"),
    "no_code": _refusal(400, "Clover did not approve esl-sync", START, "no_code"),
    "state_malformed": _refusal(
        400, "This sign-in was not started by esl-sync", START, "state_malformed"
    ),
    "state_forged": _refusal(
        400, "This sign-in was not started by esl-sync", START, "state_forged"
    ),
    "state_expired": _refusal(400, "This sign-in expired", START, "state_expired"),
    "merchant_mismatch": _refusal(
        400,
        "This approval is for another business",
        "The business you approved is not the one that started the sign-in. " + START,
        "merchant_mismatch",
    ),
    "state_used": _refusal(
        400,
        "This sign-in was already used",
        "Each sign-in works once. If esl-sync shows as connected in Clover, nothing is left to"
        " do; otherwise open esl-sync again from your Clover dashboard to start over.",
        "state_used",
    ),
    "busy": _refusal(
        409, "Another sign-in of this business is running", "Wait a minute. " + START, "busy"
    ),
    "code_refused": _refusal(
        400,
        "Clover refused the approval",
        START + " If it happens again, give your esl-sync operator the reference below.",
        "code_refused",
    ),
    "newer_tokens": _refusal(
        409, "A newer connection was made meanwhile", "Nothing was changed.", "newer_tokens"
    ),
    "clover_unavailable": _refusal(
        502, "Clover did not answer", "Wait a minute. " + START, "clover_unavailable"
    ),
}
"""Each refused callback's page, word for word (what the merchant reads)."""


@pytest.mark.parametrize(
    ("reason", "deps", "query"),
    [
        ("bad_request", _deps, lambda: _callback() + "&code=again"),
        ("no_merchant", _deps, lambda: _callback().replace(MERCHANT, "M%00")),
        ("other_app", _deps, lambda: _callback(client="another-app")),
        ("no_code", _deps, lambda: _callback(code="")),
        ("state_malformed", _deps, lambda: _callback(state="s1.garbage")),
        ("state_forged", _deps, lambda: _callback(state=_state(key=b"x" * 32))),
        ("state_expired", _deps, lambda: _callback(state=_state(NOW_MS - 600_001))),
        ("merchant_mismatch", _deps, lambda: _callback(state=_state(merchant_id="MOTHER000001"))),
        ("state_used", lambda: _deps(installs=Installs(claim=False)), _callback),
        ("busy", lambda: _deps(installs=Installs(busy_for=1000)), _callback),
        (
            "code_refused",
            lambda: _deps(
                exchanger=MemoryExchanger(CloverCodeRejected("no", merchant_id="M", status=400))
            ),
            _callback,
        ),
        ("newer_tokens", lambda: _deps(installs=Installs(write=False)), _callback),
        (
            "clover_unavailable",
            lambda: _deps(exchanger=MemoryExchanger(CloverTimeout("slow", merchant_id="M"))),
            _callback,
        ),
    ],
)
def test_each_refused_callback_shows_its_page_logs_its_reason_and_is_counted(
    reason: str,
    deps: Callable[[], OnboardingDeps],
    query: Callable[[], str],
    log: MemoryLog,
    emf: Callable[[], list[str]],
) -> None:
    page = finish_install(query(), deps(), reference="ref-1")
    assert page == REFUSED[reason]
    assert page.location is None
    known = reason not in ("bad_request", "no_merchant")  # read before the merchant id is
    assert log.lines("install refused") == [
        {
            "route": "callback",
            "reason": reason,
            "status": REFUSED[reason].status,
            "merchant_id": MERCHANT if known else None,
            "reference": "ref-1",
            "level": "WARNING",
        }
    ]
    lines = emf()
    refused_by_clover = {"OnboardingExchangesRefused": 1.0} if reason == "code_refused" else {}
    assert metric_sums(lines) == {"OnboardingRefused": 1.0, **refused_by_clover}
    assert set(metric_units(lines).values()) == {"Count"}


def test_a_refused_install_is_logged_for_the_install_route(log: MemoryLog) -> None:
    page = start_install(
        "merchant_id=MFLOW0000001&client_id=x", _deps(), reference="ref-1", host="h"
    )
    assert page == REFUSED["other_app"]
    assert [(line["route"], line["merchant_id"]) for line in log.lines("install refused")] == [
        ("install", None)
    ]


def test_requests_the_routes_do_not_serve_get_their_pages(log: MemoryLog) -> None:
    assert malformed("ref-1") == REFUSED["bad_request"]
    assert not_found("ref-1") == Page(404, "There is nothing here", (START,), "ref-1 (not_found)")
    assert [
        (line["route"], line["reason"], line["status"]) for line in log.lines("install refused")
    ] == [
        ("request", "bad_request", 400),
        ("request", "not_found", 404),
    ]
    assert unavailable("ref-2") == Page(
        503, "esl-sync is not available right now", (START,), "ref-2"
    )


def test_an_install_redirects_with_a_state_made_now_for_the_merchant(
    log: MemoryLog, emf: Callable[[], list[str]]
) -> None:
    page = start_install(f"merchant_id={MERCHANT}", _deps(), reference="ref-1", host="api.example")
    assert page.location is not None
    assert page == Page(
        302, "Continue to Clover", ("Clover asks you to approve esl-sync.",), location=page.location
    )
    url = urlsplit(page.location)
    query = parse_qs(url.query, strict_parsing=True)
    assert query["client_id"] == ["app-id"]  # no client_id in the query: Clover's own link
    assert query["redirect_uri"] == ["https://api.example/clover/oauth/callback"]
    state = oauth_state.read(KEY, query["state"][0], now_ms=NOW_MS, ttl_ms=0)
    assert (state.merchant_id, state.issued_ms) == (MERCHANT, NOW_MS)
    assert log.lines("install started") == [
        {"merchant_id": MERCHANT, "reference": "ref-1", "level": "INFO"}
    ]
    lines = emf()
    assert metric_sums(lines) == {"OnboardingStarted": 1.0}
    assert metric_units(lines) == {"OnboardingStarted": "Count"}


def test_a_configured_redirect_uri_wins_over_the_request_s_host() -> None:
    deps = replace(_deps(), redirect_uri="https://esl.example.com/clover/oauth/callback")
    page = start_install(f"merchant_id={MERCHANT}", deps, reference="r", host="api.example")
    assert page.location is not None
    query = parse_qs(urlsplit(page.location).query)
    assert query["redirect_uri"] == ["https://esl.example.com/clover/oauth/callback"]
    assert start_install(f"merchant_id={MERCHANT}", deps, reference="r", host=None).status == 302


def test_a_callback_exchanges_seals_stores_and_registers_under_the_lock(
    log: MemoryLog, emf: Callable[[], list[str]]
) -> None:
    installs, exchanger, registry = Installs(), MemoryExchanger(), Registry()
    deps = _deps(installs=installs, exchanger=exchanger, registry=registry)
    state = _state(NOW_MS - 599_999)  # within its ten minutes
    nonce = state.split(".")[3]
    page = finish_install(_callback(state=state), deps, reference="ref-1")
    assert page == Page(
        200,
        "esl-sync is connected",
        ("Your shelf labels follow your Clover prices from now on; the first ones in minutes.",),
        "ref-1",
    )
    assert installs.calls == [
        ("lock", MERCHANT, NOW_MS, 30_000),
        ("claim", MERCHANT, NOW_MS - 599_999, nonce),
        ("seal", MERCHANT, PAIR),
        ("write", MERCHANT, b"sealed", NOW_MS - 599_999, NOW_MS),
        ("release", MERCHANT),
    ]
    assert exchanger.calls == [("https://api.eu.clover.com", MERCHANT, "CODE-1", "app-SECRET")]
    assert registry.calls == [(MERCHANT, "https://api.eu.clover.com", f"CLV-{MERCHANT}")]
    assert isinstance(deps.poll_queue, MemoryPollQueue)
    assert [(r.merchant_id, r.reason, d) for r, d in deps.poll_queue.sent] == [
        (MERCHANT, "install", 0)
    ]
    assert log.lines("Clover tokens stored for a new installation") == [
        {
            "merchant_id": MERCHANT,
            "access_token_expiration": 1_795_869_000,
            "refresh_token_expiration": 1_798_459_200,
            "reference": "ref-1",
            "level": "INFO",
        }
    ]
    assert log.lines("install finished") == [
        {
            "merchant_id": MERCHANT,
            "store_code": f"CLV-{MERCHANT}",
            "reference": "ref-1",
            "level": "INFO",
        }
    ]
    assert metric_sums(emf()) == {"OnboardingCompleted": 1.0}


def test_a_merchant_without_a_store_code_is_connected_and_named_to_the_operator(
    log: MemoryLog, emf: Callable[[], list[str]]
) -> None:
    deps = _deps(template="")
    page = finish_install(_callback(), deps, reference="ref-1")
    assert page == Page(
        200,
        "esl-sync is connected and awaits its setup",
        (
            "Your Clover business is connected. Your esl-sync operator still has to name the"
            " shelf-label store it belongs to; your labels follow once that is done.",
        ),
        "ref-1",
    )
    assert isinstance(deps.merchants, Registry)
    assert deps.merchants.calls == [(MERCHANT, "https://api.eu.clover.com", None)]
    assert isinstance(deps.poll_queue, MemoryPollQueue)
    assert deps.poll_queue.sent == []
    assert log.lines(
        "merchant installed the app and awaits its Hipoink store code: esl-sync merchants"
        " set-store MERCHANT STORE"
    ) == [{"merchant_id": MERCHANT, "reference": "ref-1", "level": "WARNING"}]
    assert log.lines("install finished")[0]["store_code"] is None
    assert log.messages[:2] == [  # no word of a store code rule: there is none
        "Clover tokens stored for a new installation",
        "install finished",
    ]
    assert len(log.messages) == 3
    lines = emf()
    assert metric_sums(lines) == {"OnboardingCompleted": 1.0, "OnboardingAwaitingStoreCode": 1.0}
    assert set(metric_units(lines).values()) == {"Count"}


def test_a_store_the_operator_assigned_is_polled_whatever_the_rule_gives() -> None:
    deps = _deps(registry=Registry(assigned="ASSIGNED-1"), template="")
    assert finish_install(_callback(), deps, reference="r").title == "esl-sync is connected"
    assert isinstance(deps.poll_queue, MemoryPollQueue)
    assert [r.merchant_id for r, _ in deps.poll_queue.sent] == [MERCHANT]


def test_a_rule_that_gives_no_valid_store_code_is_named_and_gives_none(log: MemoryLog) -> None:
    deps = _deps(template="{merchant_id} with spaces")
    page = finish_install(_callback(), deps, reference="ref-1")
    assert page.title == "esl-sync is connected and awaits its setup"
    assert isinstance(deps.merchants, Registry)
    assert deps.merchants.calls[0][2] is None
    assert log.lines(
        "ONBOARDING_STORE_CODE_TEMPLATE gives no valid store code for this merchant"
    ) == [{"merchant_id": MERCHANT, "level": "WARNING"}]


def test_a_first_poll_the_queue_refuses_is_logged_with_the_merchant(log: MemoryLog) -> None:
    deps = replace(_deps(), poll_queue=DownQueue())
    assert finish_install(_callback(), deps, reference="ref-1").title == "esl-sync is connected"
    lines = log.lines("first poll not queued; the next scheduled dispatch polls the merchant")
    assert [(line["merchant_id"], line["reference"], line["level"]) for line in lines] == [
        (MERCHANT, "ref-1", "ERROR")
    ]


def test_a_refused_exchange_tells_the_operator_what_to_check(
    log: MemoryLog, emf: Callable[[], list[str]]
) -> None:
    error = CloverCodeRejected("no", merchant_id=MERCHANT, status=401)
    finish_install(_callback(), _deps(exchanger=MemoryExchanger(error)), reference="ref-1")
    assert log.lines(
        "Clover refused the code exchange: the merchant must start over; if every install"
        " fails so, check the app's client id and secret (CloverAppSecretArn)"
    ) == [{"merchant_id": MERCHANT, "status": 401, "reference": "ref-1", "level": "ERROR"}]
    assert metric_sums(emf()) == {"OnboardingExchangesRefused": 1.0, "OnboardingRefused": 1.0}


def test_an_exchange_clover_did_not_answer_is_logged_with_its_error(log: MemoryLog) -> None:
    error = CloverTimeout("no answer in 10 s", merchant_id=MERCHANT)
    finish_install(_callback(), _deps(exchanger=MemoryExchanger(error)), reference="ref-1")
    assert log.lines("Clover did not answer the code exchange") == [
        {
            "merchant_id": MERCHANT,
            "error": f"merchant {MERCHANT}: no answer in 10 s",
            "reference": "ref-1",
            "level": "ERROR",
        }
    ]


def test_a_token_pair_that_cannot_be_stored_is_logged_as_clovers_naming_the_merchant(
    log: MemoryLog,
) -> None:
    """Clover answered, but with a pair no store can take (a space in a token): the
    operator reads which merchant, that it was Clover's token pair, and what is wrong with
    it, never the token itself."""
    pair = CloverTokens.from_object({"access_token": "tok en-SECRET", "refresh_token": "r-1"})
    finish_install(_callback(), _deps(exchanger=MemoryExchanger(pair)), reference="ref-2")
    [line] = log.lines("Clover did not answer the code exchange")
    assert line["merchant_id"] == MERCHANT
    assert line["error"].startswith(f"merchant {MERCHANT}: Clover's token pair: ")
    assert "SECRET" not in line["error"]


def test_a_held_lock_is_waited_for_eight_seconds_in_fifths() -> None:
    installs = Installs(busy_for=1000)
    deps = _deps(installs=installs)
    assert finish_install(_callback(), deps, reference="r").status == 409
    assert isinstance(deps.clock, Clock)
    assert deps.clock.slept == [0.2] * 40  # until eight seconds have passed, not after
    assert [c[0] for c in installs.calls] == ["lock"] * (len(deps.clock.slept) + 1)


def test_a_lock_given_back_while_waiting_is_taken() -> None:
    installs = Installs(busy_for=3)
    deps = _deps(installs=installs)
    assert finish_install(_callback(), deps, reference="r").title == "esl-sync is connected"
    assert isinstance(deps.clock, Clock)
    assert deps.clock.slept == [0.2, 0.2, 0.2]
    locks = [c for c in installs.calls if c[0] == "lock"]
    assert [c[2] for c in locks] == [NOW_MS, NOW_MS + 200, NOW_MS + 400, NOW_MS + 600]


@pytest.mark.parametrize(("length", "reason"), [(2048, None), (2049, "bad_request")])
def test_a_code_may_be_2048_characters_long(length: int, reason: str | None) -> None:
    page = finish_install(_callback(code="c" * length), _deps(), reference="ref-1")
    assert page.reference == ("ref-1" if reason is None else f"ref-1 ({reason})")


def test_a_callback_without_a_client_id_is_taken_as_this_app_s() -> None:
    query = _callback().replace("&client_id=app-id", "")
    assert finish_install(query, _deps(), reference="r").title == "esl-sync is connected"


def test_each_callback_holds_the_lock_under_an_owner_of_its_own() -> None:
    """So a callback can only give back the lock it took."""
    first, second = Installs(), Installs()
    finish_install(_callback(), _deps(installs=first), reference="r")
    finish_install(_callback(), _deps(installs=second), reference="r")
    assert isinstance(first.owner, str)
    assert len(first.owner) >= 16
    assert first.owner != second.owner


@pytest.mark.parametrize(
    ("left_out", "reason"), [("code", "no_code"), ("state", "state_malformed")]
)
def test_a_callback_without_a_code_or_state_is_refused_by_name(left_out: str, reason: str) -> None:
    query = "&".join(p for p in _callback().split("&") if not p.startswith(f"{left_out}="))
    installs, exchanger = Installs(), MemoryExchanger()
    page = finish_install(query, _deps(installs=installs, exchanger=exchanger), reference="ref-1")
    assert page == REFUSED[reason]
    assert (installs.calls, exchanger.calls) == ([], [])
