"""What operators see: metrics (captured EMF) in the scenarios that cause them, and status."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.demo import expected_labels
from devkit.emf import metric_sums, metric_values
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync_ops.cli import main


def _new_lines(stack: LocalStack, since: int) -> list[str]:
    return stack.logs[since:]


def test_a_cycle_reports_what_it_did(stack: LocalStack) -> None:
    clover = stack.clover
    assert clover is not None
    now = clover.clock_ms()
    gas = gas_station_catalog(40, seed=1, start_ms=now - 3 * 3_600_000)
    corner = convenience_store_catalog(30, seed=2, start_ms=now - 3 * 3_600_000)
    stack.add_merchant("MOPSGAS00001", "tok-gas", "OPS-GAS", items=gas)
    stack.add_merchant("MOPSCNR00001", "tok-cnr", "OPS-CNR", items=corner)
    labels = len(expected_labels(gas)) + len(expected_labels(corner))

    stack.run_cycle()

    sums = metric_sums(stack.logs)
    assert sums["PollsDispatched"] == 2
    assert sums["Polls"] == 2
    assert sums["ItemsFetched"] == 70
    assert sums["CloverRequests"] == 2
    assert sums["LabelUpsertsQueued"] == labels
    assert sums["LabelsUpserted"] == labels
    assert sums["MerchantsStale"] == 0
    assert "SecondsSinceLastSuccess" not in sums  # a first poll has no previous success

    mark = len(stack.logs)
    fuel = next(i for i in gas if i["priceType"] == "PER_UNIT")
    clover.update_item("MOPSGAS00001", fuel["id"], price=fuel["price"] + 5)
    stack.run_cycle()

    new = metric_values(_new_lines(stack, mark))
    assert sum(new["LabelsUpserted"]) == 1
    assert sum(new["ProductsChanged"]) == 1
    (latency,) = new["LabelDeliveryLatency"]
    assert 0 <= latency < 60
    # One value per batch (both polls were one invocation): the older of the two ages.
    assert len(new["SecondsSinceLastSuccess"]) == 1
    assert all(0 <= age < 60 for age in new["SecondsSinceLastSuccess"])


def test_status_and_gauges_name_stale_reauth_and_stale_labels(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    for seed, (merchant_id, store) in enumerate(
        (
            ("MFRESH000001", "S-FRESH"),
            ("MSTALE000001", "S-STALE"),
            ("MREAUTH00001", "S-REAUTH"),
            ("MLABELS00001", "S-LABELS"),
        )
    ):
        items = gas_station_catalog(20, seed=seed)
        stack.add_merchant(merchant_id, f"tok-{merchant_id}", store, items=items)
    stack.run_cycle()

    clover.set_token("MREAUTH00001", "a-token-we-do-not-have")
    hipoink.down_stores = {"S-LABELS"}
    changed = next(i for i in clover.items("MLABELS00001") if not i.get("hidden"))
    clover.update_item("MLABELS00001", changed["id"], name="Changed while Hipoink is down")
    second = stack.run_cycle()
    assert second.queue_depths["LabelDeadLetterQueue"] == 1

    states = runtime.state_store()
    stale = states.load("MSTALE000001")
    assert stale.last_success_at is not None
    stale.last_success_at -= timedelta(minutes=20)  # three 5-minute intervals have passed
    states.save(stale)

    mark = len(stack.logs)
    stack.dispatch()
    gauges = metric_sums(_new_lines(stack, mark))
    assert gauges["MerchantsStale"] == 1
    assert gauges["MerchantsNeedingReauth"] == 1
    assert gauges["StaleLabels"] == 1
    assert gauges["StalestMerchantSeconds"] >= 20 * 60
    assert any(
        '"merchants need attention"' in line and "MSTALE000001" in line for line in stack.logs
    )

    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["merchant_id"]: r for r in json.loads(captured.out)}
    assert "1 not fresh, 1 need re-auth, 1 with stale labels" in captured.err
    assert [m for m, r in rows.items() if not r["fresh"]] == ["MSTALE000001"]
    assert rows["MREAUTH00001"]["auth"] == "needs_reauth"
    assert "CloverAuthError" in rows["MREAUTH00001"]["last_error"]
    assert {m: r["stale_labels"] for m, r in rows.items()} == {
        "MFRESH000001": 0,
        "MSTALE000001": 0,
        "MREAUTH00001": 0,
        "MLABELS00001": 1,
    }


def test_clover_429s_are_counted_in_total_and_by_limit(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(CLOVER_PAGE_SIZE="5")
    clover = stack.clover
    assert clover is not None
    clover.token_rps = 3
    stack.add_merchant("MLIMITED0001", "tok-limited", "S-LIMITED", items=gas_station_catalog(30))

    stack.run_cycle()

    answered_429 = sum(1 for r in clover.requests if r.status == 429)
    assert answered_429 > 0
    assert metric_sums(stack.logs)["CloverRateLimited"] == answered_429
    by_limit = metric_sums(stack.logs, {"Limit": "tokenLimit"})
    assert by_limit["CloverRateLimitedByLimit"] == answered_429
    assert len(stack.products("MLIMITED0001")) == 30  # and nothing was lost to the limits


def test_poll_and_resync_commands(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    stack.add_merchant("MCMD00000001", "tok-cmd", "S-CMD", items=gas_station_catalog(25))
    stack.run_cycle()
    expected = expected_labels(clover.items("MCMD00000001"))
    assert hipoink.labels("S-CMD") == expected

    assert main(["poll", "MCMD00000001"]) == 0
    assert stack.queue_depths()["PollQueue"] == 1
    stack.drain("PollQueue", "poller")

    hipoink.reset_requests()
    assert main(["resync", "MCMD00000001"]) == 0
    assert f"{len(expected)} label(s)" in capsys.readouterr().out
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")
    sent = {pc for r in hipoink.requests if r.path.endswith("create_multiple") for pc in r.codes}
    assert sent == set(expected)
    assert runtime.state_store().load("MCMD00000001").high_water_ms is not None

    assert main(["poll", "NOSUCHMERCHANT"]) == 2
    assert "unknown merchant 'NOSUCHMERCHANT'" in capsys.readouterr().err


def test_a_missing_stack_is_named(capsys: pytest.CaptureFixture[str], stack: LocalStack) -> None:
    assert main(["--stack", "no-such-stack", "status"]) == 2
    assert "no stack named 'no-such-stack'" in capsys.readouterr().err


def test_the_remaining_metrics_in_the_scenarios_that_cause_them(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Removals (hidden, swept, confirmed after a webhook), an item without a product code,
    a record Hipoink refuses, an unsorted Clover page and a Clover error, each counted."""
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="2")
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    items: list[dict[str, object]] = [
        {"name": f"Item {i}", "price": 100 + i, "priceType": "FIXED", "sku": f"OPS{i:03d}"}
        for i in range(8)
    ]
    items.append({"name": "No code at all", "price": 150, "priceType": "FIXED"})
    stack.add_merchant("MMETRICS0001", "tok-metrics", "S-METRICS", items=items)
    stack.add_merchant("MBROKEN00001", "tok-broken", "S-BROKEN", items=gas_station_catalog(5))
    clover.fail_next(200, merchant_id="MBROKEN00001", body="<html>not json</html>")

    first = stack.run_cycle()

    sums = metric_sums(stack.logs)
    assert sums["InvalidItems"] == 1  # the item without a code: stored, flagged, no label
    assert sums["CloverErrors"] == 1  # the broken merchant's first poll, retried by SQS
    assert first.polls.failures == 1
    assert len(stack.products("MBROKEN00001")) == 5

    by_created = sorted(clover.items("MMETRICS0001"), key=lambda i: i["createdTime"])
    by_created = [i for i in by_created if i.get("sku")]
    hidden, swept, confirmed, refused, early, late = by_created[:6]
    now = clover.clock_ms()  # stamps in the (recent) past: items are listed once stamped
    clover.freeze_clock(now - 2_000)
    clover.hide_item("MMETRICS0001", hidden["id"])
    clover.delete_item("MMETRICS0001", swept["id"])
    clover.delete_item("MMETRICS0001", confirmed["id"])
    hipoink.reject_pcs = {str(refused["sku"])}
    clover.update_item("MMETRICS0001", refused["id"], price=999)
    # Modified in the opposite order of creation: a page ordered by createdTime DESC (Clover
    # ignoring orderBy) is then not sorted by modifiedTime, and the poll must notice.
    clover.update_item("MMETRICS0001", early["id"], price=201)
    clover.freeze_clock(now - 1_000)
    clover.update_item("MMETRICS0001", late["id"], price=202)
    clover.freeze_clock(None)
    clover.ignore_order_by = True
    mark = len(stack.logs)
    delivery = stack.send_webhook(
        {
            "appId": "APP",
            "merchants": {
                "MMETRICS0001": [{"objectId": f"I:{confirmed['id']}", "type": "DELETE", "ts": 1}]
            },
        },
        stack.env["CLOVER_WEBHOOK_AUTH"],
    )

    assert delivery.status == 202
    new = metric_sums(_new_lines(stack, mark))
    assert new["WebhookRequests"] == 1
    assert new["DeletesConfirmed"] == 1  # the webhook's DELETE, confirmed by a single GET
    assert new["SweepDeletions"] == 1  # the deletion nobody announced
    assert new["FullWalkFallbacks"] == 1
    assert new["LabelDeletesQueued"] == 3  # hidden, confirmed, swept
    assert new["LabelsDeleted"] == 3
    assert new["LabelsRejected"] == 1
    assert hipoink.labels("S-METRICS")[str(late["sku"])]["pp"] == "2.02"
    gone = {str(i["sku"]) for i in (hidden, swept, confirmed)}
    assert not gone & hipoink.labels("S-METRICS").keys()


def test_a_clover_without_a_date_header_keeps_the_cursor_and_says_so(stack: LocalStack) -> None:
    clover = stack.clover
    assert clover is not None
    stack.add_merchant("MNODATE00001", "tok-nodate", "S-NODATE", items=gas_station_catalog(10))
    stack.run_cycle()
    cursor = runtime.state_store().load("MNODATE00001").high_water_ms
    clover.send_date = False
    changed = next(i for i in clover.items("MNODATE00001") if not i.get("hidden"))
    clover.update_item("MNODATE00001", changed["id"], price=123)
    mark = len(stack.logs)

    stack.run_cycle()

    assert metric_sums(_new_lines(stack, mark))["CloverClockMissing"] == 1
    assert runtime.state_store().load("MNODATE00001").high_water_ms == cursor
    assert stack.hipoink is not None
    assert stack.hipoink.labels("S-NODATE")[changed["sku"]]["pp"] == "1.23"  # nothing lost


def test_a_cursor_lost_where_polls_succeeded_before_makes_the_next_poll_a_sweep(
    stack: LocalStack,
) -> None:
    """The cursor unreadable (an operator's console edit), the state's history kept: the
    next poll is a first read, which lists the whole catalog, and it sweeps too (Postgres
    holds the merchant's rows): an item deleted in Clover meanwhile loses its label at
    once, not at the next scheduled sweep hours later. (A first read used to never sweep.)"""
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    merchant_id = "MLOSTCURSOR1"
    stack.add_merchant(merchant_id, "tok-lost", "S-LOST", items=gas_station_catalog(10))
    stack.run_cycle()
    gone = next(i for i in clover.items(merchant_id) if not i.get("hidden") and i.get("sku"))
    assert str(gone["sku"]) in hipoink.labels("S-LOST")
    clover.delete_item(merchant_id, gone["id"])
    runtime.state_store()._dynamodb.call(  # type: ignore[attr-defined]
        "UpdateItem",
        {
            "TableName": stack.env["STATE_TABLE_NAME"],
            "Key": {"merchant_id": {"S": merchant_id}},
            "UpdateExpression": "SET high_water_ms = :soon",
            "ExpressionAttributeValues": {":soon": {"S": "soon"}},
        },
    )
    mark = len(stack.logs)

    stack.run_cycle()

    assert metric_sums(_new_lines(stack, mark))["SweepDeletions"] == 1
    assert str(gone["sku"]) not in hipoink.labels("S-LOST")
    assert runtime.state_store().load(merchant_id).high_water_ms is not None


def test_a_state_item_edited_by_hand_stops_neither_the_fleet_nor_status_and_its_poll_repairs_it(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attributes of the wrong type or range in one merchant's state item: the dispatcher
    still measures every merchant, ``status`` still lists them all, and the merchant's next
    poll reads its catalog again (no cursor) and writes its state anew."""
    for seed, merchant_id in enumerate(("MGOODSTATE01", "MBADSTATE001")):
        items = gas_station_catalog(10, seed=seed)
        stack.add_merchant(merchant_id, f"tok-{merchant_id}", f"S-{merchant_id}", items=items)
    stack.run_cycle()
    table = runtime.state_store()
    table._dynamodb.call(  # as an operator's console edit leaves it
        "UpdateItem",
        {
            "TableName": stack.env["STATE_TABLE_NAME"],
            "Key": {"merchant_id": {"S": "MBADSTATE001"}},
            "UpdateExpression": "SET last_success_at = :when, high_water_ms = :cursor,"
            " version = :version, poll_count = :count",
            "ExpressionAttributeValues": {
                ":when": {"S": "yesterday"},
                ":cursor": {"N": "1" + "0" * 37},
                ":version": {"S": "7"},
                ":count": {"BOOL": True},
            },
        },
    )

    mark = len(stack.logs)
    stack.dispatch()
    gauges = metric_sums(_new_lines(stack, mark))
    assert "FleetHealthErrors" not in gauges
    assert gauges["MerchantsStale"] == 0
    [attention] = [json.loads(x) for x in _new_lines(stack, mark) if "need attention" in x]
    assert attention["unreadable_state"] == {
        "MBADSTATE001": ["version", "high_water_ms", "poll_count", "last_success_at"]
    }
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    rows = {r["merchant_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["MBADSTATE001"]["unreadable_state"] == (
        "version, high_water_ms, poll_count, last_success_at"
    )
    assert rows["MBADSTATE001"]["cursor"] is None
    assert rows["MGOODSTATE01"]["unreadable_state"] is None

    polls = stack.drain("PollQueue", "poller")
    assert polls.failures == 0
    repaired = table.load("MBADSTATE001")
    assert repaired.unreadable == ()
    assert repaired.version == 1
    assert repaired.high_water_ms is not None
    assert repaired.high_water_ms < 10**13
    assert repaired.last_success_at is not None


def test_a_paused_merchant_is_not_called_not_fresh(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disabled merchant is not polled, so its age says nothing: ``status`` shows its
    ``fresh`` as none (not judged), as the dispatcher's gauge leaves it out, rather than
    false, which would send an operator after a store that was paused on purpose."""
    for seed, merchant_id in enumerate(("MRUNNING0001", "MPAUSED00001")):
        items = gas_station_catalog(10, seed=seed)
        stack.add_merchant(merchant_id, f"tok-{merchant_id}", f"S-{merchant_id}", items=items)
    stack.run_cycle()
    assert main(["merchants", "disable", "MPAUSED00001"]) == 0
    states = runtime.state_store()
    for merchant_id in ("MRUNNING0001", "MPAUSED00001"):
        state = states.load(merchant_id)
        assert state.last_success_at is not None
        state.last_success_at -= timedelta(minutes=20)  # three 5-minute intervals have passed
        states.save(state)

    mark = len(stack.logs)
    stack.dispatch()
    assert metric_sums(_new_lines(stack, mark))["MerchantsStale"] == 1  # the running one only
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["merchant_id"]: r for r in json.loads(captured.out)}
    assert (rows["MRUNNING0001"]["fresh"], rows["MPAUSED00001"]["fresh"]) == (False, None)
    assert rows["MPAUSED00001"]["last_success"] is not None  # what it had is still shown
    assert "2 merchant(s), 1 active: 1 not fresh," in captured.err

    # Enabled again, it is judged again, from its resume: no poll could have run yet, so it
    # is fresh (test_a_merchant_resumed_after_a_long_pause_is_judged_from_its_resume
    # follows it until it is stale).
    assert main(["merchants", "enable", "MPAUSED00001"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    rows = {r["merchant_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["MPAUSED00001"]["fresh"] is True


def _age(stack: LocalStack, merchant_ids: tuple[str, ...], minutes: int) -> None:
    """Time passes for the merchants: every time esl-sync stored of them moves back (their
    last success, their registration, when they became pollable), so that the dispatcher and
    ``status`` judge them on their own clock."""
    states = runtime.state_store()
    for merchant_id in merchant_ids:
        state = states.load(merchant_id)
        if state.last_success_at is not None:
            state.last_success_at -= timedelta(minutes=minutes)
            states.save(state)
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE merchants SET created_at = created_at - make_interval(mins => %s),"
            " pollable_since = pollable_since - make_interval(mins => %s)"
            " WHERE merchant_id = ANY(%s)",
            (minutes, minutes, list(merchant_ids)),
        )


def _tick(stack: LocalStack) -> tuple[float, dict[str, bool | None]]:
    """A dispatcher tick's ``MerchantsStale``, and each merchant's ``fresh`` in ``status``
    (the tick's polls are dropped: no poll runs)."""
    mark = len(stack.logs)
    stack.dispatch()
    stale = metric_sums(_new_lines(stack, mark))["MerchantsStale"]
    _drop(stack, "PollQueue")
    rows = json.loads(stack.cli("status", "--json"))
    return stale, {r["merchant_id"]: r["fresh"] for r in rows}


def _drop(stack: LocalStack, queue: str) -> None:
    """Receive the queue's messages and delete them, undelivered (moto, as SQS, allows one
    purge a minute)."""
    url = stack.urls[queue]
    while messages := stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _failed_polls(stack: LocalStack, merchant_ids: tuple[str, ...]) -> None:
    """The merchants' queued polls run and fail (Clover answers a page that is no JSON)."""
    assert stack.clover is not None
    for merchant_id in merchant_ids:
        stack.clover.fail_next(200, merchant_id=merchant_id, body="<html>not json</html>")
    polls = stack.drain("PollQueue", "poller")
    assert polls.failures >= 1
    assert stack.clover.clear_faults() == 0  # each merchant's poll met its failure
    _drop(stack, "PollQueue")  # SQS would retry them: here they stay failed


def test_a_merchant_resumed_after_a_long_pause_is_judged_from_its_resume(
    stack: LocalStack,
) -> None:
    """Paused for a day and resumed (``merchants enable``, ``merchants add`` with new tokens,
    or the merchant installing the app again), a merchant has not been polled since it
    was paused: the next tick must not count it stale before its first poll could run (a
    false ``MerchantNotFreshAlarm`` on every resume). Its age runs from the resume, so if
    no poll succeeds it is stale three intervals later, as any merchant."""
    resumed = ("MRESUMEENA01", "MRESUMEADD01", "MRESUMEINS01")
    for seed, merchant_id in enumerate(resumed):
        items = gas_station_catalog(5, seed=seed)
        stack.add_merchant(merchant_id, f"tok-{merchant_id}", f"S-{merchant_id}", items=items)
    stack.run_cycle()
    for merchant_id in resumed:
        stack.cli("merchants", "disable", merchant_id)
    _age(stack, resumed, 24 * 60)  # paused for a day
    assert _tick(stack) == (0, dict.fromkeys(resumed))  # not polled, not judged

    enabled, added, installed = resumed
    stack.cli("merchants", "enable", enabled)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(f"tok-{added}\n"))
        stack.cli("merchants", "add", added, "--store-code", f"S-{added}", "--token-stdin")
    assert stack.install_app(installed, deliver=False).polls.records == 0

    # The next tick, before any poll could run: not stale.
    assert _tick(stack) == (0, dict.fromkeys(resumed, True))
    # Its polls fail; fourteen minutes after the resume it is still fresh ...
    stack.dispatch()
    _failed_polls(stack, resumed)
    _age(stack, resumed, 14)
    assert _tick(stack) == (0, dict.fromkeys(resumed, True))
    # ... and past three intervals (15 minutes) with no success it is stale.
    _age(stack, resumed, 2)
    assert _tick(stack) == (3, dict.fromkeys(resumed, False))
    # A poll that succeeds makes it fresh again.
    stack.run_cycle()
    assert _tick(stack) == (0, dict.fromkeys(resumed, True))


def test_a_merchant_given_its_store_code_late_is_judged_from_then(stack: LocalStack) -> None:
    """A merchant that installed the app and waited a day for its store code (``merchants
    set-store``) is not stale at the next tick, before its first poll could run; if no poll
    succeeds it is stale three intervals after the code was set."""
    assert stack.clover is not None
    assert stack.hipoink is not None
    merchant_id = "MLATESTORE01"
    stack.clover.add_merchant(merchant_id, f"unused-{merchant_id}", gas_station_catalog(5))
    stack.install_app(merchant_id)
    merchant = runtime.merchants().get(merchant_id)
    assert merchant is not None
    assert merchant.store_code is None  # it awaits its store code
    _age(stack, (merchant_id,), 24 * 60)
    assert _tick(stack) == (0, {merchant_id: None})  # not polled, not judged

    stack.hipoink.add_store("S-LATE")
    stack.cli("merchants", "set-store", merchant_id, "S-LATE")  # queues its first poll
    assert _tick(stack) == (0, {merchant_id: True})
    stack.dispatch()
    _failed_polls(stack, (merchant_id,))
    _age(stack, (merchant_id,), 14)
    assert _tick(stack) == (0, {merchant_id: True})
    _age(stack, (merchant_id,), 2)
    assert _tick(stack) == (1, {merchant_id: False})
    # Moved to another store, it was pollable all along: still judged from the first code.
    stack.cli("merchants", "set-store", merchant_id, "S-LATE-2")
    assert _tick(stack) == (1, {merchant_id: False})


def test_status_says_when_the_last_error_happened(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """``last_error`` is history (a later success keeps it), so ``status`` says when it
    happened (``last_error_at``): an error from before the last success is not a current
    one. In the JSON rows and in the text table."""
    assert stack.clover is not None
    merchant_id = "MLASTERROR01"
    stack.add_merchant(merchant_id, "tok-err", "S-ERR", items=gas_station_catalog(5))
    stack.clover.fail_next(200, merchant_id=merchant_id, body="<html>not json</html>")
    before = datetime.now(UTC)
    cycle = stack.run_cycle()  # the poll fails, and its retry succeeds
    after = datetime.now(UTC)
    assert (cycle.polls.failures, cycle.polls.records) == (1, 2)
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["fresh"], row["last_error"].split(":")[0]) == (True, "CloverBadResponse")
    failed_at = datetime.fromisoformat(row["last_error_at"])
    assert before <= failed_at < datetime.fromisoformat(row["last_success"]) <= after

    stack.run_cycle()  # another success: the error stays, with its time
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["last_error"].split(":")[0] == "CloverBadResponse"
    assert datetime.fromisoformat(row["last_error_at"]) == failed_at
    assert datetime.fromisoformat(row["last_success"]) > after

    assert main(["status"]) == 0
    header, line = capsys.readouterr().out.splitlines()[-2:]
    columns = header.split()
    assert columns[columns.index("last_error") + 1] == "last_error_at"
    assert f"{failed_at:%Y-%m-%d %H:%M:%S}" in line


def test_status_of_a_merchant_that_never_failed_has_no_error_time(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.add_merchant("MNOERROR0001", "tok-ok", "S-OK", items=gas_station_catalog(5))
    stack.run_cycle()
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["last_error"], row["last_error_at"]) == (None, None)


def test_status_lag_and_the_stalest_gauge_follow_the_freshness_rule_after_a_resume(
    stack: LocalStack,
) -> None:
    """Resumed after a day's pause, before its first poll: ``fresh`` is true (its age runs
    from the resume), and so must be what measures that age: ``lag_seconds`` (which said a
    day beside ``fresh: true``) and ``StalestMerchantSeconds``; ``last_success`` still says
    when its last poll succeeded. Sixteen minutes on with no success, all three agree it is
    stale. Whenever a merchant is judged: fresh exactly while its lag is within three of its
    intervals, and the gauge is the largest lag."""
    merchant_id = "MRESUMELAG01"
    stack.add_merchant(merchant_id, "tok-lag", "S-LAG", items=gas_station_catalog(5, seed=2))
    stack.run_cycle()
    stack.cli("merchants", "disable", merchant_id)
    _age(stack, (merchant_id,), 24 * 60)  # paused for a day
    stack.cli("merchants", "enable", merchant_id)

    for minutes, fresh in ((0, True), (16, False)):
        _age(stack, (merchant_id,), minutes)
        mark = len(stack.logs)
        stack.dispatch()
        _drop(stack, "PollQueue")  # no poll runs
        [stalest] = metric_values(_new_lines(stack, mark))["StalestMerchantSeconds"]
        [row] = json.loads(stack.cli("status", "--json"))
        since_success = datetime.now(UTC) - datetime.fromisoformat(row["last_success"])
        assert since_success > timedelta(days=1), minutes
        assert row["fresh"] is fresh, minutes
        assert minutes * 60 <= row["lag_seconds"] < minutes * 60 + 60, minutes
        assert row["lag_seconds"] - 5 <= stalest <= row["lag_seconds"], minutes
        assert (row["lag_seconds"] <= 3 * 5 * 60) is fresh, minutes
