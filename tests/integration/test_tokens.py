"""Clover OAuth tokens that refresh themselves safely (issue 6): the real poller, moto
(DynamoDB, KMS), Postgres and the Clover simulator's single-use refresh tokens."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import boto3
import psycopg
import pytest

from devkit.catalog import gas_station_catalog
from devkit.clover_sim import CloverSimulator
from devkit.demo import expected_labels
from devkit.emf import metric_values
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, HIPOINK_SIGN, LocalStack
from esl_sync import runtime
from esl_sync.clover.errors import CloverAuthError
from esl_sync.credentials import CloverTokens, StoredTokens
from esl_sync.ports import TokenStore
from esl_sync_ops.cli import main


def clover_of(stack: LocalStack) -> CloverSimulator:
    assert stack.clover is not None
    return stack.clover


def add(stack: LocalStack, merchant_id: str, token: str | None = None) -> None:
    """A gas station with a plain token (its own catalog: the seed is in its id)."""
    stack.add_merchant(
        merchant_id,
        token or f"plain-{merchant_id}",
        f"STORE-{merchant_id[-2:]}",
        items=gas_station_catalog(12, seed=int(merchant_id[-2:])),
    )


def in_step(stack: LocalStack, merchant_id: str) -> bool:
    assert stack.hipoink is not None
    shelf = stack.hipoink.labels(f"STORE-{merchant_id[-2:]}")
    return shelf == expected_labels(clover_of(stack).items(merchant_id))


def poll_lines(stack: LocalStack, merchant_id: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stack.logs if line.startswith("{")]
    return [
        e
        for e in entries
        if e.get("message") == "poll finished" and e.get("merchant_id") == merchant_id
    ]


def test_five_workers_needing_an_expired_token_make_one_refresh(stack: LocalStack) -> None:
    clover = clover_of(stack)
    add(stack, "MTOKEN000001")
    expired = stack.use_token_pair("MTOKEN000001", access_lifetime_seconds=0)
    provider = runtime.token_keeper()
    start = threading.Barrier(5)

    def worker() -> StoredTokens | None:
        start.wait()
        return provider.access_token("MTOKEN000001", clover.base_url)

    with ThreadPoolExecutor(5) as pool:
        results = [f.result() for f in [pool.submit(worker) for _ in range(5)]]

    assert clover.request_count(endpoint="refresh") == 1
    fresh = clover.access_token("MTOKEN000001")
    assert fresh != expired.access_token.get_secret_value()
    assert {r.tokens.access_token.get_secret_value() for r in results if r} == {fresh}
    assert len({r.generation for r in results if r}) == 1
    # … and they go on with it: the poll reads the catalog with the new token, no refresh.
    stack.run_cycle()
    assert in_step(stack, "MTOKEN000001")
    assert clover.request_count(endpoint="refresh") == 1


def test_a_token_close_to_expiry_is_refreshed_before_the_poll_and_a_401_once_after(
    stack: LocalStack,
) -> None:
    clover = clover_of(stack)
    add(stack, "MTOKEN000002")
    stack.use_token_pair("MTOKEN000002", access_lifetime_seconds=120)  # inside the 300 s margin

    stack.run_cycle()

    assert clover.request_count(endpoint="refresh") == 1
    assert in_step(stack, "MTOKEN000002")
    assert metric_values(stack.logs)["TokenRefreshes"] == [1]
    # A 401 before the token's time (revoked early): one refresh, one retry, no re-auth.
    clover.fail_next(401, merchant_id="MTOKEN000002")
    item = clover.items("MTOKEN000002")[0]
    clover.update_item("MTOKEN000002", item["id"], name="Renamed after a 401")

    stack.run_cycle()

    assert clover.request_count(endpoint="refresh") == 2
    assert in_step(stack, "MTOKEN000002")
    assert poll_lines(stack, "MTOKEN000002")[-1]["status"] == "ok"
    assert runtime.state_store().load("MTOKEN000002").auth_state == "ok"


def test_a_revoked_refresh_token_marks_only_its_merchant_until_new_tokens_come(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clover = clover_of(stack)
    for merchant_id in ("MTOKEN000031", "MTOKEN000032", "MTOKEN000033"):
        add(stack, merchant_id)
    stack.use_token_pair("MTOKEN000031", access_lifetime_seconds=0)
    stack.use_token_pair("MTOKEN000032", access_lifetime_seconds=0)  # MTOKEN000033: plain
    clover.revoke_refresh_token("MTOKEN000031")

    cycle = stack.run_cycle()

    assert (cycle.polls.records, cycle.polls.failures) == (3, 0)
    revoked = runtime.state_store().load("MTOKEN000031")
    assert revoked.auth_state == "needs_reauth"
    assert revoked.last_failure_class == "CloverRefreshRejected"
    assert stack.products("MTOKEN000031") == []
    assert in_step(stack, "MTOKEN000032")
    assert in_step(stack, "MTOKEN000033")
    assert metric_values(stack.logs)["NeedsReauth"] == [1]
    assert poll_lines(stack, "MTOKEN000031")[-1]["status"] == "needs_reauth"

    requests = clover.request_count("MTOKEN000031")
    stack.run_cycle()
    assert clover.request_count("MTOKEN000031") == requests  # not polled while marked

    # The merchant authorizes the app again; the operator stores the new pair.
    pair = clover.issue_tokens("MTOKEN000031")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(pair)))
    args = ["merchants", "add", "MTOKEN000031", "--store-code", "STORE-31", "--token-pair-stdin"]
    assert main(args) == 0
    assert "saved with its token pair" in capsys.readouterr().out
    assert runtime.state_store().load("MTOKEN000031").auth_state == "ok"
    stack.run_cycle()
    assert in_step(stack, "MTOKEN000031")


def test_a_401_on_an_old_token_never_marks_over_tokens_stored_meanwhile(
    make_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", make_database())
    with LocalStack(settings={"CLOVER_PAGE_SIZE": "5"}) as stack:
        clover = clover_of(stack)
        add(stack, "MTOKEN000041", token="old-plain-token")
        store = runtime.state_store()

        def operator_stores_a_new_token(page: int) -> None:
            if page == 0:  # the poll is reading page 0 with the old token
                clover.set_token("MTOKEN000041", "new-plain-token")
                store.write_token("MTOKEN000041", "new-plain-token")

        clover.before_list_page = operator_stores_a_new_token
        stack.run_cycle()  # page 1 gets a 401: the poll retries with the new token

        assert store.load("MTOKEN000041").auth_state == "ok"
        assert in_step(stack, "MTOKEN000041")
        assert poll_lines(stack, "MTOKEN000041")[-1]["status"] == "ok"

        # The narrowest window: the new token is stored between the poll's last read of
        # the tokens and its mark. The mark is conditional on the generation it read.
        rejected = store.load_tokens("MTOKEN000041")
        assert rejected is not None
        keeper = replace(runtime.token_keeper(), store=StoresTokenBeforeMarking(store))
        renewed = keeper.renew(
            "MTOKEN000041",
            clover.base_url,
            rejected,
            CloverAuthError("HTTP 401", merchant_id="MTOKEN000041", status=401),
        )
        assert renewed.tokens.access_token.get_secret_value() == "newest-plain-token"
        assert not store.mark_needs_reauth("MTOKEN000041", generation=rejected.generation)
        assert store.load("MTOKEN000041").auth_state == "ok"


class StoresTokenBeforeMarking:
    """The state store, with an operator storing a token just before a mark arrives."""

    def __init__(self, real: TokenStore) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def mark_needs_reauth(self, merchant_id: str, *, generation: int) -> bool:
        self._real.write_token(merchant_id, "newest-plain-token")
        return self._real.mark_needs_reauth(merchant_id, generation=generation)


def test_a_token_stored_before_token_pairs_existed_still_works(stack: LocalStack) -> None:
    add(stack, "MTOKEN000051", token="legacy-plain-token")
    # Rewrite the item as the earlier code left it: the bare token encrypted, no generation.
    kms = boto3.client("kms")
    ciphertext = kms.encrypt(
        KeyId=stack.env["STATE_KEY_ID"],
        Plaintext=b"legacy-plain-token",
        EncryptionContext={"merchant_id": "MTOKEN000051"},
    )["CiphertextBlob"]
    boto3.client("dynamodb").put_item(
        TableName=stack.env["STATE_TABLE_NAME"],
        Item={"merchant_id": {"S": "MTOKEN000051"}, "token_ciphertext": {"B": ciphertext}},
    )

    stored = runtime.state_store().load_tokens("MTOKEN000051")

    assert stored == StoredTokens(CloverTokens.plain("legacy-plain-token"), generation=0)
    stack.run_cycle()
    assert in_step(stack, "MTOKEN000051")


def test_no_token_refresh_token_sign_or_auth_code_reaches_a_log_or_postgres(
    stack: LocalStack,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every kind of secret goes through every path that could log it: refreshes, a
    refused refresh, 401s, CLI onboarding, status, webhooks with right and wrong codes.

    Every logger is captured at DEBUG but botocore's, whose DEBUG dumps each AWS request
    and answer whole (KMS plaintexts included) and which nothing here ever turns on.
    """
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="botocore")
    clover = clover_of(stack)
    secrets = {CLOVER_WEBHOOK_AUTH, HIPOINK_SIGN, "plain-token-Zq81x"}
    add(stack, "MTOKEN000061", token="plain-token-Zq81x")
    add(stack, "MTOKEN000062")
    add(stack, "MTOKEN000063")
    for merchant_id in ("MTOKEN000062", "MTOKEN000063"):
        tokens = stack.use_token_pair(merchant_id, access_lifetime_seconds=0)
        secrets |= {tokens.access_token.get_secret_value(), _refresh_of(tokens)}
    clover.revoke_refresh_token("MTOKEN000063")
    stack.send_webhook({"verificationCode": "0c8d1a4e-5b8f-4e0b-9a53-2f1d0e7c6b5a"}, None)
    event = {
        "appId": "A",
        "merchants": {"MTOKEN000061": [{"objectId": "I:X", "type": "DELETE", "ts": 1}]},
    }
    stack.send_webhook(event, "a-wrong-auth-code")
    stack.send_webhook(event, CLOVER_WEBHOOK_AUTH)
    clover.fail_next(401, merchant_id="MTOKEN000061")  # a plain token refused: needs re-auth
    stack.run_cycle()
    pair = clover.issue_tokens("MTOKEN000061")
    secrets |= {pair["access_token"], pair["refresh_token"]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(pair)))
    main(["merchants", "add", "MTOKEN000061", "--store-code", "S", "--token-pair-stdin"])
    main(["status"])
    stack.run_cycle()
    for merchant_id in ("MTOKEN000061", "MTOKEN000062"):
        stored = runtime.state_store().load_tokens(merchant_id)
        assert stored is not None
        secrets |= {stored.tokens.access_token.get_secret_value(), _refresh_of(stored.tokens)}
    assert clover.request_count(endpoint="refresh") == 2  # one refused, one done

    captured = capsys.readouterr()
    lines = [*stack.logs, *(r.getMessage() for r in caplog.records), captured.out, captured.err]
    lines += [json.dumps(r.__dict__, default=str) for r in caplog.records]
    assert _leaks([f"x{CLOVER_WEBHOOK_AUTH}x"], secrets), "the check itself must be able to fail"
    assert len(secrets) == 11  # 3 + the pairs of 62, 63, re-authorized 61, refreshed 62
    assert _leaks(lines, secrets) == []
    assert _leaks(_postgres_rows(stack), secrets) == []


def _refresh_of(tokens: CloverTokens) -> str:
    assert tokens.refresh_token is not None
    return tokens.refresh_token.get_secret_value()


def _leaks(lines: list[str], secrets: set[str]) -> list[str]:
    return [f"{secret[:4]}…" for line in lines for secret in secrets if secret in line]


def _postgres_rows(stack: LocalStack) -> list[str]:
    """Every row of every table, as text."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        return [
            str(row)
            for table in tables
            for row in conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - catalog names
        ]


SEEN = "Q7xQ7"  # in every token below: no log line may hold it
UNUSABLE_REFRESHES = {
    "a line break in the access token": {"access_token": f"{SEEN}\nX-Injected: 1"},
    "a NUL in the refresh token": {"refresh_token": f"{SEEN}\u0000more"},
    "tokens KMS cannot encrypt": {"access_token": SEEN + "A" * 5_000},
}


@pytest.mark.parametrize("change", list(UNUSABLE_REFRESHES))
def test_a_refreshed_pair_that_cannot_be_sent_or_stored_marks_the_merchant(
    stack: LocalStack, change: str
) -> None:
    """The old refresh token is spent once Clover answers; a new pair no header can carry
    or KMS cannot encrypt is not stored (every poll would fail on it, or the save would):
    the merchant is marked for re-authorization, by name, and its labels stay."""
    clover = clover_of(stack)
    merchant_id = f"MTOKEN0000{70 + list(UNUSABLE_REFRESHES).index(change)}"
    add(stack, merchant_id)
    stack.run_cycle()  # on the shelf with a plain token first
    labels_before = in_step(stack, merchant_id)
    stored = stack.use_token_pair(merchant_id, access_lifetime_seconds=0)
    pair = {
        "access_token": f"{SEEN}ACCESS",
        "access_token_expiration": 1_795_867_200,
        "refresh_token": f"{SEEN}REFRESH",
        "refresh_token_expiration": 1_798_459_200,
    } | UNUSABLE_REFRESHES[change]
    clover.fail_next(200, merchant_id=merchant_id, body=json.dumps(pair))
    logged = len(stack.logs)

    cycle = stack.run_cycle()

    assert (cycle.polls.records, cycle.polls.failures) == (1, 0)
    state = runtime.state_store().load(merchant_id)
    assert state.auth_state == "needs_reauth"
    assert state.last_failure_class == "CloverBadResponse"
    kept = runtime.token_keeper().store.load_tokens(merchant_id)
    assert kept is not None
    assert kept.tokens == stored  # the unusable pair was not stored
    assert kept.needs_reauth
    assert poll_lines(stack, merchant_id)[-1]["status"] == "needs_reauth"
    assert metric_values(stack.logs[logged:])["NeedsReauth"] == [1]
    assert not [line for line in stack.logs[logged:] if SEEN in line]
    assert labels_before
    assert in_step(stack, merchant_id)  # its labels stay as they were
