"""A sweep confirms a bounded number of suspects a poll, whatever its kind: a store that
deleted many items (or whose listing missed many) cannot make a poll outlast its invocation
(``CloverOutOfTime`` at every poll, nothing ever removed, the merchant's polls all failing).
The rest wait for the next poll, which sweeps on from where this one stopped, so that items
a listing keeps missing but Clover's read finds never hold the deleted ones behind them.
Real moto, Postgres, the Clover and Hipoink simulators; the Lambda context's remaining time
runs down with every Clover request made (no real waiting)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from devkit.hipoink_sim import HipoinkSimulator
from devkit.lambda_runner import LambdaContext
from devkit.local_stack import LocalStack
from devkit.template import load_template
from esl_sync import runtime
from esl_sync.sync import poll as poll_module
from tests.integration.test_poll import emf_metrics, items_without_times, poll_lines, sims

MID = "MSWEEPPACE01"
STORE = "STORE-SP"
TIMEOUT_MS = 1000 * int(load_template()["Resources"]["PollerFunction"]["Properties"]["Timeout"])
CLOVER_REQUEST_MS = 50_000  # what each Clover request takes in this test's clock
PER_POLL = 2  # confirmations a poll's time holds at that pace, with the listing before them


def slow_clover(stack: LocalStack) -> Callable[[str], LambdaContext]:
    """Every invocation's context: each Clover request takes 50 s of its 300 s (a store
    whose suspects' reads at the token's pace fill the poll's time)."""
    assert stack.clover is not None
    clover = stack.clover

    def context(function: str) -> LambdaContext:
        before = clover.request_count()

        def remaining() -> int:
            return TIMEOUT_MS - (clover.request_count() - before) * CLOVER_REQUEST_MS

        return LambdaContext(function, timeout_ms=TIMEOUT_MS, remaining=remaining)

    return context


def poll_once(stack: LocalStack) -> dict[str, object]:
    """Dispatch, the slow poll invocations (a failure redelivered until the dead-letter
    queue takes it, as SQS would), the label jobs; the poll's first line."""
    mark = len(poll_lines(stack, MID))
    stack.dispatch()
    stack.drain("PollQueue", "poller", batch_size=1, context=slow_clover(stack))
    stack.drain("LabelQueue", "hipoink_sender", batch_size=10)
    lines = poll_lines(stack, MID)[mark:]
    return lines[0] if lines else {"status": "ok"}  # a quiet poll: no line of its own


@pytest.fixture
def monkeypatched_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poll_module, "MAX_CONFIRMATIONS_PER_POLL", PER_POLL)


def test_a_sweep_longer_than_a_poll_continues_on_the_next_polls_and_every_deletion_leaves(
    make_stack: Callable[..., LocalStack], monkeypatched_bound: None
) -> None:
    # Every third poll sweeps: the first read, one incremental poll, then the sweep.
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="3")
    clover, hipoink = sims(stack)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(40))
    assert poll_once(stack)["status"] == "ok"
    items = clover.items(MID)
    assert len(hipoink.labels(STORE)) == 40

    # 7 of 40 missing (17.5 %, under the 20 % refusal): 2 that Clover's read still finds
    # (a listing that keeps missing them; first in the suspects' order), then 5 deleted.
    hidden = sorted(items, key=lambda item: item["id"])[:2]
    clover.hide_from_listing = {item["id"] for item in hidden}
    deleted = sorted(items, key=lambda item: item["id"])[2:7]
    for item in deleted:
        clover.delete_item(MID, item["id"])
    assert poll_once(stack).get("sweep") is None  # poll 2: not a sweep

    sweeps = [poll_once(stack) for _ in range(4)]
    assert [(line["status"], line.get("detail", "")[:15]) for line in sweeps] == [("ok", "")] * 4
    assert [line.get("sweep") for line in sweeps] == [
        "removed 0 of 7 missing, 2 confirmed",  # the two still there
        "removed 2 of 7 missing, 2 confirmed",
        "removed 2 of 5 missing, 2 confirmed",
        "removed 1 of 3 missing, 1 confirmed",  # the last: the sweep is done
    ]
    # Then the polls are incremental again (until the schedule's next sweep).
    assert poll_once(stack).get("sweep") is None
    shelf = hipoink.labels(STORE)
    assert all(item["sku"] not in shelf for item in deleted)
    assert all(item["sku"] in shelf for item in hidden)
    assert len(shelf) == 35
    assert emf_metrics(stack, "SweepRefused") == []
    state = runtime.state_store().load(MID)
    assert not state.sweep_requested
    assert state.consecutive_failures == 0


@pytest.mark.parametrize("status", [400, 410, 500])
def test_an_item_whose_read_clover_keeps_refusing_is_kept_and_the_poll_goes_on(
    make_stack: Callable[..., LocalStack], status: int
) -> None:
    """One suspect's single-item read refused every time (a 400, a 410, a 5xx after the
    client's retries): that item is kept (not confirmed gone), named and counted
    (``SweepReadsFailed``); the other suspect is removed and a price change of the same
    poll reaches the shelf. Before, every sweeping poll failed on it (status ``failed``),
    so none of the merchant's changes reached the shelf while the sweep stayed due."""
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1")  # every poll after the first sweeps
    hipoink, unread, deleted, changed = one_unreadable_one_deleted(stack, status)

    mark = len(poll_lines(stack, MID))
    stack.run_cycle()
    [line] = poll_lines(stack, MID)[mark:]
    assert (line["status"], line["sweep"]) == ("ok", "removed 1 of 2 missing")
    shelf = hipoink.labels(STORE)
    assert shelf[changed["sku"]]["pp"] == "42.42"
    assert deleted["sku"] not in shelf
    assert unread["sku"] in shelf  # kept: Clover never said it is gone
    assert [value for value, _ in emf_metrics(stack, "SweepReadsFailed")] == [1]
    warning = next(
        json.loads(entry) for entry in stack.logs if "items whose read Clover refused" in entry
    )
    assert list(warning["unread"]) == [unread["id"]]


def one_unreadable_one_deleted(
    stack: LocalStack, status: int
) -> tuple[HipoinkSimulator, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Ten items synced; then two deleted in Clover, the first of them answering its
    single-item read with ``status`` every time, and a third repriced to 42.42. Returns the
    Hipoink simulator and the unread, deleted and changed items."""
    clover, hipoink = sims(stack)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(10))
    stack.run_cycle()
    items = sorted(clover.items(MID), key=lambda item: item["id"])
    unread, deleted, changed = items[0], items[1], items[5]
    for item in (unread, deleted):
        clover.delete_item(MID, item["id"])
    clover.item_read_status = {unread["id"]: status}
    clover.update_item(MID, changed["id"], price=4242)
    return hipoink, unread, deleted, changed


@pytest.mark.parametrize("status", [400, 410, 500])
def test_a_webhook_deletion_whose_read_clover_keeps_refusing_fails_no_poll(
    make_stack: Callable[..., LocalStack], status: int
) -> None:
    """The webhook's deletions (``pending_deletes``) are confirmed by the same single-item
    read as a sweep's suspects: one whose read Clover keeps refusing is kept, like a
    suspect (``sweep.UNREAD``), the other removed, and the poll's price change reaches the
    shelf. Before, the poll failed on it, was redelivered and failed again (the state,
    pending deletion included, unsaved), so none of the merchant's changes reached the
    shelf."""
    stack = make_stack()
    hipoink, unread, deleted, changed = one_unreadable_one_deleted(stack, status)
    assert runtime.state_store().add_pending_deletes(MID, [unread["id"], deleted["id"]], limit=500)

    mark = len(poll_lines(stack, MID))
    stack.run_cycle()
    lines = poll_lines(stack, MID)[mark:]
    assert [(line["status"], line["deletes_confirmed"]) for line in lines] == [("ok", 1)]
    shelf = hipoink.labels(STORE)
    assert shelf[changed["sku"]]["pp"] == "42.42"
    assert deleted["sku"] not in shelf
    assert unread["sku"] in shelf  # kept: Clover never said it is gone


def test_a_sweep_asked_for_during_a_sweep_over_several_polls_reads_every_suspect(
    make_stack: Callable[..., LocalStack], monkeypatched_bound: None
) -> None:
    """A webhook asks for a sweep while a sweep over several polls is under way: that sweep
    ends recording done the request it served (none: the schedule's), not the webhook's,
    so the next poll sweeps from the first id and removes the item deleted before the id
    the sweep went on after. Before (the sweep's place a text in ``sweep_request_done``),
    its end recorded the webhook's request done, and that item kept its label until the
    next scheduled sweep, hours on."""
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="3")
    clover, hipoink = sims(stack)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(40))
    assert poll_once(stack)["status"] == "ok"
    items = sorted(clover.items(MID), key=lambda item: item["id"])
    clover.hide_from_listing = {item["id"] for item in items[1:3]}  # Clover still has them
    for item in items[3:6]:
        clover.delete_item(MID, item["id"])
    assert poll_once(stack).get("sweep") is None  # poll 2: not a sweep
    assert poll_once(stack)["sweep"] == "removed 0 of 5 missing, 2 confirmed"
    state = runtime.state_store().load(MID)
    assert (state.sweep_after, state.sweep_for, state.sweep_requested) == (
        items[2]["id"],
        None,  # the schedule's sweep: no request was open
        False,
    )
    [row] = json.loads(stack.cli("status", "--json"))
    assert row["sweep_after"] == items[2]["id"]  # the operator sees it under way, and where

    # A webhook reports more deletions than the state holds: it asks for a sweep. One of
    # them sorts before the id the sweep under way goes on after.
    clover.delete_item(MID, items[0]["id"])
    assert not runtime.state_store().add_pending_deletes(MID, [items[0]["id"], "X"], limit=1)
    request = runtime.state_store().load(MID).sweep_request
    assert request is not None

    # The sweep under way goes on after items[2]: items[3:5], then items[5], and ends.
    sweeps = [poll_once(stack).get("sweep") for _ in range(2)]
    assert sweeps == ["removed 2 of 6 missing, 2 confirmed", "removed 1 of 4 missing, 1 confirmed"]
    state = runtime.state_store().load(MID)
    assert (state.sweep_after, state.sweep_for) == (None, None)
    assert state.sweep_requested  # the webhook's request is still open
    assert json.loads(stack.cli("status", "--json"))[0]["sweep_after"] is None
    assert items[0]["sku"] in hipoink.labels(STORE)

    # The next poll sweeps from the first id, for the webhook's request: items[0] leaves.
    sweeps = [poll_once(stack).get("sweep") for _ in range(2)]
    assert sweeps == ["removed 1 of 3 missing, 2 confirmed", "removed 0 of 2 missing, 1 confirmed"]
    assert items[0]["sku"] not in hipoink.labels(STORE)
    state = runtime.state_store().load(MID)
    assert (state.sweep_request_done, state.sweep_requested) == (request, False)
    assert poll_once(stack).get("sweep") is None  # incremental again


@pytest.mark.parametrize("edited", [{"S": "not an id!"}, {"N": "7"}])
def test_a_sweep_whose_place_was_edited_by_hand_survives_a_failed_poll(
    make_stack: Callable[..., LocalStack], edited: dict[str, str]
) -> None:
    """``sweep_after`` edited by hand (unreadable) makes a sweep due that starts over from
    the first id. A poll that fails before it swept saves its failure: that save must not
    write the unreadable place away as 'no sweep under way', or the sweep asked for is
    lost and a deleted item keeps its label until the next scheduled sweep."""
    assert_a_failed_poll_keeps_the_sweep_asked_for(make_stack, "sweep_after", edited)


def test_pending_deletes_edited_by_hand_survive_a_failed_poll(
    make_stack: Callable[..., LocalStack],
) -> None:
    """``pending_deletes`` unreadable (edited by hand) makes a sweep due: only a sweep finds
    what it held. A poll that fails before it swept must not remove it with its failure."""
    assert_a_failed_poll_keeps_the_sweep_asked_for(make_stack, "pending_deletes", None)


def assert_a_failed_poll_keeps_the_sweep_asked_for(
    make_stack: Callable[..., LocalStack], attribute: str, edited: dict[str, str] | None
) -> None:
    """One item deleted in Clover without a webhook (only a sweep finds it); ``attribute``
    of the state item edited by hand to ``edited`` (None: the deleted item's id as a plain
    string), which makes a sweep due; then a poll that fails (Clover's 500s, its
    redeliveries too) and two cycles: the sweep still came, the label is gone."""
    import boto3

    from devkit.local_stack import REGION

    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1000")
    clover, hipoink = sims(stack)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(10))
    stack.run_cycle()
    items = sorted(clover.items(MID), key=lambda item: item["id"])
    clover.delete_item(MID, items[0]["id"])
    boto3.client("dynamodb", region_name=REGION).update_item(
        TableName="StateTable",
        Key={"merchant_id": {"S": MID}},
        UpdateExpression=f"SET {attribute} = :odd",
        ExpressionAttributeValues={":odd": edited or {"S": items[0]["id"]}},
    )
    assert attribute in runtime.state_store().load(MID).unreadable
    clover.fail_next(500, count=100, merchant_id=MID)
    stack.run_cycle()
    clover.clear_faults(MID)
    assert runtime.state_store().load(MID).consecutive_failures > 0
    stack.run_cycle()
    stack.run_cycle()
    assert items[0]["sku"] not in hipoink.labels(STORE)


def test_status_shows_no_place_a_sweep_will_not_go_on_from(
    make_stack: Callable[..., LocalStack],
) -> None:
    """``sweep_for`` unreadable (edited by hand) makes the next poll start the sweep over
    from the first id (``continued_after``): ``status`` showed ``sweep_after`` as the place
    the sweep would go on from all the same (found by helper-100)."""
    import boto3

    from devkit.local_stack import REGION

    stack = make_stack()
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(3))
    stack.run_cycle()
    boto3.client("dynamodb", region_name=REGION).update_item(
        TableName="StateTable",
        Key={"merchant_id": {"S": MID}},
        UpdateExpression="SET sweep_after = :after, sweep_for = :odd",
        ExpressionAttributeValues={":after": {"S": "ITEM-001"}, ":odd": {"N": "7"}},
    )
    (row,) = json.loads(stack.cli("status", "--json"))
    assert row["sweep_after"] is None
    assert "sweep_for" in json.dumps(row["unreadable_state"])
