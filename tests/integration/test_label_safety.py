"""Labels never go backwards, heal by themselves after a Hipoink outage, and show one
product per product code: real handlers, moto, Postgres, both simulators.

The local stack runs a cycle in seconds; where the schedule matters, ``_minutes_pass``
moves every time the ledger and the product table hold back by that much, which to the
code (it compares them with the database's ``now()``) is that much time passing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from devkit.catalog import numbered_catalog
from devkit.demo import expected_labels
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from devkit.template import load_template
from esl_sync import runtime
from esl_sync.messages import LabelJob
from esl_sync.records import LabelAck

M = "MSAFE0000001"
STORE = "STORE-SAFE"
MAX_RECEIVES = int(load_template()["Parameters"]["MaxReceiveCount"]["Default"])
INTERVAL_MINUTES = 5  # the shipped SyncIntervalSeconds


def _sims(stack: LocalStack) -> tuple[Any, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def _minutes_pass(stack: LocalStack, minutes: float) -> None:
    """Every stored moment the label logic compares with ``now()`` moves back."""
    shift = f"{minutes * 60} seconds"
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE label_state SET acknowledged_at = acknowledged_at - %(s)s::interval,"
            " failed_at = failed_at - %(s)s::interval, requeued_at = requeued_at - %(s)s::interval",
            {"s": shift},
        )
        conn.execute(
            "UPDATE products SET updated_at = updated_at - %(s)s::interval,"
            " created_at = created_at - %(s)s::interval",
            {"s": shift},
        )


def _poll(stack: LocalStack) -> None:
    """One scheduled poll of every merchant, its label jobs left on the queue."""
    stack.dispatch()
    assert stack.drain("PollQueue", "poller").failures == 0


def _status(stack: LocalStack) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(stack.cli("status", "--json"))
    return next(r for r in rows if r["merchant_id"] == M)


def _conflicts(stack: LocalStack) -> dict[str, str]:
    """Product name → what ``status --labels`` says of its product code conflict."""
    rows = json.loads(stack.cli("status", "--labels", M, "--json"))
    return {r["name"]: r["failure"] for r in rows if r["action"] == "conflict"}


def _started(stack: LocalStack, items: int) -> tuple[Any, HipoinkSimulator]:
    """The merchant with a catalog of ``items``, synced once."""
    clover, hipoink = _sims(stack)
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(items))
    stack.run_cycle()
    return clover, hipoink


def _price(stack: LocalStack, pc: str) -> str:
    return str(_sims(stack)[1].labels(STORE)[pc]["pp"])


# -- (a) labels never regress --------------------------------------------------------------


def test_a_redriven_older_job_never_replaces_a_newer_price(stack: LocalStack) -> None:
    clover, hipoink = _started(stack, 3)
    item = clover.items(M)[0]
    pc = item["sku"]

    # 2.50 is decided while Hipoink is down: its job ends in the dead-letter queue.
    hipoink.down = True
    clover.update_item(M, item["id"], price=250)
    assert stack.run_cycle().queue_depths["LabelDeadLetterQueue"] == 1
    # Hipoink is back and 2.75 reaches the shelf.
    hipoink.down = False
    clover.update_item(M, item["id"], price=275)
    stack.run_cycle()
    assert _price(stack, pc) == "2.75"

    # The operator redrives the old job: it is older than what Hipoink acknowledged.
    hipoink.reset_requests()
    mark = len(stack.logs)
    assert "moved 1 message(s)" in stack.cli("redrive", "--queue", "label")
    redriven = stack.drain("LabelQueue", "hipoink_sender")

    assert (redriven.records, redriven.failures) == (1, 0)  # acknowledged, not an error
    assert hipoink.request_count() == 0
    assert _price(stack, pc) == "2.75"
    assert [r["pp"] for r in hipoink.upserts_of(STORE, pc)] == ["1.00", "2.75"]
    assert metric_sums(stack.logs[mark:])["LabelsSkippedOlder"] == 1
    delivered = [json.loads(line) for line in stack.logs[mark:] if "label job" in line]
    assert [(d["skipped_older"], d["skipped_older_codes"]) for d in delivered] == [(1, [pc])]
    assert any('"level":"INFO"' in line for line in stack.logs[mark:])
    assert not any('"level":"ERROR"' in line for line in stack.logs[mark:])
    assert _status(stack)["stale_labels"] == 0


def test_a_replayed_heal_or_a_job_from_before_versions_never_goes_backwards(
    stack: LocalStack,
) -> None:
    clover, hipoink = _started(stack, 3)
    first, second = clover.items(M)[:2]

    # A heal queued now, delivered late: a price change decided after it wins.
    clover.update_item(M, first["id"], price=300)
    _poll(stack)
    stack.sqs.purge_queue(QueueUrl=stack.urls["LabelQueue"])  # the poll's job is lost
    stack.cli("heal", M, "--older-than", "0")
    late_heal = stack.sqs.receive_message(QueueUrl=stack.urls["LabelQueue"])["Messages"][0]
    stack.sqs.delete_message(
        QueueUrl=stack.urls["LabelQueue"], ReceiptHandle=late_heal["ReceiptHandle"]
    )
    clover.update_item(M, first["id"], price=325)
    stack.run_cycle()
    runtime.label_queue().send([LabelJob.parse(late_heal["Body"])])
    stack.drain("LabelQueue", "hipoink_sender")
    assert _price(stack, first["sku"]) == "3.25"

    # A job queued before versions existed (no "version"): harmless where a versioned
    # label was acknowledged since.
    legacy = {**expected_labels(clover.items(M))[second["sku"]], "pp": "0.01"}
    stack.sqs.send_message(
        QueueUrl=stack.urls["LabelQueue"],
        MessageBody=json.dumps({"merchant_id": M, "store_code": STORE, "upserts": [legacy]}),
        MessageGroupId=M,
        MessageDeduplicationId="legacy-1",
    )
    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    assert hipoink.labels(STORE) == expected_labels(clover.items(M))
    assert _status(stack)["stale_labels"] == 0


# -- (b) healing after an outage, without an operator --------------------------------------


@pytest.mark.parametrize("minutes_back_before_next_poll", [0.5, INTERVAL_MINUTES])
def test_a_hipoink_outage_past_the_dead_letter_limit_is_repaired_within_three_polls(
    stack: LocalStack, minutes_back_before_next_poll: float
) -> None:
    """With the shipped settings: no redrive, no heal command."""
    clover, hipoink = _started(stack, 30)

    # Hipoink goes down; three polls of changes pile up in the dead-letter queue: prices,
    # a hidden item, a changed code (an upsert job and a delete job, the second skipped
    # behind the first in the store's FIFO group, so none of its labels ever failed).
    hipoink.down = True
    items = clover.items(M)
    for item in items[:5]:
        clover.update_item(M, item["id"], price=item["price"] + 100)
    clover.hide_item(M, items[5]["id"])
    clover.update_item(M, items[6]["id"], sku="RENAMED")
    calls_while_down = []
    for poll in range(3):
        if poll:
            _minutes_pass(stack, INTERVAL_MINUTES)
            clover.update_item(M, items[7 + poll]["id"], price=999)
        before = hipoink.request_count()
        stack.run_cycle()
        calls_while_down.append(hipoink.request_count() - before)
    dead = stack.queue_depths()["LabelDeadLetterQueue"]
    assert dead >= 4
    # Bounded while down: each poll's jobs (and at most one probe) go to the store's FIFO
    # group, whose first job is the only one tried on each of its receives.
    assert calls_while_down == [MAX_RECEIVES] * 3
    assert _status(stack)["stale_labels"] == 10

    # Hipoink returns; the polls go on as scheduled.
    hipoink.down = False
    _minutes_pass(stack, minutes_back_before_next_poll)
    polls_needed = None
    for poll in range(1, 4):
        if poll > 1:
            _minutes_pass(stack, INTERVAL_MINUTES)
        stack.run_cycle()
        if hipoink.labels(STORE) == expected_labels(clover.items(M)):
            polls_needed = poll
            break

    assert polls_needed is not None, "labels still differ from Clover after three polls"
    assert _status(stack)["stale_labels"] == 0
    assert stack.queue_depths()["LabelDeadLetterQueue"] == dead  # nobody redrove anything
    assert metric_sums(stack.logs)["LabelsHealed"] >= 10
    # Once repaired, a poll asks nothing more of the ledger (the failures are gone).
    assert runtime.merchants().get(M).labels_failing == 0  # type: ignore[union-attr]


def test_a_store_still_down_gets_one_small_probe_at_a_time(stack: LocalStack) -> None:
    _, hipoink = _sims(stack)
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(300))
    hipoink.down = True
    stack.run_cycle()  # the whole first sync dead-letters: two jobs of 200 and 100
    assert stack.queue_depths()["LabelDeadLetterQueue"] == 2

    sizes = []
    for _ in range(3):
        _minutes_pass(stack, INTERVAL_MINUTES)
        _poll(stack)
        sizes.append([len(json.loads(b)["upserts"]) for b in _peek(stack)])
        # Polled again before the probe was tried: it is in flight, nothing more is queued.
        _poll(stack)
        assert len(_peek(stack)) == 1
        stack.drain("LabelQueue", "hipoink_sender")

    assert sizes == [[200]] * 3  # one batch (one Hipoink call per receive), not 300 labels
    assert hipoink.labels(STORE) == {}


def test_jobs_queued_again_are_not_queued_twice_while_in_flight(stack: LocalStack) -> None:
    clover, hipoink = _started(stack, 20)
    hipoink.down = True
    for item in clover.items(M)[:4]:
        clover.update_item(M, item["id"], price=item["price"] + 1)
    stack.run_cycle()  # dead-lettered
    hipoink.down = False
    _minutes_pass(stack, INTERVAL_MINUTES)
    stack.run_cycle()  # the probe goes through: Hipoink answers again
    assert hipoink.labels(STORE) == expected_labels(clover.items(M))

    # The same once Hipoink has answered: the labels a poll queues again are not queued
    # by the next poll while their job waits.
    hipoink.down = True
    for item in clover.items(M)[4:8]:
        clover.update_item(M, item["id"], price=item["price"] + 1)
    stack.run_cycle()
    hipoink.down = False
    clover.update_item(M, clover.items(M)[10]["id"], price=555)  # an answer after the failure
    stack.run_cycle()
    _minutes_pass(stack, INTERVAL_MINUTES)
    _poll(stack)
    queued = _peek(stack)
    assert sorted(r["pc"] for b in queued for r in json.loads(b)["upserts"]) == [
        "SKU0004",
        "SKU0005",
        "SKU0006",
        "SKU0007",
    ]
    _minutes_pass(stack, INTERVAL_MINUTES)
    _poll(stack)
    assert len(_peek(stack)) == len(queued)
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE) == expected_labels(clover.items(M))


def _peek(stack: LocalStack) -> list[str]:
    """The bodies waiting on the label queue (made visible again at once)."""
    url = stack.urls["LabelQueue"]
    bodies = []
    while True:
        got = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        bodies += [m["Body"] for m in got]
        for message in got:
            stack.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        if len(got) < 10:
            break
    return bodies


def test_what_a_poll_costs_in_round_trips(stack: LocalStack) -> None:
    """Idle and healthy: the merchant lookup, BEGIN, the page's upsert, COMMIT; nothing is
    added for the label retries (the lookup counts failed labels). A poll that changes a
    label adds one statement (which product each code shows, and the label clock); a
    merchant with failed labels pays one read of its stale labels while it waits."""
    clover, hipoink = _started(stack, 20)

    def trips(change: Callable[[], None] = lambda: None) -> int:
        change()
        stack.dispatch()
        before = runtime.database().round_trips
        assert stack.drain("PollQueue", "poller").failures == 0
        spent = runtime.database().round_trips - before
        stack.drain("LabelQueue", "hipoink_sender")
        return spent

    item = clover.items(M)[0]
    assert trips() == 4
    assert trips(lambda: clover.update_item(M, item["id"], price=1)) == 5
    hipoink.down = True
    trips(lambda: clover.update_item(M, item["id"], price=2))  # dead-lettered
    assert trips() == 5  # failed labels: read the ledger, wait (backing off)


# -- (c) duplicate product codes ----------------------------------------------------------


def test_duplicate_product_codes_keep_one_stable_label_and_name_the_conflict(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="2", LABEL_HEAL_AFTER_SECONDS="0")
    clover, hipoink = _sims(stack)
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(4))
    first = clover.create_item(M, name="Marlboro Red", price=899, sku="DUP")
    stack.run_cycle()

    # A second item gets the same code later: the label stays with the first.
    second = clover.create_item(M, name="Marlboro Red (new)", price=999, sku="DUP")
    mark = len(stack.logs)
    stack.run_cycle()
    assert metric_sums(stack.logs[mark:])["LabelConflicts"] == 1
    warning = next(json.loads(line) for line in stack.logs[mark:] if "claimed by more" in line)
    assert warning["codes"] == {"DUP": first["id"]}

    # Several polls (sweeps among them), heals and changes of the other item: one label.
    for round_ in range(4):
        clover.update_item(M, second["id"], price=1000 + round_)
        stack.run_cycle()
        stack.cli("heal", M, "--older-than", "0")
        stack.drain("LabelQueue", "hipoink_sender")
    shown = [(r["pi"], r["pp"]) for r in hipoink.upserts_of(STORE, "DUP")]
    assert shown == [(first["id"], "8.99")]
    assert _status(stack)["stale_labels"] == 0
    assert _status(stack)["label_conflicts"] == 1
    assert _conflicts(stack) == {
        "Marlboro Red": f"code claimed by 2 products (item {first['id']} is on the label:"
        " stored first)",
        "Marlboro Red (new)": f"code claimed by 2 products (item {second['id']} is not shown;"
        f" item {first['id']} is on the label)",
    }
    assert "1 with product code conflicts" in stack.cli("status")

    # The first item's own changes still reach the label.
    clover.update_item(M, first["id"], price=949)
    stack.run_cycle()
    assert _price(stack, "DUP") == "9.49"

    # The conflict dissolves: the second item gets its own code.
    clover.update_item(M, second["id"], sku="DUP-2")
    stack.run_cycle()
    assert (_price(stack, "DUP"), _price(stack, "DUP-2")) == ("9.49", "10.03")
    assert _status(stack)["label_conflicts"] == 0

    # It forms again, and then the first item is hidden: the second takes the label over.
    clover.update_item(M, second["id"], sku="DUP")
    stack.run_cycle()
    assert "DUP-2" not in hipoink.labels(STORE)
    assert hipoink.labels(STORE)["DUP"]["pi"] == first["id"]
    clover.hide_item(M, first["id"])
    stack.run_cycle()
    assert hipoink.labels(STORE)["DUP"]["pi"] == second["id"]
    assert _status(stack)["label_conflicts"] == 0
    assert _status(stack)["stale_labels"] == 0


def test_duplicate_codes_in_a_first_sync_show_the_smallest_item_id_every_time(
    stack: LocalStack,
) -> None:
    clover, hipoink = _sims(stack)
    twins = [{"name": f"Twin {i}", "price": 100 * i, "sku": "TWIN"} for i in (1, 2, 3)]
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(2) + twins)
    stack.run_cycle()
    owner = min(i["id"] for i in clover.items(M) if i.get("sku") == "TWIN")

    for _ in range(3):
        stack.cli("heal", M, "--older-than", "0")
        stack.run_cycle()

    assert [r["pi"] for r in hipoink.upserts_of(STORE, "TWIN")] == [owner]
    assert _status(stack)["stale_labels"] == 0
    assert len(_conflicts(stack)) == 3


def test_a_renewed_version_is_no_evidence_that_hipoink_answers(stack: LocalStack) -> None:
    """A job whose record a label already shows makes no call: the version moves up, the
    acknowledgement time (what tells the heal that Hipoink answers again) stays."""
    _started(stack, 1)
    ledger = runtime.label_ledger()
    [before] = stack.label_state(M)
    ack = before["label_hash"]
    ledger.renew(M, [LabelAck("SKU0000", ack, before["version"] + 5)], store_code=STORE)
    ledger.renew(M, [LabelAck("SKU0000", ack, before["version"] + 1)], store_code=STORE)
    [after] = stack.label_state(M)
    assert after["version"] == before["version"] + 5
    assert after["acknowledged_at"] == before["acknowledged_at"]


# -- a merchant moved to another Hipoink store ----------------------------------------------


@pytest.mark.parametrize("how", ["set-store", "merchants add"])
def test_a_merchant_moved_to_another_store_gets_every_label_there_and_old_jobs_hide_none(
    stack: LocalStack, how: str
) -> None:
    """The store code of a merchant already labelling (a typo fixed, a store's Hipoink
    account replaced): the ledger of what Hipoink acknowledged (keyed by merchant and
    code) held the old store's labels, so the next polls sent only what changed and the new
    store's shelf stayed bare, silently (no label counted stale). Now every label is queued
    for the new store at once, and a job decided for the old store before the change (still
    on the queue) is not acknowledged for the new one."""
    clover, hipoink = _started(stack, 30)
    item = next(i for i in clover.items(M) if i["sku"] == "SKU0007")
    clover.update_item(M, item["id"], price=777)
    _poll(stack)  # a job for the old store waits on the label queue
    hipoink.add_store("STORE-NEW")  # the store exists in Hipoink
    if how == "set-store":
        stack.cli("merchants", "set-store", M, "STORE-NEW")
    else:
        stack.cli("merchants", "add", M, "--store-code", "STORE-NEW")

    labels = stack.drain("LabelQueue", "hipoink_sender")
    assert labels.failures == 0
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")

    assert hipoink.labels("STORE-NEW") == expected_labels(clover.items(M))
    assert hipoink.labels("STORE-NEW")["SKU0007"]["pp"] == "7.77"
    assert _status(stack)["stale_labels"] == 0
    assert stack.run_cycle().labels.records == 0  # settled: nothing more to send


def test_a_mistyped_store_code_corrected_lifts_its_block_for_the_right_store(
    stack: LocalStack,
) -> None:
    """The common way a store code changes: the first was mistyped, Hipoink refused it
    (a configuration error), the merchant's store was blocked for the cool-down. Blocks
    were the merchant's, not the store's: the corrected store's jobs were held by the
    mistyped one's block (and a job for it still queued would block it again)."""
    clover, hipoink = _sims(stack)
    stack.add_merchant(M, "tok", "STORE-TYPO", items=numbered_catalog(20))
    hipoink.remove_store("STORE-TYPO")
    stack.run_cycle()
    assert _status(stack)["store_blocked"]
    hipoink.add_store("STORE-RIGHT")

    stack.cli("merchants", "set-store", M, "STORE-RIGHT")
    stack.drain("LabelQueue", "hipoink_sender")
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")

    assert hipoink.labels("STORE-RIGHT") == expected_labels(clover.items(M))
    assert not _status(stack)["store_blocked"]
    assert _status(stack)["stale_labels"] == 0


def test_the_same_store_code_set_again_moves_nothing_and_sends_nothing(stack: LocalStack) -> None:
    """A replayed ``set-store`` (or ``merchants add``) with the code the merchant has: no
    acknowledgement is invalidated, no label queued, nothing counted stale."""
    _started(stack, 12)
    said = stack.cli("merchants", "set-store", M, STORE)
    said += stack.cli("merchants", "add", M, "--store-code", STORE)
    assert "moved from store" not in said
    assert stack.drain("LabelQueue", "hipoink_sender").records == 0
    assert _status(stack)["stale_labels"] == 0
    assert stack.run_cycle().labels.records == 0
