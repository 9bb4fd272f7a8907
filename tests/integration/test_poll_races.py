"""Races between polls of one merchant, made the way the field makes them (issue: audit of
the poll lease): a poll that outlives its lease while another poll of the merchant runs,
duplicate poll messages in one SQS batch, and the configured numbers that keep a poll from
outliving its lease in Lambda.

Real handlers, moto, Postgres and the simulators over HTTP. A slow Clover answer is made by
the simulator's ``after_list_page`` hook: the page is read, then answered late, so the
poll holding it writes what Clover had when it read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from devkit.emf import metric_sums
from devkit.local_stack import LocalStack
from devkit.template import load_template, resource
from esl_sync import runtime
from esl_sync.store.dynamo import DynamoStateStore
from esl_sync.store.label_ledger import PostgresLabelLedger
from esl_sync.sync.lease import POLL_LEASE_MS
from tests.integration.conftest import StackFactory
from tests.integration.test_poll import (
    assert_each_label_version_sent_once,
    assert_in_step,
    poll,
    poll_lines,
    poller_event,
    sims,
)

MERCHANT = "MRACE0000001"
STORE = "STORE-RACE"
MINUTE = 60_000
MILK = {"name": "Milk", "price": 100, "sku": "MILK-1"}
BREAD = {"name": "Bread", "price": 250, "sku": "BREAD-1"}


def item_id(stack: LocalStack, sku: str) -> str:
    clover, _ = sims(stack)
    return next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == sku)


def expire_lease(stack: LocalStack, merchant_id: str) -> None:
    """The lease's 330 s pass: its expiry is moved into the past (the owner stays, as it
    does when a poll outlives its lease)."""
    boto3.client("dynamodb").update_item(
        TableName=stack.env["STATE_TABLE_NAME"],
        Key={"merchant_id": {"S": merchant_id}},
        UpdateExpression="SET lease_until_ms = :past",
        ConditionExpression="attribute_exists(lease_owner)",  # held by the slow poll
        ExpressionAttributeValues={":past": {"N": "1"}},
    )


@contextmanager
def answered_late(stack: LocalStack) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The next list page Clover reads is answered only once ``release`` is set: (read,
    release). Every other page is answered at once."""
    clover, _ = sims(stack)
    read, release = threading.Event(), threading.Event()
    taken = threading.Lock()

    def hold_once(number: int) -> None:
        if taken.acquire(blocking=False):
            read.set()
            release.wait(8)  # below the Clover client's 10 s read timeout

    clover.after_list_page = hold_once
    try:
        yield read, release
    finally:
        release.set()
        clover.after_list_page = None


def invoke_poller(stack: LocalStack, message_id: str, answers: list[object]) -> None:
    """One poller invocation for the merchant (on a thread): its answer, or what it raised
    (a crash: a failed poll is a failed record of the answer)."""
    try:
        answers.append(stack.invoke("poller", poller_event(MERCHANT, message_id)))
    except Exception as error:
        answers.append(error)


def prices_shown(stack: LocalStack, pc: str) -> list[str]:
    _, hipoink = sims(stack)
    return [record["pp"] for record in hipoink.upserts_of(STORE, pc)]


# -- a poll that outlives its lease ----------------------------------------------------------


def test_a_poll_that_outlives_its_lease_writes_nothing_older(stack: LocalStack) -> None:
    """Poll A reads Milk at 2.00, and Clover's answer is slow; A's lease expires; Milk goes
    to 3.00 and poll B (a redelivery, a webhook's, the next schedule) takes the lease and
    completes. Then A's answer arrives. A's late writes must be refused: Postgres and the
    label keep 3.00, the cursor stays B's, and a later edit still reaches the label."""
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(BREAD)])
    poll(stack, MERCHANT)
    milk = item_id(stack, "MILK-1")
    clover.update_item(MERCHANT, milk, price=200)

    slow = threading.Thread(target=invoke_poller, args=(stack, "slow", []))
    with answered_late(stack) as (read, release):
        slow.start()
        assert read.wait(10), "the slow poll never read Clover"
        expire_lease(stack, MERCHANT)
        clover.update_item(MERCHANT, milk, price=300)
        fast = stack.invoke("poller", poller_event(MERCHANT, "fast"))
        cursor_after_fast = runtime.state_store().load(MERCHANT).high_water_ms
        release.set()
        slow.join(15)
    assert not slow.is_alive()
    assert fast == {"batchItemFailures": []}
    stack.drain("LabelQueue", "hipoink_sender")

    row = next(r for r in stack.products(MERCHANT) if r["source_id"] == milk)
    assert row["raw"]["price"] == 300, "the slow poll wrote back Clover's older version"
    shown = prices_shown(stack, "MILK-1")
    assert shown[shown.index("3.00") :] == ["3.00"], f"the label went back: {shown}"
    assert runtime.state_store().load(MERCHANT).high_water_ms == cursor_after_fast
    # Named: the slow poll ends failed (SQS retries it, harmlessly) for its lost lease.
    assert any(
        line["status"] == "failed" and "lease" in line["detail"]
        for line in poll_lines(stack, MERCHANT)
    )

    clover.update_item(MERCHANT, milk, price=400)  # nothing lost: the next edit arrives
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "4.00"
    assert_in_step(stack, MERCHANT, STORE)


def test_a_poll_whose_lease_is_taken_before_its_heal_queues_nothing_more(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep poll commits its writes, then its heal pass reads the stale labels (their
    jobs were lost); just then its lease expires and a newer poll of the merchant runs
    to the end, healing them itself. The older poll's heal advances the label clock under
    its own fence: refused, so it queues nothing, saves no state and ends failed, naming
    the lease (SQS retries it, harmlessly); the shelf is the newer poll's."""
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1", LABEL_HEAL_AFTER_SECONDS="0")
    _, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(BREAD)])
    poll(stack, MERCHANT)  # the first read: its jobs are lost, both labels stale
    stack.sqs.purge_queue(QueueUrl=stack.urls["LabelQueue"])
    answers: list[object] = []
    repair_candidates = PostgresLabelLedger.repair_candidates
    newer_ran = threading.Lock()

    def newer_poll_meanwhile(self: PostgresLabelLedger, merchant_id: str) -> Any:
        snapshot = repair_candidates(self, merchant_id)
        if newer_ran.acquire(blocking=False):  # the older poll's heal: the newer runs now
            expire_lease(stack, MERCHANT)
            newer = threading.Thread(target=invoke_poller, args=(stack, "newer", answers))
            newer.start()
            newer.join(15)
        return snapshot

    monkeypatch.setattr(PostgresLabelLedger, "repair_candidates", newer_poll_meanwhile)
    mark = len(stack.logs)
    invoke_poller(stack, "older", answers)
    monkeypatch.undo()

    assert answers[0] == {"batchItemFailures": []}  # the newer
    assert answers[1] == {"batchItemFailures": [{"itemIdentifier": "older"}]}  # retried
    lines = poll_lines(stack, MERCHANT)[-2:]
    assert [line["status"] for line in lines] == ["ok", "failed"], lines
    assert "lease" in lines[1]["detail"]
    assert metric_sums(stack.logs[mark:])["PollsFenced"] == 1
    healed = [line for line in stack.logs[mark:] if "stale labels queued again" in line]
    assert len(healed) == 1, "the older poll's heal queued its jobs too"
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.00"
    assert_in_step(stack, MERCHANT, STORE)


def test_a_delivery_found_busy_loses_no_edit_made_while_the_poll_ran(
    make_stack: StackFactory,
) -> None:
    """A webhook's poll arrives while a poll whose Clover answer is late holds the lease:
    it is acknowledged as busy, and the edit it was for, made after the running poll read
    Clover, is not in that poll's answer. The running poll's cursor is Clover's clock where
    its read began (less the margin), not later, so the next poll reads the edit even with
    no overlap window: nothing is skipped. Clover's clock is frozen and moved a minute on
    between the read and the edit."""
    stack = make_stack(CLOVER_OVERLAP_MS="0")
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(BREAD)])
    clover.freeze_clock(clover.clock_ms())
    poll(stack, MERCHANT)
    milk = item_id(stack, "MILK-1")

    answers: list[object] = []
    running = threading.Thread(target=invoke_poller, args=(stack, "run", answers))
    with answered_late(stack) as (read, release):
        running.start()
        assert read.wait(10), "the poll never read Clover"
        clover.freeze_clock(clover.clock_ms() + MINUTE)
        clover.update_item(MERCHANT, milk, price=275)
        hint = stack.invoke("poller", poller_event(MERCHANT, "hint"))
        release.set()
        running.join(15)
    assert not running.is_alive()
    assert hint == answers[0] == {"batchItemFailures": []}
    # The first sync's line, then the hint's; the running poll found nothing (quiet).
    assert [line["status"] for line in poll_lines(stack, MERCHANT)] == ["ok", "busy"]
    row = next(r for r in stack.products(MERCHANT) if r["source_id"] == milk)
    assert row["raw"]["price"] == 100  # the running poll's answer was read before the edit

    poll(stack, MERCHANT)  # the next schedule
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "2.75"
    assert_in_step(stack, MERCHANT, STORE)


@pytest.mark.parametrize("in_flight", ["1", "2"])
def test_duplicate_poll_messages_in_one_batch_poll_the_merchant_once_at_a_time(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch, in_flight: str
) -> None:
    """SQS delivers a poll message twice (at least once), and both copies land in one
    batch. On one worker they run one after the other: the second finds nothing new. On
    two, they overlap: the first to take the lease polls, the other is acknowledged as
    busy without a Clover request. Either way no label is sent twice, none is lost."""
    stack = make_stack(CLOVER_INSTANCE_IN_FLIGHT=in_flight)
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(BREAD)])
    tried = threading.Semaphore(0)
    take_lease = DynamoStateStore.take_lease

    def counted(self: DynamoStateStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return take_lease(self, *args, **kwargs)
        finally:
            tried.release()

    monkeypatch.setattr(DynamoStateStore, "take_lease", counted)
    if in_flight == "2":
        # The first poll's page waits until the second copy has tried the lease too.
        clover.before_list_page = lambda number: _wait_for(tried, 2)
    event = poller_event(MERCHANT, "copy-1")
    event["Records"].append({**event["Records"][0], "messageId": "copy-2"})

    answer = stack.invoke("poller", event)

    clover.before_list_page = None
    assert answer == {"batchItemFailures": []}
    lines = poll_lines(stack, MERCHANT)
    if in_flight == "2":
        assert sorted(line["status"] for line in lines) == ["busy", "ok"]
        assert clover.request_count(MERCHANT, "list") == 1
    else:  # the second copy ran after the first, found nothing new, and was quiet
        assert [line["status"] for line in lines] == ["ok"]
        assert runtime.state_store().load(MERCHANT).poll_count == 2
    stack.drain("LabelQueue", "hipoink_sender")
    assert_each_label_version_sent_once(hipoink, STORE)
    assert_in_step(stack, MERCHANT, STORE)


def _wait_for(tried: threading.Semaphore, attempts: int) -> None:
    """Once: block until ``attempts`` lease attempts were made (then let every page by)."""
    for _ in range(attempts):
        assert tried.acquire(timeout=10), "the second copy never tried the lease"
    for _ in range(attempts):
        tried.release()  # later pages pass at once


# -- the configured numbers ------------------------------------------------------------------


def test_a_poll_cannot_outlive_its_lease_and_a_redelivery_never_finds_it_held() -> None:
    """Why the race above cannot happen in Lambda: the poller's timeout ends every poll
    before its lease expires (Lambda resets the environment on a timeout, ending the poll's
    threads), and a message whose poll was killed comes back only after the lease expired,
    so its retry polls instead of being acknowledged as busy."""
    template = load_template()
    timeout_ms = 1000 * int(resource(template, "PollerFunction")["Properties"]["Timeout"])
    visibility_ms = 1000 * int(resource(template, "PollQueue")["Properties"]["VisibilityTimeout"])
    assert timeout_ms < POLL_LEASE_MS < visibility_ms


def test_a_state_save_refused_is_counted_and_the_next_poll_repeats_the_read(
    stack: LocalStack,
) -> None:
    """The state written beside a running poll (its version moved on) refuses the poll's
    save: what the poll committed stays, the cursor does not move, and the refusal is
    counted (``StateSavesRefused``), not only logged; the next poll reads again."""
    clover, _ = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(BREAD)])
    poll(stack, MERCHANT)
    cursor = runtime.state_store().load(MERCHANT).high_water_ms
    clover.update_item(MERCHANT, item_id(stack, "MILK-1"), price=275)

    def written_beside(number: int) -> None:
        boto3.client("dynamodb").update_item(
            TableName=stack.env["STATE_TABLE_NAME"],
            Key={"merchant_id": {"S": MERCHANT}},
            UpdateExpression="ADD version :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    clover.after_list_page = written_beside
    mark = len(stack.logs)
    try:
        assert stack.invoke("poller", poller_event(MERCHANT, "m1")) == {"batchItemFailures": []}
    finally:
        clover.after_list_page = None
    assert metric_sums(stack.logs[mark:])["StateSavesRefused"] == 1
    refused = runtime.state_store().load(MERCHANT)
    assert refused.high_water_ms == cursor
    mark = len(stack.logs)
    poll(stack, MERCHANT)
    assert "StateSavesRefused" not in metric_sums(stack.logs[mark:])
    assert runtime.state_store().load(MERCHANT).poll_count == refused.poll_count + 1
    stack.drain("LabelQueue", "hipoink_sender")
    assert_in_step(stack, MERCHANT, STORE)
