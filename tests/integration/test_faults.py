"""Faults stay small (issue 11, part 8), through the real dispatcher and poller: the
dispatcher queues every poll while the state table cannot be read (only its gauges fail),
and a poll that fails gives its lease back, so SQS's retry does the work at once."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg
import pytest

from devkit.catalog import gas_station_catalog
from devkit.emf import metric_sums, metric_values
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync.messages import PollRequest
from esl_sync.settings import ConfigurationError
from esl_sync.store.aws_json import AwsError
from esl_sync.store.dynamo import DynamoStateStore
from esl_sync.store.postgres import Database
from esl_sync.store.sqs import SqsLabelQueue
from esl_sync.sync.poll_batch import PollsFailedInOwnParts
from tests.pg_conflicts import deadlock_once

MERCHANTS = ["MFAULT000001", "MFAULT000002", "MFAULT000003"]


def entries(stack: LocalStack) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.logs if line.startswith("{")]


def poll_lines(stack: LocalStack, merchant_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in entries(stack)
        if e.get("message") == "poll finished" and e.get("merchant_id") == merchant_id
    ]


def statuses(lines: list[str], merchant_id: str) -> list[str]:
    """The merchant's polls in these lines: a quiet poll (nothing found) is named only in
    its batch's "polls without changes" line; it counts as "ok"."""
    found = []
    for line in lines:
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("message") == "poll finished" and entry.get("merchant_id") == merchant_id:
            found.append(entry["status"])
        if entry.get("message") == "polls without changes" and merchant_id in entry["merchant_ids"]:
            found.append("ok")
    return found


def poller_event(merchant_id: str, message_id: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "poller.json").read_text())
    record = event["Records"][0]
    record["messageId"] = message_id
    record["body"] = PollRequest(merchant_id=merchant_id, reason="manual").to_json()
    return event


def lease_of(stack: LocalStack, merchant_id: str) -> str | None:
    item = (
        boto3.client("dynamodb")
        .get_item(TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": merchant_id}})
        .get("Item", {})
    )
    owner = item.get("lease_owner")
    return None if owner is None else str(owner["S"])


# -- the dispatcher ----------------------------------------------------------------------


def test_the_dispatcher_queues_every_poll_while_dynamodb_fails(stack: LocalStack) -> None:
    for merchant_id in MERCHANTS:
        stack.add_merchant(merchant_id, f"tok-{merchant_id}", f"STORE-{merchant_id[-1]}")
    # The state table is gone: every read of it fails (ResourceNotFoundException).
    boto3.client("dynamodb").delete_table(TableName=stack.env["STATE_TABLE_NAME"])

    answer = stack.invoke("dispatcher", {"reason": "schedule"})

    assert answer["dispatched"] == len(MERCHANTS)
    assert stack.queue_depths()["PollQueue"] == len(MERCHANTS)
    sums = metric_sums(stack.logs)
    assert sums["FleetHealthErrors"] == 1
    assert sums["PollsDispatched"] == len(MERCHANTS)
    assert "MerchantsStale" not in sums  # missing: the freshness alarm treats it as breaching
    [error] = [e for e in entries(stack) if e.get("level") == "ERROR"]
    assert error["message"].startswith("fleet health not measured")
    assert "ResourceNotFoundException" in error["exception"]


def test_the_dispatcher_measures_the_fleet_when_it_can(stack: LocalStack) -> None:
    stack.add_merchant(MERCHANTS[0], "tok", "STORE-1")
    stack.invoke("dispatcher", {"reason": "schedule"})
    sums = metric_sums(stack.logs)
    assert (sums["MerchantsStale"], sums.get("FleetHealthErrors", 0)) == (0, 0)


@pytest.mark.parametrize("scheduled", ["{:%Y-%m-%dT%H:%M:%S}", "{:%Y-%m-%d}"])
def test_a_scheduled_time_without_an_offset_is_utc(stack: LocalStack, scheduled: str) -> None:
    """The Scheduler sends ``…Z``; an operator's manual tick may leave the offset (or the
    time) out. It is read as UTC, like Lambda's clock: compared as it was with the states'
    times, the fleet's health failed (an error line, the gauges missing: the alarm)."""
    stack.add_merchant(MERCHANTS[0], "tok", "STORE-1")
    now = datetime.now(UTC)
    answer = stack.invoke(
        "dispatcher", {"reason": "schedule", "scheduled_time": scheduled.format(now)}
    )
    assert answer["dispatched"] == 1
    sums = metric_sums(stack.logs)
    assert (sums["MerchantsStale"], sums.get("FleetHealthErrors", 0)) == (0, 0)
    assert [e for e in entries(stack) if e.get("level") == "ERROR"] == []


def test_a_tick_far_from_the_clock_still_measures_the_fleet_by_the_clock(
    stack: LocalStack,
) -> None:
    """Ages follow the clock, due-ness the tick: a manual tick dated 9999 made every merchant
    look stale (a false alarm), one dated 0001 made every age negative (staleness hidden)."""
    fresh, stale = MERCHANTS[0], MERCHANTS[1]
    stack.add_merchant(fresh, "tok", "STORE-1")
    stack.run_cycle()  # polled just now
    stack.add_merchant(stale, "tok", "STORE-2")  # never polled, added two hours ago
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE merchants SET created_at = now() - interval '2 hours' WHERE merchant_id = %s",
            (stale,),
        )
    for tick in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"):
        logged = len(stack.logs)
        answer = stack.invoke("dispatcher", {"reason": "schedule", "scheduled_time": tick})
        assert answer["dispatched"] == 2
        values = metric_values(stack.logs[logged:])
        assert values["MerchantsStale"] == [1], tick  # the one never polled, only
        [stalest] = values["StalestMerchantSeconds"]
        assert 7200 <= stalest < 7200 + 300, tick


# -- the lease ---------------------------------------------------------------------------

Patch = tuple[type, str]
FAILURES: dict[str, Patch] = {
    "token decryption (KMS)": (DynamoStateStore, "open_tokens"),
    "product transaction (Postgres)": (Database, "transaction"),
    "label queue send (SQS)": (SqsLabelQueue, "send"),
    "state save (DynamoDB)": (DynamoStateStore, "save"),
}


def fail_first_calls(
    monkeypatch: pytest.MonkeyPatch, patch: Patch, times: int = 1
) -> Callable[[], int]:
    """Make ``patch`` raise on its first ``times`` calls; returns how often it was called."""
    cls, name = patch
    real = getattr(cls, name)
    calls = 0

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise ConnectionError(f"injected: {cls.__name__}.{name} unreachable")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing)
    return lambda: calls


@pytest.mark.parametrize("where", sorted(FAILURES))
def test_a_failed_poll_gives_its_lease_back_and_the_retry_does_the_work(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    merchant_id = MERCHANTS[0]
    assert stack.hipoink is not None
    stack.add_merchant(merchant_id, "tok", "STORE-1", items=gas_station_catalog(12, seed=3))
    fail_first_calls(monkeypatch, FAILURES[where])

    # The poller's own part failed: the invocation fails, and SQS retries its record.
    with pytest.raises(PollsFailedInOwnParts, match="injected"):
        stack.invoke("poller", poller_event(merchant_id, "first"))

    [failed] = poll_lines(stack, merchant_id)
    assert (failed["status"], failed["fault"], failed["level"]) == ("failed", "service", "ERROR")
    assert "injected" in failed["detail"]
    assert lease_of(stack, merchant_id) is None  # given back on the way out

    mark = len(stack.logs)
    retry = stack.invoke("poller", poller_event(merchant_id, "retry"))  # SQS's retry, at once

    assert retry == {"batchItemFailures": []}
    assert statuses(stack.logs[mark:], merchant_id) == ["ok"]
    assert metric_sums(stack.logs[mark:])["ItemsFetched"] == 12  # real work, not "busy"
    assert lease_of(stack, merchant_id) is None
    stack.drain("LabelQueue", "hipoink_sender")
    assert len(stack.hipoink.labels("STORE-1")) > 0


def test_one_merchants_clover_500_alone_in_its_batch_fails_its_record_not_the_invocation(
    stack: LocalStack,
) -> None:
    """Clover answers the batch's only merchant with 500s (every attempt): the poll fails by
    name, and the answer names its record, which SQS retries. It raised ``AllPollsFailed``,
    a failed invocation: Lambda's ``Errors``, which pages (``PollerErrorsAlarm``) for one
    merchant's Clover trouble in a fleet whose batches hold one poll."""
    merchant_id = MERCHANTS[0]
    assert stack.clover is not None
    stack.add_merchant(merchant_id, "tok", "STORE-1", items=gas_station_catalog(5, seed=4))
    stack.clover.fail_next(500, runtime.clover().max_attempts, merchant_id=merchant_id)

    answer = stack.invoke("poller", poller_event(merchant_id, "only"))

    assert answer == {"batchItemFailures": [{"itemIdentifier": "only"}]}
    [failed] = poll_lines(stack, merchant_id)
    assert (failed["status"], failed["detail"].split(":")[0]) == ("failed", "CloverServerError")
    assert stack.clover.clear_faults(merchant_id) == 0
    mark = len(stack.logs)
    assert stack.invoke("poller", poller_event(merchant_id, "only")) == {"batchItemFailures": []}
    assert statuses(stack.logs[mark:], merchant_id) == ["ok"]
    assert metric_sums(stack.logs[mark:])["ItemsFetched"] == 5


def batch_event(merchant_ids: list[str]) -> dict[str, Any]:
    """One poller event holding a poll request for each merchant (message ids: their ids)."""
    records = [poller_event(m, m)["Records"][0] for m in merchant_ids]
    return {"Records": records}


def _point_database_secret_at(stack: LocalStack, value: str) -> None:
    """What a Postgres outage looks like to the poller: the next connection it opens (here
    at a port nothing listens on) is refused. The warm connections are closed first, as a
    failover or restart closes them."""
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["DATABASE_URL_SECRET_ARN"], SecretString=value
    )
    runtime.forget_secret_state()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: a connection to it is refused


@pytest.mark.parametrize("count", [1, 3])
def test_a_batch_whose_polls_all_fail_on_postgres_fails_the_invocation_and_is_retried(
    stack: LocalStack, count: int
) -> None:
    """Postgres refusing every connection is the poller's own failure, no merchant's: the
    invocation fails (Lambda's ``Errors``, ``PollerErrorsAlarm``), after each poll's line;
    SQS retries every record of the batch, and the retry, with Postgres back, does the
    work. It answered the polls as failed records and raised nothing: no page until
    ``MerchantNotFreshAlarm``, three intervals later."""
    merchants = MERCHANTS[:count]
    for n, merchant_id in enumerate(merchants):
        stack.add_merchant(merchant_id, f"tok-{n}", f"S-{n}", items=gas_station_catalog(5, seed=n))
    url = stack.env["DATABASE_URL"]
    parts = urlsplit(url)
    login = parts.netloc.rpartition("@")[0]
    _point_database_secret_at(
        stack, urlunsplit(parts._replace(netloc=f"{login}@127.0.0.1:{_closed_port()}"))
    )

    with pytest.raises(PollsFailedInOwnParts) as raised:
        stack.invoke("poller", batch_event(merchants))

    assert sorted(raised.value.merchant_ids) == sorted(merchants)
    for merchant_id in merchants:
        [failed] = poll_lines(stack, merchant_id)  # every poll still reported
        assert (failed["status"], failed["fault"]) == ("failed", "service")
    _point_database_secret_at(stack, url)
    mark = len(stack.logs)
    assert stack.invoke("poller", batch_event(merchants)) == {"batchItemFailures": []}
    for merchant_id in merchants:
        assert statuses(stack.logs[mark:], merchant_id) == ["ok"]
    assert metric_sums(stack.logs[mark:])["ItemsFetched"] == 5 * count


def test_a_deadlock_alone_in_its_batch_is_retried_without_failing_the_invocation(
    stack: LocalStack,
) -> None:
    """A real Postgres deadlock (two transactions locking two rows in opposite order) ends
    the batch's only poll: contention a retry resolves, not an outage, so the poll fails
    by name (``TransientConflict``, ``fault: conflict``), counted as ``TransientConflicts``,
    and the answer names its record, which SQS retries; the invocation does not fail (no
    ``PollerErrorsAlarm`` page for two polls that crossed). The retry does the work."""
    merchant_id = MERCHANTS[0]
    stack.add_merchant(merchant_id, "tok", "S-0", items=gas_station_catalog(5, seed=5))

    with deadlock_once(stack.env["DATABASE_URL"], "products", merchant_id):
        answer = stack.invoke("poller", poller_event(merchant_id, "only"))

    assert answer == {"batchItemFailures": [{"itemIdentifier": "only"}]}
    [failed] = poll_lines(stack, merchant_id)
    assert (failed["status"], failed["fault"], failed["level"]) == ("failed", "conflict", "WARNING")
    assert failed["detail"].startswith("TransientConflict: Postgres DeadlockDetected")
    assert metric_sums(stack.logs)["TransientConflicts"] == 1
    assert lease_of(stack, merchant_id) is None
    mark = len(stack.logs)
    assert stack.invoke("poller", poller_event(merchant_id, "only")) == {"batchItemFailures": []}
    assert statuses(stack.logs[mark:], merchant_id) == ["ok"]
    assert metric_sums(stack.logs[mark:])["ItemsFetched"] == 5


def _refuse_product_writes(stack: LocalStack, merchant_id: str) -> None:
    """Postgres refusing the merchant's product writes (a trigger): the poller's own store
    failing its poll, and only its poll."""
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'injected: products refused'; END$$"
        )
        admin.execute(
            "CREATE TRIGGER refuse_write BEFORE INSERT OR UPDATE ON products FOR EACH ROW"
            f" WHEN (NEW.merchant_id = '{merchant_id}') EXECUTE FUNCTION refuse_write()"
        )


def test_a_clover_500_beside_a_postgres_failure_fails_the_invocation(stack: LocalStack) -> None:
    """One merchant's Clover answers 500, Postgres refuses the other's products: the batch
    failed whole and one failure is the poller's own, so the invocation fails (after both
    polls' lines) and SQS retries both records. It answered both as failed records and
    raised nothing."""
    clover_down, store_down = MERCHANTS[:2]
    assert stack.clover is not None
    for n, merchant_id in enumerate((clover_down, store_down)):
        stack.add_merchant(merchant_id, f"tok-{n}", f"S-{n}", items=gas_station_catalog(5, seed=n))
    stack.clover.fail_next(500, runtime.clover().max_attempts, merchant_id=clover_down)
    _refuse_product_writes(stack, store_down)

    with pytest.raises(PollsFailedInOwnParts) as raised:
        stack.invoke("poller", batch_event([clover_down, store_down]))

    assert raised.value.merchant_ids == [store_down]
    [clover_line] = poll_lines(stack, clover_down)
    assert (clover_line["status"], clover_line["fault"]) == ("failed", "merchant")
    assert (clover_line["level"], clover_line["detail"].split(":")[0]) == (
        "INFO",
        "CloverServerError",
    )
    [store_line] = poll_lines(stack, store_down)
    assert (store_line["status"], store_line["fault"], store_line["level"]) == (
        "failed",
        "service",
        "ERROR",
    )
    assert "injected: products refused" in store_line["detail"]
    assert "injected: products refused" in store_line["exception"]  # the traceback


def test_a_poll_that_succeeded_beside_a_postgres_failure_is_acknowledged(
    stack: LocalStack,
) -> None:
    """Where a poll of the batch succeeded, the batch did not fail whole: a raise would have
    SQS retry the succeeded record too, so the answer names the failed one alone (its line
    is an error with the traceback), as the sender's batch does."""
    healthy, store_down = MERCHANTS[:2]
    for n, merchant_id in enumerate((healthy, store_down)):
        stack.add_merchant(merchant_id, f"tok-{n}", f"S-{n}", items=gas_station_catalog(5, seed=n))
    _refuse_product_writes(stack, store_down)

    answer = stack.invoke("poller", batch_event([healthy, store_down]))

    assert answer == {"batchItemFailures": [{"itemIdentifier": store_down}]}
    assert [line["status"] for line in poll_lines(stack, healthy)] == ["ok"]
    [store_line] = poll_lines(stack, store_down)
    assert (store_line["fault"], store_line["level"]) == ("service", "ERROR")


# A crash before any poll publishes no metric of ours, and Powertools warns so: Lambda's
# own Errors metric is what counts it (the alarm).
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_a_poller_that_crashes_still_fails_its_invocation(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What escapes the batch (here: the label queue's client cannot be built, a setting)
    is no merchant's failure: the invocation still fails, which ``PollerErrorsAlarm``
    counts, and SQS retries every record."""
    merchant_id = MERCHANTS[0]
    stack.add_merchant(merchant_id, "tok", "STORE-1", items=gas_station_catalog(5, seed=4))

    @functools.cache  # as runtime's (the stack clears its caches)
    def broken() -> SqsLabelQueue:
        raise ConfigurationError("invalid setting: LABEL_QUEUE_URL: not a queue (injected)")

    monkeypatch.setattr(runtime, "label_queue", broken)

    with pytest.raises(ConfigurationError, match="LABEL_QUEUE_URL"):
        stack.invoke("poller", poller_event(merchant_id, "only"))
    assert poll_lines(stack, merchant_id) == []


def _needing_reauth(merchant_id: str) -> None:
    """A merchant whose poll is skipped under the lease (marked ``needs_reauth``): the poll
    writes no state, so the lease goes back on the way out, in a write of its own. (A
    merchant without tokens records its skip in its state, giving the lease back with it.)"""
    from esl_sync.records import Merchant

    runtime.merchants().save(Merchant(merchant_id, "STORE-1"))
    states = runtime.state_store()
    assert states.mark_needs_reauth(merchant_id, generation=states.write_token(merchant_id, "t"))


def test_a_lease_release_that_fails_once_is_tried_again(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    merchant_id = MERCHANTS[0]
    _needing_reauth(merchant_id)
    calls = fail_first_calls(monkeypatch, (DynamoStateStore, "release_lease"), times=1)

    assert stack.invoke("poller", poller_event(merchant_id, "m1")) == {"batchItemFailures": []}

    assert calls() == 2
    assert lease_of(stack, merchant_id) is None
    assert [line["status"] for line in poll_lines(stack, merchant_id)] == ["skipped"]


def test_a_lease_that_cannot_be_given_back_leaves_the_polls_outcome_alone(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB refusing the release too: the poll's own result stands (here: a skip, so
    SQS does not redeliver it), a warning and a metric say so, and the lease expires."""
    merchant_id = MERCHANTS[0]
    _needing_reauth(merchant_id)
    fail_first_calls(monkeypatch, (DynamoStateStore, "release_lease"), times=2)

    assert stack.invoke("poller", poller_event(merchant_id, "m1")) == {"batchItemFailures": []}

    assert [line["status"] for line in poll_lines(stack, merchant_id)] == ["skipped"]
    [warning] = [e for e in entries(stack) if e.get("message", "").startswith("poll lease not")]
    assert (warning["level"], warning["merchant_id"]) == ("WARNING", merchant_id)
    assert metric_sums(stack.logs)["LeaseReleaseFailures"] == 1
    assert lease_of(stack, merchant_id) is not None  # held until it expires (330 s)


def test_a_poll_whose_state_write_is_stale_still_gives_its_lease_back(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state changed under the poll (an operator's resync): its write, which would have
    given the lease back, is refused; the lease goes back on the way out all the same."""
    merchant_id = MERCHANTS[0]
    stack.add_merchant(merchant_id, "tok", "STORE-1", items=gas_station_catalog(5, seed=3))
    real = DynamoStateStore.save

    def resynced_meanwhile(self: DynamoStateStore, state: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(DynamoStateStore, "save", real)
        real(self, self.load(state.merchant_id))  # someone else's write: the version moves
        real(self, state, **kwargs)

    monkeypatch.setattr(DynamoStateStore, "save", resynced_meanwhile)
    assert stack.invoke("poller", poller_event(merchant_id, "m1")) == {"batchItemFailures": []}

    assert lease_of(stack, merchant_id) is None
    [warning] = [e for e in entries(stack) if e.get("message", "").startswith("merchant state")]
    assert "lease" in warning["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "poll request: not valid JSON"),
        ('{"merchant_id": ""}', "poll request: merchant_id: empty"),
        ('{"merchant_id": "M", "extra": 1}', "poll request: extra: not a field"),
        ('{"merchant_id": "M", "reason": "MANUAL"}', "poll request: reason: not one of"),
        ('{"merchant_id": "M", "requested_at": "yesterday"}', "poll request: requested_at: not"),
        ('{"merchant_id": "\\ud800"}', "poll request: not valid JSON (a lone surrogate)"),
        ("[" * 300 + "]" * 300, "poll request: not valid JSON (nested too deeply)"),
        (7, "poll request: body: the SQS record has no text body"),
        (None, "poll request: body: the SQS record has no text body"),
    ],
)
def test_a_record_that_is_not_a_poll_request_is_refused_alone_and_named(
    stack: LocalStack, body: object, reason: str
) -> None:
    """It is acknowledged (no retry can change it: tests/integration/test_poller_refused.py)
    and logged by its message id with the reason; the good record beside it is polled."""
    good = MERCHANTS[0]
    stack.add_merchant(good, "tok", "STORE-F1", items=gas_station_catalog(3, seed=2))
    event = poller_event(good, "good")
    bad = json.loads(json.dumps(event["Records"][0]))
    bad["messageId"], bad["body"] = "bad", body
    if body is None:
        del bad["body"]
    event["Records"].append(bad)
    mark = len(stack.logs)

    assert stack.invoke("poller", event) == {"batchItemFailures": []}

    refusals = [e for e in entries(stack)[mark:] if e.get("message", "").startswith("poll req")]
    assert [(e["message"], e["message_id"]) for e in refusals] == [
        ("poll request refused: not a poll message", "bad")
    ]
    assert refusals[0]["error"].startswith(reason)
    assert "Traceback" not in refusals[0]["error"]
    assert statuses(stack.logs[mark:], good) == ["ok"]
    assert poll_lines(stack, good)[-1]["products_changed"] == 3


def test_connections_the_database_closed_while_idle_are_reopened_and_nothing_fails(
    stack: LocalStack,
) -> None:
    """A failover, a restart or an idle timeout closes every connection a warm function
    keeps. The next tick's dispatcher and each poll worker's first poll failed on theirs
    (``AdminShutdown``): no poll queued that tick, each merchant's poll retried only after
    the queue's visibility timeout, an error and a failure on each. A connection the server
    closed while idle is now found before it is used (it has something to read) and
    opened anew."""
    assert stack.clover is not None
    for n, merchant_id in enumerate(MERCHANTS):
        stack.add_merchant(merchant_id, f"tok-{n}", f"S-{n}", items=gas_station_catalog(20, seed=n))
    first = stack.run_cycle()
    assert (first.polls.failures, first.labels.failures) == (0, 0)
    changed = {}
    for merchant_id in MERCHANTS:
        item = stack.clover.items(merchant_id)[0]
        stack.clover.update_item(merchant_id, item["id"], price=item.get("price", 0) + 7)
        changed[merchant_id] = item["id"]
    held = runtime.database()._opened[:]  # the warm functions' connections
    assert held
    with psycopg.connect(runtime.database_url(), autocommit=True) as admin:
        ended = admin.execute(
            # Waiting (up to 5 s) until each is gone: a kill racing the next statement is
            # a failure no check before sending can prevent (the poll is retried).
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE application_name = 'esl-sync' AND pid <> pg_backend_pid()"
            " AND datname = current_database()"  # this test's own: other tests share the server
        ).fetchall()
    assert len(ended) >= len(held)
    mark = len(stack.logs)

    second = stack.run_cycle()

    assert second.dispatched == len(MERCHANTS)
    assert (second.polls.failures, second.labels.failures) == (0, 0)
    lines = stack.logs[mark:]
    assert not [line for line in lines if '"level":"ERROR"' in line]
    for merchant_id in MERCHANTS:
        assert statuses(lines, merchant_id) == ["ok"]
        [row] = [p for p in stack.products(merchant_id) if p["source_id"] == changed[merchant_id]]
        item = stack.clover.item(merchant_id, changed[merchant_id])
        assert row["price"] * 100 == item["price"]
    assert all(conn.closed for conn in held)


def test_a_poll_waiting_on_a_slow_clover_outlasts_the_servers_idle_in_transaction_timeout(
    stack: LocalStack,
) -> None:
    """Operators harden Postgres with ``idle_in_transaction_session_timeout`` (a minute is
    common). A poll's transaction is open while it waits for Clover (pages, retries, a
    ``Retry-After``, delete confirmations): past that timeout the server ended its session,
    and the poll failed, every retry alike while Clover stayed slow, with its labels stale.
    The poll's transaction sets its own limit, as long as a Lambda invocation can last."""
    assert stack.clover is not None
    merchant_id = MERCHANTS[0]
    stack.add_merchant(merchant_id, "tok-slow", "S-SLOW", items=gas_station_catalog(30, seed=7))
    assert stack.run_cycle().polls.failures == 0
    item = stack.clover.items(merchant_id)[0]
    stack.clover.update_item(merchant_id, item["id"], price=item.get("price", 0) + 11)
    with psycopg.connect(runtime.database_url(), autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()
        assert database is not None
        admin.execute(
            psycopg.sql.SQL(
                "ALTER DATABASE {} SET idle_in_transaction_session_timeout = '1s'"
            ).format(psycopg.sql.Identifier(database[0]))
        )
        admin.execute(  # the warm functions' sessions end: new ones take the setting
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE application_name = 'esl-sync' AND pid <> pg_backend_pid()"
            " AND datname = current_database()"
        )
    stack.clover.delay_next(2.5)  # the poll's first page: 2.5 s, inside its transaction
    mark = len(stack.logs)

    cycle = stack.run_cycle()

    failed = [line for line in stack.logs[mark:] if "poll finished" in line and "failed" in line]
    assert cycle.polls.failures == 0, [line[line.find("detail") :][:300] for line in failed]
    assert statuses(stack.logs[mark:], merchant_id) == ["ok"]
    [row] = [p for p in stack.products(merchant_id) if p["source_id"] == item["id"]]
    assert row["price"] * 100 == item.get("price", 0) + 11


class _Stop(Exception):
    pass


_INSERT = (
    "INSERT INTO products (merchant_id, source_system, source_id, name, currency, price_type,"
    " status, content_hash) VALUES (%s, 'clover', %s, 'x', 'USD', 'FIXED', 'active', 'h')"
)


def _in_poll_transaction(
    merchant_id: str, *statements: str | tuple[str, str], stop: bool = False
) -> list[Any]:
    """Runs ``statements`` in the poll's transaction (a pair: an insert of that product
    id), then raises :class:`_Stop` when ``stop``; returns what each statement fetched."""
    fetched: list[Any] = []
    with runtime.database().transaction() as tx:
        conn = tx._conn
        for statement in statements:
            if isinstance(statement, tuple):
                conn.execute(_INSERT, (merchant_id, statement[1]))
            else:
                fetched.append(conn.execute(statement).fetchone())
        if stop:
            raise _Stop
    return fetched


def test_the_polls_transaction_commits_whole_or_rolls_back_whole_and_leaves_its_connection_idle(
    stack: LocalStack,
) -> None:
    """The poll's transaction ends itself (it sends BEGIN with its setting): whatever the
    block raises, nothing it wrote stays, and the connection is idle for the next poll
    (never inside the failed transaction); a connection that died inside it is replaced."""
    db = runtime.database()
    merchant_id = MERCHANTS[0]
    stack.add_merchant(merchant_id, "tok-tx", "S-TX")
    idle = psycopg.pq.TransactionStatus.IDLE
    show = "SHOW idle_in_transaction_session_timeout"

    def stored() -> int:
        with psycopg.connect(runtime.database_url()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM products WHERE merchant_id = %s", (merchant_id,)
            ).fetchone()
            assert row is not None
            return int(row[0])

    assert _in_poll_transaction(merchant_id, show) == [("15min",)]
    with pytest.raises(_Stop):
        _in_poll_transaction(merchant_id, ("insert", "ROLLED1"), stop=True)
    assert stored() == 0
    assert db.connection().info.transaction_status == idle
    assert db.connection().execute(show).fetchone() != ("15min",)  # SET LOCAL: that one only

    with pytest.raises(psycopg.errors.UniqueViolation):  # the transaction is aborted
        _in_poll_transaction(merchant_id, ("insert", "TWICE"), ("insert", "TWICE"))
    assert stored() == 0
    assert db.connection().info.transaction_status == idle

    with pytest.raises(psycopg.OperationalError):
        _in_poll_transaction(merchant_id, "SELECT pg_terminate_backend(pg_backend_pid())")
    _in_poll_transaction(merchant_id, ("insert", "KEPT"))  # on a new connection
    assert stored() == 1


# -- a throttled batch read ----------------------------------------------------------------


class Unprocessing:
    """DynamoDB answering BatchGetItem as it does under throttling: each answer reads at
    most ``per_call`` of the keys asked (0: none) and returns the rest as
    ``UnprocessedKeys``. Every other call goes through."""

    def __init__(self, real: Any, per_call: int) -> None:
        self._real, self._per_call = real, per_call
        self.batch_calls = 0

    def call(self, operation: str, params: Any) -> dict[str, Any]:
        if operation != "BatchGetItem":
            return dict(self._real.call(operation, params))
        self.batch_calls += 1
        [(table, request)] = params["RequestItems"].items()
        keys, n = request["Keys"], self._per_call
        answer: dict[str, Any] = {"Responses": {table: []}}
        if keys[:n]:
            read = {"RequestItems": {table: {**request, "Keys": keys[:n]}}}
            answer = dict(self._real.call(operation, read))
        answer["UnprocessedKeys"] = {table: {**request, "Keys": keys[n:]}} if keys[n:] else {}
        return answer


def _states_of(stack: LocalStack, count: int) -> list[str]:
    merchants = [f"MUNPROC{n:05d}" for n in range(count)]
    for merchant_id in merchants:
        stack.add_merchant(merchant_id, f"tok-{merchant_id}", "STORE-U")
    return merchants


def test_keys_a_throttled_batch_read_leaves_unprocessed_are_read_again_after_a_backoff(
    stack: LocalStack,
) -> None:
    """DynamoDB returns ``UnprocessedKeys`` when the table is throttled; read again at once,
    in a loop, they make the throttling worse for every poll's own state reads (AWS asks
    for an exponential backoff). Each retry waits, longer each time, and every state is read."""
    from esl_sync.store import aws_json

    merchants = _states_of(stack, 10)
    stack.run_cycle()
    unprocessing = Unprocessing(aws_json.client("dynamodb"), per_call=2)
    sleeps: list[float] = []
    store = DynamoStateStore(
        stack.env["STATE_TABLE_NAME"], None, dynamodb=unprocessing, sleep=sleeps.append
    )

    states = store.load_many(merchants)

    assert all(states[m].poll_count == 1 for m in merchants)  # every state, as stored
    assert unprocessing.batch_calls == 5  # two keys read each time
    assert len(sleeps) == 4
    assert all(s >= 0 for s in sleeps)
    assert sum(sleeps) > 0  # it waits (a random part of each ceiling: never all nothing)
    ceilings = [store.unprocessed_backoff(n) for n in range(1, 5)]
    assert ceilings == sorted(ceilings)
    assert ceilings[0] < ceilings[-1]  # the ceiling grows
    assert all(s <= c for s, c in zip(sleeps, ceilings, strict=True))


def test_keys_dynamodb_never_processes_fail_the_read_by_name_after_a_bounded_number_of_tries(
    stack: LocalStack,
) -> None:
    """Throttled for good: the read ends (a typed, retryable error naming how many keys were
    left), instead of looping until the function's timeout."""
    from esl_sync.store import aws_json

    merchants = _states_of(stack, 3)
    unprocessing = Unprocessing(aws_json.client("dynamodb"), per_call=0)
    store = DynamoStateStore(
        stack.env["STATE_TABLE_NAME"], None, dynamodb=unprocessing, sleep=lambda _: None
    )

    with pytest.raises(AwsError) as raised:
        store.load_many(merchants)

    assert raised.value.code == "UnprocessedKeys"
    assert raised.value.retryable
    assert "3 keys" in str(raised.value)
    assert unprocessing.batch_calls <= 10
