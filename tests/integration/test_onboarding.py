"""Merchants onboard themselves (issue 14): Clover's app install through the real onboarding
function (as the HTTP API calls it), the Clover simulator's authorize page and token
endpoint, moto and Postgres, to the merchant's first labels; every way a callback can be
wrong is a named 4xx page that stores nothing, and a code is exchanged once however often
its callback arrives.

One stack serves the module (each test has merchants of its own); its exit checks that no
log line or page held a token, code or secret, and that every AWS call was granted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.sql import SQL, Identifier

from devkit.catalog import gas_station_catalog
from devkit.clover_sim import CloverSimulator
from devkit.demo import expected_labels
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import (
    API_BASE_URL,
    CLOVER_APP_CLIENT_SECRET,
    CLOVER_SITE_URL,
    CLOVER_WEBHOOK_AUTH,
    SECRET_VARIABLES,
    HttpAnswer,
    LocalStack,
    http_get_event,
)
from esl_sync import oauth_state
from esl_sync.onboarding import REFUSALS
from esl_sync.store import secrets
from esl_sync.web import SECURITY_HEADERS
from tests.http_events import MALFORMED_EVENTS

REDIRECT_URI = f"{CLOVER_SITE_URL}/oauth/callback"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(make_database: Callable[[], str]) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", make_database())
        with LocalStack() as local:
            yield local


def sims(stack: LocalStack) -> tuple[CloverSimulator, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def new_merchant(stack: LocalStack, merchant_id: str, items: int = 30) -> None:
    """A business on Clover that has not installed the app (its token is nobody's)."""
    clover, _ = sims(stack)
    catalog = gas_station_catalog(items, seed=zlib.crc32(merchant_id.encode()))
    clover.add_merchant(merchant_id, f"unused-{merchant_id}", catalog)


def merchant_row(stack: LocalStack, merchant_id: str) -> dict[str, Any] | None:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT store_code, clover_base_url, active FROM merchants WHERE merchant_id = %s",
            (merchant_id,),
        ).fetchone()
    return (
        None if row is None else dict(zip(("store_code", "base_url", "active"), row, strict=True))
    )


def state_item(merchant_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        boto3.client("dynamodb")
        .get_item(TableName="StateTable", Key={"merchant_id": {"S": merchant_id}})
        .get("Item")
    )
    return item


def exchanges(stack: LocalStack, merchant_id: str) -> int:
    clover, _ = sims(stack)
    return clover.request_count(merchant_id=merchant_id, endpoint="token")


def reason(page: HttpAnswer | None) -> str:
    """The refusal's name, as the page gives it beside the reference."""
    assert page is not None
    return page.body.rsplit("(", 1)[1].split(")", 1)[0]


def title(page: HttpAnswer | None) -> str:
    assert page is not None
    return page.body.split("<title>", 1)[1].split("</title>", 1)[0]


def state_of(install_location: str | None) -> str:
    return parse_qs(urlsplit(install_location or "").query)["state"][0]


def status_row(stack: LocalStack, merchant_id: str) -> dict[str, Any]:
    [row] = [
        r for r in json.loads(stack.cli("status", "--json")) if r["merchant_id"] == merchant_id
    ]
    return dict(row)


def authorize(stack: LocalStack, merchant_id: str, state: str | None) -> str:
    """Clover's authorize page approving ``merchant_id``: the callback URL it sends back."""
    clover, _ = sims(stack)
    clover.signed_in_merchant = merchant_id
    query = {"client_id": clover.client_id, "redirect_uri": REDIRECT_URI}
    if state is not None:
        query["state"] = state
    answer = httpx.get(f"{clover.base_url}/oauth/v2/authorize?{urlencode(query)}")
    assert answer.status_code == 302
    return answer.headers["location"]


CLAIM = frozenset({"oauth_state_issued_ms", "oauth_state_nonce"})
"""What a callback writes before it exchanges the code: the mark of its sign-in used (so
a replay never exchanges again); a refusal after the exchange leaves exactly this."""


def world(stack: LocalStack, *merchant_ids: str) -> dict[str, Any]:
    """Everything an install could write of these merchants: their state items, merchant
    rows, store assignments and products; and how many KMS calls any function made."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        postgres = {
            merchant_id: [
                conn.execute(
                    SQL("SELECT * FROM {} WHERE merchant_id = %s").format(Identifier(table)),
                    (merchant_id,),
                ).fetchall()
                for table in ("merchants", "store_assignments", "products")
            ]
            for merchant_id in merchant_ids
        }
    kms = sum(n for action, n in stack.aws_calls.counts.items() if action.startswith("kms:"))
    return {
        "dynamodb": {merchant_id: state_item(merchant_id) for merchant_id in merchant_ids},
        "postgres": postgres,
        "kms_calls": kms,
    }


def without_claim(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A :func:`world` with each state item's claim (and key) left out."""
    items = {
        merchant_id: {k: v for k, v in (item or {}).items() if k not in {*CLAIM, "merchant_id"}}
        for merchant_id, item in snapshot["dynamodb"].items()
    }
    return {**snapshot, "dynamodb": items}


def assert_nothing_stored(
    stack: LocalStack, before: dict[str, Any], *, claimed: bool = False
) -> None:
    """DynamoDB, Postgres and KMS as ``before`` (a :func:`world`): no merchant row, no
    token, no KMS call; after the sign-in's claim, the claim is the one difference."""
    merchant_ids = tuple(before["dynamodb"])
    after = world(stack, *merchant_ids)
    if not claimed:
        assert after == before
        return
    assert without_claim(after) == without_claim(before)
    for merchant_id in merchant_ids:
        assert set(after["dynamodb"][merchant_id] or {}) >= CLAIM


def labels_match(stack: LocalStack, merchant_id: str, store: str) -> bool:
    """The store's labels are exactly what the merchant's Clover catalog says."""
    clover, hipoink = sims(stack)
    expected = expected_labels(clover.items(merchant_id))
    shown = hipoink.labels(store)
    return (
        bool(expected)
        and shown.keys() == expected.keys()
        and all({k: shown[pc].get(k) for k in record} == record for pc, record in expected.items())
    )


# ---------------------------------------------------------------- install to first labels


def test_a_merchant_installs_the_app_and_reaches_its_first_labels(stack: LocalStack) -> None:
    clover, hipoink = sims(stack)
    new_merchant(stack, "MINSTALL0001")
    hipoink.add_store("STORE-INST-1")
    assert "kept for its install" in stack.cli(
        "merchants", "set-store", "MINSTALL0001", "STORE-INST-1"
    )

    done = stack.install_app("MINSTALL0001")

    # The site URL sends the browser to Clover with the app's id and a signed state.
    assert done.install.status == 302
    authorize_url = urlsplit(done.install.location or "")
    assert f"{authorize_url.scheme}://{authorize_url.netloc}" == clover.base_url
    sent = parse_qs(authorize_url.query)
    assert sent["client_id"] == [clover.client_id]
    assert sent["redirect_uri"] == [REDIRECT_URI]
    assert sent["state"][0].startswith("s1.MINSTALL0001.")
    assert done.authorize_status == 302
    # The callback: connected, one exchange, the pair stored encrypted, the merchant registered.
    assert done.callback is not None
    assert (done.callback.status, title(done.callback)) == (200, "esl-sync is connected")
    assert exchanges(stack, "MINSTALL0001") == 1
    assert merchant_row(stack, "MINSTALL0001") == {
        "store_code": "STORE-INST-1",
        "base_url": clover.base_url,
        "active": True,
    }
    item = state_item("MINSTALL0001")
    assert item is not None
    access_token = clover.access_token("MINSTALL0001")
    assert access_token is not None
    assert access_token.encode() not in json.dumps(item, default=repr).encode()
    plaintext = boto3.client("kms").decrypt(
        CiphertextBlob=item["token_ciphertext"]["B"],
        EncryptionContext={"merchant_id": "MINSTALL0001"},
    )["Plaintext"]
    assert json.loads(plaintext)["access_token"] == access_token
    assert item["auth_state"] == {"S": "ok"}
    assert item["token_generation"] == {"N": "1"}
    # ... and the first poll ran at once: every label matches the catalog.
    assert (done.polls.records, done.polls.failures) == (1, 0)
    assert done.labels.records >= 1
    assert labels_match(stack, "MINSTALL0001", "STORE-INST-1")
    # Every page carries the security headers; none holds the code or a token.
    code = parse_qs(urlsplit(done.callback_url or "").query)["code"][0]
    for page in (done.install, done.callback):
        for name, value in SECURITY_HEADERS.items():
            assert page.headers[name.lower()] == value
        assert code not in page.body
        assert access_token not in page.body
    assert stack.leaked_secrets() == 0
    # ... and the check would see one: the code, the client secret, the state's key.
    for secret in (code, CLOVER_APP_CLIENT_SECRET, stack.env["CLOVER_OAUTH_STATE_KEY"]):
        stack.pages.append(f"a page that shows {secret}")
        assert stack.leaked_secrets() == 1
        stack.pages.pop()


def test_without_a_store_code_it_awaits_an_operator_then_polls_at_once(
    stack: LocalStack,
) -> None:
    _, hipoink = sims(stack)
    new_merchant(stack, "MAWAIT000001")

    done = stack.install_app("MAWAIT000001")

    assert done.callback is not None
    assert done.callback.status == 200
    assert "awaits its setup" in done.callback.body
    assert merchant_row(stack, "MAWAIT000001") == {
        "store_code": None,
        "base_url": sims(stack)[0].base_url,
        "active": True,
    }
    assert done.polls.records == 0  # nothing to send labels to yet
    # The dispatcher skips it and counts it; status shows it.
    before = len(stack.logs)
    stack.run_cycle()
    logged = [json.loads(line) for line in stack.logs[before:] if line.startswith("{")]
    assert {"merchant_id": "MAWAIT000001", "reason": "no Hipoink store code"}.items() <= next(
        e for e in logged if e.get("merchant_id") == "MAWAIT000001"
    ).items()
    assert "MAWAIT000001" not in {
        e.get("merchant_id") for e in logged if e.get("message") == "poll finished"
    }
    assert metric_sums(stack.logs[before:])["MerchantsAwaitingStoreCode"] >= 1
    row = status_row(stack, "MAWAIT000001")
    assert (row["awaiting_store_code"], row["fresh"]) == (True, None)
    # The operator names its store: its poll is queued at once, the labels follow.
    hipoink.add_store("STORE-AWAIT")
    assert "poll of MAWAIT000001 queued" in stack.cli(
        "merchants", "set-store", "MAWAIT000001", "STORE-AWAIT"
    )
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")
    assert labels_match(stack, "MAWAIT000001", "STORE-AWAIT")


# ---------------------------------------------------------------- refusals store nothing


def test_a_replayed_callback_is_refused_and_never_exchanged_twice(stack: LocalStack) -> None:
    new_merchant(stack, "MREPLAY00001")
    done = stack.install_app("MREPLAY00001", deliver=False)
    assert done.callback is not None
    assert done.callback_url is not None
    assert done.callback.status == 200
    before = world(stack, "MREPLAY00001")
    assert (before["dynamodb"]["MREPLAY00001"] or {})["token_generation"] == {"N": "1"}

    for _ in range(2):  # the back button, a reload, a replay
        again = stack.open(done.callback_url)
        assert (again.status, reason(again)) == (400, "state_used")
    assert exchanges(stack, "MREPLAY00001") == 1
    assert_nothing_stored(stack, before)  # the tokens and the merchant as the first one left them


def test_an_expired_state_is_refused(stack: LocalStack) -> None:
    new_merchant(stack, "MEXPIRED0001")
    key = stack.env["CLOVER_OAUTH_STATE_KEY"].encode()
    eleven_minutes_ago = int(time.time() * 1000) - 11 * 60_000
    state, _ = oauth_state.issue(key, "MEXPIRED0001", eleven_minutes_ago)
    before = world(stack, "MEXPIRED0001")

    page = stack.open(authorize(stack, "MEXPIRED0001", state))

    assert (page.status, reason(page)) == (400, "state_expired")
    assert "This sign-in expired" in page.body
    assert exchanges(stack, "MEXPIRED0001") == 0
    assert_nothing_stored(stack, before)


FORGERIES: dict[str, tuple[Callable[[str, str], str | None], str]] = {
    "another key": (
        lambda _state, merchant: oauth_state.issue(b"k" * 32, merchant, int(time.time() * 1000))[0],
        "state_forged",
    ),
    "a changed MAC": (
        lambda state, _m: state[:-2] + ("BB" if state.endswith("AA") else "AA"),
        "state_forged",
    ),
    "a later issue time": (lambda state, _m: state.replace(".17", ".18", 1), "state_forged"),
    "no state": (lambda _state, _m: None, "state_malformed"),
    "garbage": (lambda _state, merchant: f"s1.{merchant}.x", "state_malformed"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_state_is_refused(stack: LocalStack, forgery: str) -> None:
    forge, expected = FORGERIES[forgery]
    merchant = f"MFORGED{list(FORGERIES).index(forgery):05d}"
    new_merchant(stack, merchant)
    state = state_of(stack.install_app(merchant, approve=False).install.location)
    before = world(stack, merchant)

    page = stack.open(authorize(stack, merchant, forge(state, merchant)))

    assert (page.status, reason(page)) == (400, expected)
    assert title(page) == ("This sign-in was not started by esl-sync")
    assert exchanges(stack, merchant) == 0
    assert_nothing_stored(stack, before)


def test_a_merchant_id_that_is_not_the_states_is_refused(stack: LocalStack) -> None:
    """The browser's Clover session approves another business than the one that started."""
    new_merchant(stack, "MSTARTED0001")
    new_merchant(stack, "MAPPROVED001")
    before = world(stack, "MSTARTED0001", "MAPPROVED001")

    done = stack.install_app("MSTARTED0001", signed_in="MAPPROVED001")

    assert done.callback is not None
    assert (done.callback.status, reason(done.callback)) == (400, "merchant_mismatch")
    assert exchanges(stack, "MAPPROVED001") == exchanges(stack, "MSTARTED0001") == 0
    assert_nothing_stored(stack, before)


def test_a_wrong_app_secret_is_refused_by_clover_and_stores_nothing(stack: LocalStack) -> None:
    clover, _ = sims(stack)
    new_merchant(stack, "MBADSECRET01")
    logged, before = len(stack.logs), world(stack, "MBADSECRET01")
    clover.client_secret = "the-secret-clover-has-now"  # rotated in Clover, not in our secret
    try:
        done = stack.install_app("MBADSECRET01")
    finally:
        clover.client_secret = CLOVER_APP_CLIENT_SECRET

    assert done.callback is not None
    assert (done.callback.status, reason(done.callback)) == (400, "code_refused")
    assert "Clover refused the approval" in done.callback.body
    assert exchanges(stack, "MBADSECRET01") == 1  # once, refused
    assert metric_sums(stack.logs[logged:])["OnboardingExchangesRefused"] == 1
    assert_nothing_stored(stack, before, claimed=True)


def test_a_new_app_in_the_app_secret_is_used_for_the_exchange_once_the_cache_expires(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's id and secret are read through the secret cache (README: used within five
    minutes of a change), but the exchange client kept the id it was built with for the
    life of the process: after the secret named another app, a warm onboarding function
    sent merchants to approve the new app and then exchanged their codes with the old
    app's id and the new app's secret, and every install was refused by Clover."""
    clover, _ = sims(stack)
    new_merchant(stack, "MAPPBEFORE01")
    before = stack.install_app("MAPPBEFORE01", deliver=False).callback
    assert before is not None
    assert before.status == 200  # exchanged: the exchange client is built
    arn = stack.env["CLOVER_APP_SECRET_ARN"]
    manager = boto3.client("secretsmanager")
    old_id, old_secret = clover.client_id, clover.client_secret
    new_merchant(stack, "MAPPAFTER001")
    try:
        clover.client_id, clover.client_secret = "sim-clover-app-2", "the-second-apps-secret"
        manager.put_secret_value(
            SecretId=arn,
            SecretString=json.dumps(
                {"client_id": clover.client_id, "client_secret": clover.client_secret}
            ),
        )
        monkeypatch.setattr(secrets, "SECRET_MAX_AGE_SECONDS", 0)  # five minutes on
        done = stack.install_app("MAPPAFTER001", deliver=False)
    finally:
        clover.client_id, clover.client_secret = old_id, old_secret
        manager.put_secret_value(
            SecretId=arn,
            SecretString=json.dumps({"client_id": old_id, "client_secret": old_secret}),
        )
        secrets.forget_secret(arn)

    assert done.callback is not None
    assert (done.callback.status, title(done.callback)) == (200, title(before))
    assert exchanges(stack, "MAPPAFTER001") == 1


SEEN = "Q7xQ7"  # in every token below: no log line may hold it
UNUSABLE_PAIRS = {
    "a line break in the access token": {"access_token": f"{SEEN}\nX-Injected: 1"},
    "a NUL in the refresh token": {"refresh_token": f"{SEEN}\u0000more"},
    "a space in the access token": {"access_token": f"{SEEN} ACCESS"},
    "a non-ASCII access token": {"access_token": f"{SEEN}\u00c9"},
    "tokens KMS cannot encrypt (5,000 bytes)": {"access_token": SEEN + "A" * 5_000},
    "a megabyte refresh token": {"refresh_token": SEEN + "R" * 1_000_000},
}


@pytest.mark.parametrize("change", list(UNUSABLE_PAIRS))
def test_a_token_pair_that_cannot_be_sent_or_stored_is_refused_and_stores_no_tokens(
    stack: LocalStack, change: str
) -> None:
    """Clover's answer to the exchange is held to what stored tokens must be (printable
    ASCII without spaces, within what KMS encrypts) before anything is stored: otherwise
    the merchant was told "connected" and every poll failed on its token."""
    clover, hipoink = sims(stack)
    merchant_id = f"MUNUSABLE{list(UNUSABLE_PAIRS).index(change):03d}"
    new_merchant(stack, merchant_id)
    hipoink.add_store(f"S-{merchant_id}")
    stack.cli("merchants", "set-store", merchant_id, f"S-{merchant_id}")
    pair = {
        "access_token": f"{SEEN}ACCESS",
        "access_token_expiration": 1_795_867_200,
        "refresh_token": f"{SEEN}REFRESH",
        "refresh_token_expiration": 1_798_459_200,
    } | UNUSABLE_PAIRS[change]
    clover.fail_next(200, merchant_id=merchant_id, body=json.dumps(pair))
    logged, before = len(stack.logs), world(stack, merchant_id)

    done = stack.install_app(merchant_id)

    assert done.callback is not None
    assert (done.callback.status, title(done.callback)) == (502, "Clover did not answer")
    assert reason(done.callback) == "clover_unavailable"
    assert_nothing_stored(stack, before, claimed=True)
    assert (done.polls.records, done.labels.records) == (0, 0)
    new = stack.logs[logged:]
    assert not [line for line in new if "Traceback" in line or "answered 503" in line]
    assert not [line for line in [*new, done.callback.body] if SEEN in line]
    [line] = [json.loads(e) for e in new if "did not answer the code exchange" in e]
    assert line["merchant_id"] == merchant_id
    assert line["error"].startswith(f"merchant {merchant_id}: Clover's token pair: ")


def test_a_code_used_before_is_refused_and_stores_nothing(stack: LocalStack) -> None:
    clover, _ = sims(stack)
    new_merchant(stack, "MCODEUSED001")
    location = stack.install_app("MCODEUSED001", approve=False).install.location
    callback = authorize(stack, "MCODEUSED001", state_of(location))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    spent = httpx.post(
        f"{clover.base_url}/oauth/v2/token",
        json={"client_id": clover.client_id, "client_secret": clover.client_secret, "code": code},
    )
    assert spent.status_code == 200  # someone else exchanged it first
    before = world(stack, "MCODEUSED001")

    page = stack.open(callback)

    assert (page.status, reason(page)) == (400, "code_refused")
    assert_nothing_stored(stack, before, claimed=True)


# ---------------------------------------------------------------- races


RACE = """
import importlib.util, json, sys
from pathlib import Path
repo, event = Path(sys.argv[1]), json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("app", repo / "functions" / "onboarding" / "app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
class Context:
    function_name = "OnboardingFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:OnboardingFunction"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000001"
    def get_remaining_time_in_millis(self):
        return 25_000
print("ready", flush=True)
sys.stdin.readline()
answer = module.lambda_handler(event, Context())
print(json.dumps({"status": answer["statusCode"], "body": answer["body"]}))
"""


def race(stack: LocalStack, urls: list[str]) -> list[tuple[int, str]]:
    """Each callback in a process of its own (a Lambda instance each), all imported and
    started at one signal."""
    env = {k: v for k, v in {**os.environ, **stack.env}.items() if k not in SECRET_VARIABLES}
    children = []
    for url in urls:
        parts = urlsplit(url)
        event = json.dumps(http_get_event(parts.path, parts.query))
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(REPO), event],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    answers = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        stack.pages.append(out + err)  # checked for secrets when the stack closes
        answer = json.loads(out.strip().splitlines()[-1])
        answers.append((int(answer["status"]), str(answer["body"])))
    return answers


def test_two_callbacks_racing_for_one_merchant_make_one_exchange(stack: LocalStack) -> None:
    """A double click (one callback twice) and two sign-ins of one merchant at once (two
    tabs, each approved): whichever comes first exchanges, the other is refused unexchanged."""
    new_merchant(stack, "MRACE0000001")
    tabs = [stack.install_app("MRACE0000001", approve=False) for _tab in range(2)]
    callbacks = [authorize(stack, "MRACE0000001", state_of(tab.install.location)) for tab in tabs]

    answers = race(stack, [callbacks[0], callbacks[0], callbacks[1]])

    assert sorted(status for status, _ in answers)[0] == 200
    refused = [body for status, body in answers if status != 200]
    # Refused unexchanged: the sign-in already used, or, on a machine slow enough that the
    # first exchange holds the lock past LOCK_WAIT_SECONDS, "busy" (both say start again).
    assert len(refused) == 2
    assert all("(state_used)" in body or "(busy)" in body for body in refused), refused
    assert exchanges(stack, "MRACE0000001") == 1
    item = state_item("MRACE0000001") or {}
    assert item["token_generation"] == {"N": "1"}
    assert "refresh_lock_owner" not in item  # given back


# ---------------------------------------------------------------- uninstall, reinstall


def test_an_uninstall_stops_polling_and_a_reinstall_resumes_it(stack: LocalStack) -> None:
    clover, hipoink = sims(stack)
    new_merchant(stack, "MUNINSTALL01")
    hipoink.add_store("STORE-UNINST")
    stack.cli("merchants", "set-store", "MUNINSTALL01", "STORE-UNINST")
    assert stack.install_app("MUNINSTALL01").polls.failures == 0
    shown = hipoink.labels("STORE-UNINST")

    event = {"objectId": f"A:{clover.client_id}", "type": "DELETE", "ts": clover.clock_ms()}
    delivery = stack.send_webhook(
        {"appId": clover.client_id, "merchants": {"MUNINSTALL01": [event]}}, CLOVER_WEBHOOK_AUTH
    )

    assert (delivery.status, delivery.polls.records) == (202, 1)
    row = status_row(stack, "MUNINSTALL01")
    assert row["auth"] == "needs_reauth"
    assert "uninstalled" in row["last_error"]
    assert hipoink.labels("STORE-UNINST") == shown  # labels are not deleted
    requests = clover.request_count(merchant_id="MUNINSTALL01")
    stack.run_cycle()
    assert clover.request_count(merchant_id="MUNINSTALL01") == requests  # no longer polled

    again = stack.install_app("MUNINSTALL01")

    assert again.callback is not None
    assert again.callback.status == 200
    assert (again.polls.records, again.polls.failures) == (1, 0)
    assert status_row(stack, "MUNINSTALL01")["auth"] == "ok"
    assert clover.request_count(merchant_id="MUNINSTALL01", endpoint="list") > 0


# ---------------------------------------------------------------- hostile query strings


HOSTILE_EVERYWHERE = [
    "",
    "merchant_id=",
    "merchant_id=M%00X",
    "merchant_id=MHOSTILE0001&merchant_id=MOTHER000001",
    "merchant_id=" + "M" * 5000,
    "merchant_id=MHOSTILE0001%ff",
    "merchant_id=MHOSTILE0001&client_id=another-app",
    "merchant_id=\u00c9T\u00c9",
    "merchant_id=MHOSTILE0001&" + "&".join(f"x{i}=1" for i in range(40)),
    "merchant_id=MHOSTILE0001\x00",  # a NUL as sent, not escaped
    "merchant_id=MHOSTILE0001\ud800",  # a lone surrogate as the event's JSON can hold it
    "merchant_id=MHOSTILE0001%ed%a0%80",  # ... and as UTF-8 bytes (CESU-8), escaped
    "merchant_id=MHOSTILE0001&x=" + "A" * 1_000_000,  # a megabyte
    "merchant_id=MHOSTILE0001&merchant_id=",
    "merchant_id[]=MHOSTILE0001",  # wrong types: an array, an object, a number
    "merchant_id=%7B%22id%22%3A%22MHOSTILE0001%22%7D",
    "merchant_id=1.5e3",
]
HOSTILE_CALLBACK = [  # an install route ignores code and state: these are fine installs there
    "code=a&code=b&merchant_id=MHOSTILE0001&state=s",
    "code=%e2%80%ae&merchant_id=MHOSTILE0001&state=s1.MHOSTILE0001.1.x.y",
    "code=x%0d%0aSet-Cookie:a=b&merchant_id=MHOSTILE0001&state=s",
    "code=%00&merchant_id=MHOSTILE0001&state=s",
    "code=" + "c" * 1_000_000 + "&merchant_id=MHOSTILE0001&state=s",
    "code[]=a&merchant_id=MHOSTILE0001&state[]=s",
    "code=a&merchant_id=MHOSTILE0001&state=" + "s" * 300,
]


@pytest.mark.parametrize("route", ["/clover", "/clover/install", "/clover/oauth/callback"])
def test_hostile_query_strings_get_a_400_page_and_store_nothing(
    stack: LocalStack, route: str
) -> None:
    hostile = HOSTILE_EVERYWHERE + (HOSTILE_CALLBACK if route.endswith("callback") else [])
    before, logged = world(stack, "MHOSTILE0001", "MOTHER000001"), len(stack.logs)
    for query in hostile:
        page = stack.open(f"{API_BASE_URL}{route}?{query}")
        assert (page.status, reason(page) in REFUSALS) == (400, True), query[:100]
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "Traceback" not in page.body
        assert "Set-Cookie" not in json.dumps(page.headers)
        assert "\x00" not in page.body
        assert "another-app" not in page.body
    assert_nothing_stored(stack, before)
    assert not [line for line in stack.logs[logged:] if '"ERROR"' in line or "Traceback" in line]


@pytest.mark.parametrize("route", ["/clover/install", "/clover/oauth/callback"])
@pytest.mark.parametrize("change", list(MALFORMED_EVENTS))
def test_an_event_api_gateway_would_not_send_gets_a_400_page(
    stack: LocalStack, route: str, change: str
) -> None:
    """The HTTP API sends the payload 2.0 shape; anything else invoking the function gets
    a refusal page, never the resolver's exception or a 5xx."""
    event = http_get_event(route, "merchant_id=MHOSTILE0001&code=c&state=s")
    MALFORMED_EVENTS[change](event)
    before, logged = world(stack, "MHOSTILE0001"), len(stack.logs)

    answer = stack.invoke("onboarding", event)
    stack.pages.append(json.dumps(answer))  # checked for secrets when the stack closes

    assert answer["statusCode"] == 400
    assert "(bad_request)" in answer["body"]
    assert answer["headers"]["Cache-Control"] == "no-store"
    assert_nothing_stored(stack, before)
    assert not [line for line in stack.logs[logged:] if '"ERROR"' in line or "Traceback" in line]


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/clover/oauth/callback"), ("GET", "/clover/elsewhere")]
)
def test_another_method_or_path_gets_a_404_page(stack: LocalStack, method: str, path: str) -> None:
    event = http_get_event(path, "merchant_id=MHOSTILE0001")
    event["requestContext"]["http"]["method"] = method

    answer = stack.invoke("onboarding", event)

    assert (answer["statusCode"], "(not_found)" in answer["body"]) == (404, True)
    assert (
        answer["headers"]["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=st.text(max_size=300), callback=st.booleans())
def test_any_query_string_is_answered_with_a_page_never_a_crash(
    stack: LocalStack, query: str, callback: bool
) -> None:
    route = "/clover/oauth/callback" if callback else "/clover/install"
    raw = query.encode("utf-8", "surrogatepass").decode("latin-1")
    page = stack.open(f"{API_BASE_URL}{route}?{raw}")
    assert page.status in ((400,) if callback else (302, 400))
    assert "Traceback" not in page.body
