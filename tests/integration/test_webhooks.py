"""Clover webhooks as hints (issue 6), through the real webhook function as the HTTP API
calls it, moto, Postgres and both simulators. No dispatcher runs here: every poll that
happens was asked for by a webhook (or, for the first read, by hand)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from devkit.catalog import gas_station_catalog
from devkit.clover_sim import CloverSimulator
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack
from esl_sync import admin, aws_observers, runtime
from esl_sync.messages import PollRequest
from esl_sync.observability import LOGGED_NAMES
from esl_sync.settings import ConfigurationError, settings
from esl_sync.webhooks import MAX_BODY_BYTES, WEBHOOK_WRITERS
from esl_sync_ops.cli import main

MERCHANT, STORE = "MHOOK0000001", "STORE-HOOK"


@pytest.fixture
def hooked(stack: LocalStack) -> LocalStack:
    """A stack with one gas station, read once (by hand, not by the dispatcher)."""
    stack.add_merchant(MERCHANT, "tok-hook", STORE, items=gas_station_catalog(40, seed=4))
    runtime.poll_queue().send([PollRequest(merchant_id=MERCHANT, reason="manual")])
    assert stack.drain("PollQueue", "poller").failures == 0
    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    return stack


def sims(stack: LocalStack) -> tuple[CloverSimulator, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def notification(events: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """A delivery as Clover sends it: per merchant, (objectId, type) events."""
    return {
        "appId": "DRKVJT2ZRRRSC",
        "merchants": {
            merchant_id: [
                {"objectId": object_id, "type": kind, "ts": int(time.time() * 1000)}
                for object_id, kind in pairs
            ]
            for merchant_id, pairs in events.items()
        },
    }


def log_entries(stack: LocalStack, message: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stack.logs if line.startswith("{")]
    return [e for e in entries if e.get("message") == message]


def visible_sku(clover: CloverSimulator, n: int = 0) -> dict[str, Any]:
    items = [i for i in clover.items(MERCHANT) if not i.get("hidden") and i.get("sku")]
    return items[n]


def test_the_handshake_is_answered_stored_for_the_operator_and_queues_nothing(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = "ce7643c1-83ea-4218-abe6-da876c9c7a0a"  # Clover's codes are UUIDs
    answer = stack.send_webhook({"verificationCode": code}, None)

    assert (answer.status, answer.polls.records) == (200, 0)
    assert sum(stack.queue_depths().values()) == 0
    entries = [json.loads(line) for line in stack.logs if line.startswith("{")]
    assert [e["verification_code"] for e in entries if "verification_code" in e] == [code]
    assert main(["status"]) == 0
    assert f"last Clover webhook verification code: {code}" in capsys.readouterr().out


def test_refused_deliveries_get_their_documented_answer_and_queue_nothing(
    hooked: LocalStack,
) -> None:
    clover, _ = sims(hooked)
    valid = notification({MERCHANT: [(f"I:{visible_sku(clover)['id']}", "DELETE")]})
    cases: list[tuple[bytes | dict[str, Any], str | None, int, str]] = [
        (valid, None, 401, "X-Clover-Auth"),
        (valid, "not-the-auth-code", 401, "X-Clover-Auth"),
        (valid, CLOVER_WEBHOOK_AUTH[:-1], 401, "X-Clover-Auth"),
        (json.dumps(valid).encode()[:40], CLOVER_WEBHOOK_AUTH, 400, "not JSON"),
        (b"[" + b" " * (10 * 1024 * 1024) + b"]", CLOVER_WEBHOOK_AUTH, 413, "larger than"),
        ({"appId": "A", "merchants": [MERCHANT]}, CLOVER_WEBHOOK_AUTH, 400, "merchants"),
        (
            {"appId": "A", "merchants": {MERCHANT: [{"objectId": "I:X", "type": "MOVE", "ts": 1}]}},
            CLOVER_WEBHOOK_AUTH,
            400,
            "type",
        ),
    ]
    for body, auth, status, says in cases:
        answer = hooked.send_webhook(body, auth)
        assert (answer.status, answer.polls.records) == (status, 0), (status, says)
        assert says in answer.message
        assert sum(hooked.queue_depths().values()) == 0
    assert MAX_BODY_BYTES < 10 * 1024 * 1024
    state = runtime.state_store().load(MERCHANT)
    assert state.pending_deletes == frozenset()  # nothing of a refused delivery was recorded
    # … nor did any of them claim the merchant's poll window: a good delivery polls at once.
    assert hooked.send_webhook(valid, CLOVER_WEBHOOK_AUTH).polls.records == 1
    assert metric_sums(hooked.logs)["WebhookRejected"] == len(cases)


def test_fifty_events_in_one_window_make_one_poll_that_reaches_the_label(
    hooked: LocalStack,
) -> None:
    clover, hipoink = sims(hooked)
    fuel = next(i for i in clover.items(MERCHANT) if i.get("priceType") == "PER_UNIT")
    clover.update_item(MERCHANT, fuel["id"], price=fuel["price"] + 10)
    event = notification({MERCHANT: [(f"I:{fuel['id']}", "UPDATE")]})

    started = time.monotonic()
    answers = [hooked.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False) for _ in range(50)]
    # The premise, not a speed check: every delivery fell inside one poll window.
    assert time.monotonic() - started < settings().clover_webhook_poll_window_seconds
    assert {a.status for a in answers} == {202}
    assert hooked.queue_depths()["PollQueue"] == 1

    polls = hooked.drain("PollQueue", "poller")
    hooked.drain("LabelQueue", "hipoink_sender")

    assert polls.records == 1
    assert hipoink.labels(STORE)[fuel["sku"]]["pp"] == f"{(fuel['price'] + 10) / 100:.2f}"
    [webhook_poll] = [p for p in log_entries(hooked, "poll finished") if p["reason"] == "webhook"]
    assert webhook_poll["label_upserts"] == 1
    assert not [e for e in log_entries(hooked, "dispatched polls")]
    assert not [line for line in hooked.logs if "DispatcherFunction" in line]
    sums = metric_sums(hooked.logs)
    assert (sums["WebhookPollsQueued"], sums["WebhookPollsCoalesced"]) == (1, 49)


def test_a_hint_after_the_window_polls_again(
    make_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", make_database())
    with LocalStack(settings={"CLOVER_WEBHOOK_POLL_WINDOW_SECONDS": "1"}) as stack:
        stack.add_merchant(MERCHANT, "tok-hook", STORE, items=gas_station_catalog(5, seed=4))
        event = notification({MERCHANT: [("I:ANYITEM", "UPDATE")]})
        started = time.monotonic()
        stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
        stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
        assert time.monotonic() - started < 1  # the premise: both inside the window
        assert stack.queue_depths()["PollQueue"] == 1
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
        assert stack.queue_depths()["PollQueue"] == 2


def test_a_deleted_item_is_confirmed_by_the_next_poll_without_a_sweep(hooked: LocalStack) -> None:
    clover, hipoink = sims(hooked)
    gone, kept = visible_sku(clover, 0), visible_sku(clover, 1)
    clover.delete_item(MERCHANT, gone["id"])  # not listed any more: only a sweep would notice
    clover.reset_counters()
    event = notification({MERCHANT: [(f"I:{gone['id']}", "DELETE"), (f"I:{kept['id']}", "DELETE")]})

    answer = hooked.send_webhook(event, CLOVER_WEBHOOK_AUTH)

    assert (answer.status, answer.polls.records, answer.labels.failures) == (202, 1, 0)
    labels = hipoink.labels(STORE)
    assert gone["sku"] not in labels
    assert kept["sku"] in labels  # a DELETE that Clover does not confirm removes nothing
    rows = {r["source_id"]: r for r in hooked.products(MERCHANT)}
    assert (rows[gone["id"]]["status"], rows[kept["id"]]["status"]) == ("deleted", "active")
    [line] = [p for p in log_entries(hooked, "poll finished") if p["reason"] == "webhook"]
    assert (line["deletes_confirmed"], line.get("sweep")) == (1, None)
    assert clover.request_count(MERCHANT, "get") == 2  # one single-item read per reported id
    assert runtime.state_store().load(MERCHANT).pending_deletes == frozenset()


def test_other_objects_and_unknown_or_disabled_merchants_are_ignored_and_counted(
    hooked: LocalStack,
) -> None:
    hooked.add_merchant("MHOOKOFF0001", "tok-off", "STORE-OFF", items=gas_station_catalog(3))
    admin.set_active(runtime.merchants(), "MHOOKOFF0001", False)
    event = notification(
        {
            MERCHANT: [("O:ORDER0001", "CREATE"), ("C:CUSTOMER01", "UPDATE")],
            "MNOBODY00001": [("I:ITEM1", "UPDATE")],
            "MHOOKOFF0001": [("I:ITEM2", "UPDATE")],
        }
    )

    answer = hooked.send_webhook(event, CLOVER_WEBHOOK_AUTH)

    assert (answer.status, answer.polls.records) == (202, 0)
    sums = metric_sums(hooked.logs)
    assert (sums["WebhookEventsIgnored"], sums["WebhookUnknownMerchants"]) == (4, 2)
    assert sums["WebhookPollsQueued"] == 0


def test_an_unexpected_failure_is_logged_and_answered_503_never_500(
    hooked: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable() -> str:
        raise ConfigurationError("the auth code secret cannot be read")

    monkeypatch.setattr(runtime, "webhook_auth", unreadable)
    event = notification({MERCHANT: [("I:ANYITEM", "UPDATE")]})

    answer = hooked.send_webhook(event, CLOVER_WEBHOOK_AUTH)

    assert (answer.status, answer.polls.records) == (503, 0)
    [error] = [json.loads(line) for line in hooked.logs if '"level":"ERROR"' in line]
    assert "answered 503" in error["message"]
    assert "ConfigurationError" in error["exception"]
    assert metric_sums(hooked.logs)["WebhookErrors"] == 1


class _Overlap:
    """The real hints store, counting how many of its writes are in flight at once."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most = 0

    def _through(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.005)  # a DynamoDB write's round trip, at the least
            return call(*args, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1

    def claim_webhook_poll(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._through(self._real.claim_webhook_poll, *args, **kwargs))

    def add_pending_deletes(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._through(self._real.add_pending_deletes, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_delivery_naming_hundreds_of_merchants_overlaps_their_writes_and_polls_each(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain's head office changes a price in every store at once: one delivery may name
    hundreds of merchants, and each costs the webhook two DynamoDB writes (the deletes to
    confirm, the poll's window), a round trip each (5–10 ms). One after another, about a
    thousand merchants passed the function's 15 s timeout, and a delivery cut off had
    claimed windows but queued no poll, so Clover's retry found them claimed. The writes
    now overlap (a few at a time: what this checks, since the local stack's emulator runs
    in this process and gains nothing from it), and every merchant's poll is queued."""
    merchants = [f"MCHAIN{n:06d}" for n in range(60)]
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO merchants (merchant_id, store_code) VALUES (%s, %s)",
            [(m, f"S-{n}") for n, m in enumerate(merchants)],
        )
    overlap = _Overlap(runtime.state_store())
    real_deps = runtime.webhook_deps
    monkeypatch.setattr(runtime, "webhook_deps", lambda: replace(real_deps(), hints=overlap))
    event = notification({m: [("I:GONE", "DELETE"), ("I:PRICE", "UPDATE")] for m in merchants})

    answer = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)

    assert answer.status == 202
    assert 1 < overlap.most <= WEBHOOK_WRITERS
    assert stack.queue_depths()["PollQueue"] == len(merchants)
    store = runtime.state_store()
    pending = {m: store.load(m).pending_deletes for m in merchants}
    assert pending == {m: frozenset({"GONE"}) for m in merchants}


def test_racing_and_replayed_deliveries_still_queue_one_poll_per_merchant_and_window(
    stack: LocalStack,
) -> None:
    """The overlapped writes rely on the window's claim being conditional: eight writers
    claiming one merchant's window at once (two deliveries' threads racing) make one
    winner, and the same delivery sent again (Clover's retry) queues nothing more."""
    merchants = [f"MRACE{n:07d}" for n in range(12)]
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO merchants (merchant_id, store_code) VALUES (%s, %s)",
            [(m, f"S-{n}") for n, m in enumerate(merchants)],
        )
    store = runtime.state_store()
    now_ms = int(time.time() * 1000)
    with ThreadPoolExecutor(8) as pool:
        won = list(
            pool.map(
                lambda _: store.claim_webhook_poll("MRACE9999999", now_ms=now_ms, window_ms=60_000),
                range(8),
            )
        )
    assert won.count(True) == 1
    event = notification({m: [("I:GONE", "DELETE")] for m in merchants})

    first = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
    replay = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)

    assert (first.status, replay.status) == (202, 202)
    assert stack.queue_depths()["PollQueue"] == len(merchants)
    [_, replayed] = log_entries(stack, "webhook handled")[-2:]
    assert (len(replayed["polls_queued"]), len(replayed["polls_coalesced"])) == (0, len(merchants))
    assert all(store.load(m).pending_deletes == {"GONE"} for m in merchants)  # one id, kept once


def test_the_handled_line_names_at_most_fifty_merchants_of_each_list_and_counts_them_all(
    stack: LocalStack,
) -> None:
    """A delivery may name a chain's every store, up to its 256 KiB body: the "webhook
    handled" line named every one of each list (queued, coalesced, unknown), ≈ 220 KB at
    most, near the 256 KB past which CloudWatch Logs cuts a line into no JSON at all, and
    against the rule every other line keeps (README, *Log lines stay one log event*): the
    first fifty, sorted, and the count beside them."""
    known = [f"MLOG{n:09d}" for n in range(LOGGED_NAMES + 5)]
    unknown = [f"MNONE{n:08d}" for n in range(LOGGED_NAMES + 7)]
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO merchants (merchant_id, store_code) VALUES (%s, %s)",
            [(m, f"S-{n}") for n, m in enumerate(known)],
        )
    event = notification({m: [("I:PRICE", "UPDATE")] for m in known + unknown})

    first = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
    replay = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)

    assert (first.status, replay.status) == (202, 202)
    assert stack.queue_depths()["PollQueue"] == len(known)
    queued, coalesced = log_entries(stack, "webhook handled")[-2:]
    for line, field, names in (
        (queued, "polls_queued", known),
        (queued, "unknown_merchants", unknown),
        (coalesced, "polls_coalesced", known),
        (coalesced, "unknown_merchants", unknown),
    ):
        assert line[field] == sorted(names)[:LOGGED_NAMES], field
        assert line[f"{field}_count"] == len(names), field
    assert (queued["polls_coalesced_count"], coalesced["polls_queued_count"]) == (0, 0)


# -- a poll queue that refuses the send -------------------------------------------------


@contextmanager
def poll_queue_refusing(
    stack: LocalStack, refuse: Callable[[int, dict[str, Any]], None]
) -> Iterator[list[int]]:
    """SQS refusing the webhook's sends to the poll queue, for real (moto answers the
    refusal): before each ``SendMessageBatch`` to it leaves the client, ``refuse(n, params)``
    (``n`` counts them from 0) may point the call at a queue that does not exist
    (``NonExistentQueue``: the whole batch refused) or give entries a delay SQS refuses
    (those entries come back in ``Failed``, the rest are queued). The hook is the client's
    own observer, as botocore's ``before-call`` event would be for a botocore client.
    Yields the numbers of the calls seen."""
    seen: list[int] = []
    url = stack.urls["PollQueue"]

    def observer(service: str, operation: str, params: Mapping[str, Any]) -> None:
        if (service, operation) == ("sqs", "SendMessageBatch") and params["QueueUrl"] == url:
            seen.append(len(seen))
            assert isinstance(params, dict)
            refuse(seen[-1], params)

    aws_observers.observe(observer)
    try:
        yield seen
    finally:
        aws_observers.unobserve(observer)


def _gone(params: dict[str, Any]) -> None:
    params["QueueUrl"] = params["QueueUrl"] + "-deleted"


def _overlong_delay(params: dict[str, Any], ids: set[str]) -> None:
    for entry in params["Entries"]:
        if entry["Id"] in ids:
            entry["DelaySeconds"] = 901  # SQS takes at most 900: this entry alone is refused


def test_a_delivery_whose_poll_could_not_be_queued_is_polled_when_clover_redelivers(
    hooked: LocalStack,
) -> None:
    """The window is claimed before the poll is queued; SQS then refusing the send (the
    function answers 503, and Clover redelivers) must not leave the window claimed by a
    poll that was never queued: the redelivery would coalesce, and the change wait for the
    next scheduled poll."""
    clover, hipoink = sims(hooked)
    fuel = next(i for i in clover.items(MERCHANT) if i.get("priceType") == "PER_UNIT")
    clover.update_item(MERCHANT, fuel["id"], price=fuel["price"] + 10)
    event = notification({MERCHANT: [(f"I:{fuel['id']}", "UPDATE")]})

    with poll_queue_refusing(hooked, lambda n, params: _gone(params)) as sends:
        refused = hooked.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
    assert (refused.status, sends) == (503, [0])
    [error] = [json.loads(line) for line in hooked.logs if '"level":"ERROR"' in line]
    assert "NonExistentQueue" in error["exception"]
    assert hooked.queue_depths()["PollQueue"] == 0

    redelivered = hooked.send_webhook(event, CLOVER_WEBHOOK_AUTH)  # Clover's retry

    assert (redelivered.status, redelivered.polls.records) == (202, 1)
    assert hipoink.labels(STORE)[fuel["sku"]]["pp"] == f"{(fuel['price'] + 10) / 100:.2f}"
    assert metric_sums(hooked.logs)["WebhookPollsQueued"] == 1  # counted once: when queued


def test_a_send_refused_in_part_gives_back_only_the_windows_it_did_not_queue(
    stack: LocalStack,
) -> None:
    """SQS takes ten messages a call: of 25 merchants' polls the first ten are queued, the
    second call has its even entries refused (``Failed``) and its odd ones queued, and the
    third is never made. Clover's redelivery queues exactly the ten polls that were not:
    one poll per merchant and window still, and no hint lost."""
    merchants = [f"MPART{n:07d}" for n in range(25)]
    event = _registered_and_notified(stack, merchants, "S")

    def refuse(n: int, params: dict[str, Any]) -> None:
        if n == 1:
            _overlong_delay(params, {str(i) for i in range(10, 20, 2)})

    with poll_queue_refusing(stack, refuse) as sends:
        refused = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
    assert (refused.status, sends) == (503, [0, 1])
    assert stack.queue_depths()["PollQueue"] == 15
    queued = {PollRequest.parse(m["Body"]).merchant_id for m in _peek(stack, 15)}

    redelivered = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)

    assert redelivered.status == 202
    assert stack.queue_depths()["PollQueue"] == len(merchants)
    [line] = log_entries(stack, "webhook handled")
    assert line["polls_queued"] == sorted(set(merchants) - queued)
    assert line["polls_queued_count"] == 10
    assert line["polls_coalesced"] == sorted(queued)


def _peek(stack: LocalStack, count: int) -> list[dict[str, Any]]:
    """The poll queue's messages (read, then made visible again at once)."""
    url = stack.urls["PollQueue"]
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        got = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        assert got, f"{len(messages)} of {count} messages read"
        messages += got
    for message in messages:
        stack.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return messages


@contextmanager
def claims_refused_for(merchant_id: str) -> Iterator[list[str]]:
    """DynamoDB refusing, for real (moto answers ``ResourceNotFoundException``), every
    write of one merchant's poll-window claim: the call is pointed at a table that does
    not exist just before it leaves the client. Yields the merchants whose claims it saw."""
    seen: list[str] = []

    def observer(service: str, operation: str, params: Mapping[str, Any]) -> None:
        if (service, operation) != ("dynamodb", "UpdateItem"):
            return
        names = params.get("ExpressionAttributeNames", {})
        if "webhook_poll_until_ms" not in names.values():
            return
        seen.append(params["Key"]["merchant_id"]["S"])
        if seen[-1] == merchant_id:
            assert isinstance(params, dict)
            params["TableName"] = params["TableName"] + "-gone"

    aws_observers.observe(observer)
    try:
        yield seen
    finally:
        aws_observers.unobserve(observer)


def test_a_merchant_whose_claim_fails_does_not_keep_the_others_polls_from_the_queue(
    stack: LocalStack,
) -> None:
    """One merchant's window cannot be claimed (DynamoDB refuses): the delivery fails, so
    Clover redelivers, but only after the others' polls are queued. Before, the first
    failure ended the delivery with the others' windows claimed and their polls unsent,
    so the redelivery coalesced them and their changes waited for the schedule."""
    merchants = [f"MCLAIM{n:06d}" for n in range(3)]
    event = _registered_and_notified(stack, merchants, "S-CLAIM")
    failing = merchants[1]

    with claims_refused_for(failing) as seen:
        refused = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)
    assert sorted(seen) == merchants
    assert refused.status >= 500
    queued = {PollRequest.parse(m["Body"]).merchant_id for m in _peek(stack, 2)}
    assert queued == set(merchants) - {failing}
    assert stack.queue_depths()["PollQueue"] == 2

    redelivered = stack.send_webhook(event, CLOVER_WEBHOOK_AUTH, deliver=False)

    assert redelivered.status == 202
    [line] = log_entries(stack, "webhook handled")
    assert (line["polls_queued"], line["polls_coalesced"]) == ([failing], sorted(queued))
    assert stack.queue_depths()["PollQueue"] == 3


def _registered_and_notified(
    stack: LocalStack, merchants: list[str], store_prefix: str
) -> dict[str, Any]:
    """``merchants`` registered (each its own store, no tokens: their polls are only
    queued here), and one delivery that names an item change of each."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO merchants (merchant_id, store_code) VALUES (%s, %s)",
            [(m, f"{store_prefix}-{n}") for n, m in enumerate(merchants)],
        )
    return notification({m: [("I:PRICE", "UPDATE")] for m in merchants})
