"""A Postgres that stops answering mid-poll (a failover whose old primary vanished, a
network cut, a hung server: the connection stays open, no answer comes) holds no batch
until Lambda's timeout: the statement's wait ends by the invocation's deadline, the poll
fails by name (``DatabaseUnanswered``) as the poller's own failure, recorded, its lease
given back, its connection discarded; the batch's other poll is reported, and the retry
succeeds on a new connection. Real parts: the embedded Postgres behind a loopback proxy
that freezes the poll's connection (tests/pg_proxy.py), moto, the simulators; through the
real handler, with a Lambda context whose time runs short once the frozen poll's Clover
page is answered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from devkit.catalog import convenience_store_catalog
from devkit.emf import metric_sums
from devkit.lambda_runner import DrainResult, LambdaContext
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack, http_get_event, webhook_event
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync.records import DatabaseUnanswered
from esl_sync.statement_deadline import statements_within
from esl_sync.store.postgres import Database
from esl_sync.sync.poll_batch import REPORTING_MS
from esl_sync.sync.sender import LEDGER_MARGIN_MS
from tests.pg_proxy import FreezingProxy, upstream_of

ANSWERED = "MDBANSWERED1"  # polled first in the batch, its connection never frozen
FROZEN = "MDBFROZEN001"
MARKER = "Frozen-connection marker"  # an item name only FROZEN's page write carries
HANG_SECONDS = 60  # a hang detector, not a speed assertion


@pytest.fixture
def proxied_stack(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalStack, FreezingProxy]]:
    url = make_database()
    with FreezingProxy(upstream_of(url)) as proxy:
        monkeypatch.setenv("DATABASE_URL", make_conninfo(url, host="127.0.0.1", port=proxy.port))
        # One poll at a time, in the batch's order: the answered poll is reported first.
        # Hipoink's timeout short: a label job starts with 1 s + LEDGER_MARGIN_MS left.
        settings = {"CLOVER_INSTANCE_IN_FLIGHT": "1", "HIPOINK_TIMEOUT_SECONDS": "1"}
        with LocalStack(settings=settings) as stack:
            yield stack, proxy


def _short_time_after_first_page(stack: LocalStack) -> Callable[[str], LambdaContext]:
    """The first invocation has its whole time until Clover answered FROZEN's first page;
    from then on, a second more than a poll failed for Postgres needs to report: its page's
    write may wait about a second. Later invocations have their whole time."""
    assert stack.clover is not None
    clover, answered_at, contexts = stack.clover, [], []

    def remaining() -> int:
        if not clover.request_count(FROZEN):
            return 300_000
        if not answered_at:
            answered_at.append(time.monotonic())
        return REPORTING_MS + 1000 - int((time.monotonic() - answered_at[0]) * 1000)

    def context(function: str) -> LambdaContext:
        contexts.append(function)
        if len(contexts) > 1:
            return LambdaContext(function)
        return LambdaContext(function, remaining=remaining)

    return context


def test_a_frozen_postgres_fails_the_poll_by_name_and_its_retry_reconnects(
    proxied_stack: tuple[LocalStack, FreezingProxy],
) -> None:
    stack, proxy = proxied_stack
    stack.add_merchant(
        ANSWERED, "tok-answered", "STORE-ANSWERED", items=convenience_store_catalog(4)
    )
    items = convenience_store_catalog(4, seed=5)
    items[0]["name"] = MARKER
    stack.add_merchant(FROZEN, "tok-frozen", "STORE-FROZEN", items=items)
    stack.dispatch()
    mark = len(stack.logs)
    proxy.freeze_on(MARKER.encode())

    drained: list[DrainResult] = []
    run = threading.Thread(
        target=lambda: drained.append(
            stack.drain(
                "PollQueue", "poller", batch_size=2, context=_short_time_after_first_page(stack)
            )
        ),
        daemon=True,
    )
    run.start()
    run.join(HANG_SECONDS)
    hung = run.is_alive()
    proxy.thaw()  # a hung poll gets its answer, so that the test ends either way
    run.join(HANG_SECONDS)
    assert not hung, "the poll waited on the frozen connection past its invocation's time"

    assert proxy.frozen.is_set()
    lines = [json.loads(line) for line in stack.logs[mark:] if '"poll finished"' in line]
    first = {line["merchant_id"]: line for line in lines[:2]}
    assert first[ANSWERED]["status"] == "ok"
    assert first[FROZEN]["status"] == "failed"
    assert first[FROZEN]["detail"].startswith("DatabaseUnanswered: ")
    assert first[FROZEN]["fault"] == "service"
    errors = [json.loads(line) for line in stack.logs[mark:] if '"level":"ERROR"' in line]
    assert [e["merchant_id"] for e in errors if e["message"] == "poll finished"] == [FROZEN]
    assert drained == [DrainResult(invocations=2, records=3, failures=1)]
    assert lines[2]["merchant_id"] == FROZEN  # the retry, on a new connection
    assert lines[2]["status"] == "ok"
    state = runtime.state_store().load(FROZEN)
    assert state.last_failure_class == "DatabaseUnanswered"
    assert state.consecutive_failures == 0  # the retry succeeded
    with stack._db() as conn:
        names = {
            row["name"]
            for row in conn.execute(
                "SELECT name FROM products WHERE merchant_id = %s", (FROZEN,)
            ).fetchall()
        }
    assert MARKER in names


def _run_watched(work: Callable[[], DrainResult], proxy: FreezingProxy) -> list[DrainResult]:
    """``work`` on a thread, joined with the hang detector; the proxy thawed either way."""
    drained: list[DrainResult] = []
    run = threading.Thread(target=lambda: drained.append(work()), daemon=True)
    run.start()
    run.join(HANG_SECONDS)
    hung = run.is_alive()
    proxy.thaw()  # a hung statement gets its answer, so that the test ends either way
    run.join(HANG_SECONDS)
    assert not hung, "a statement waited on the frozen connection past its invocation's time"
    return drained


def test_a_frozen_postgres_fails_the_label_job_by_name_and_its_retry_delivers(
    proxied_stack: tuple[LocalStack, FreezingProxy],
) -> None:
    """The sender: the job's first ledger statement (it names the merchant) is never
    answered; the invocation has just the time a job needs (a Hipoink call and
    LEDGER_MARGIN_MS) and half a second, the wait ends a second before its end."""
    stack, proxy = proxied_stack
    assert stack.clover is not None
    assert stack.hipoink is not None
    stack.add_merchant(FROZEN, "tok-frozen", "STORE-FROZEN", items=convenience_store_catalog(4))
    stack.dispatch()
    stack.drain("PollQueue", "poller")
    mark = len(stack.logs)
    proxy.freeze_on(FROZEN.encode())
    contexts: list[str] = []

    def context(function: str) -> LambdaContext:
        contexts.append(function)
        if len(contexts) > 1:
            return LambdaContext(function)
        started = time.monotonic()
        return LambdaContext(
            function,
            remaining=lambda: (
                1000 + LEDGER_MARGIN_MS + 500 - int((time.monotonic() - started) * 1000)
            ),
        )

    drained = _run_watched(
        lambda: stack.drain("LabelQueue", "hipoink_sender", context=context), proxy
    )

    assert proxy.frozen.is_set()
    failed = [
        json.loads(line)
        for line in stack.logs[mark:]
        if '"label job failed; back to its queue"' in line
    ]
    assert [(f["level"], f["error_class"]) for f in failed] == [("ERROR", "DatabaseUnanswered")]
    assert drained == [DrainResult(invocations=2, records=2, failures=1)]
    from devkit.demo import expected_labels

    assert stack.hipoink.labels("STORE-FROZEN") == expected_labels(stack.clover.items(FROZEN))


# The tick fails before its work (it cannot read the merchants) and publishes no metric of
# ours; Powertools warns so. Lambda's own Errors metric counts it (DispatcherErrorsAlarm).
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_a_frozen_postgres_fails_the_tick_by_name_and_the_next_tick_reconnects(
    proxied_stack: tuple[LocalStack, FreezingProxy],
) -> None:
    """The dispatcher: its read of the merchants is never answered; the wait ends a second
    (``dispatch.REPORTING_MS``) before the invocation's end (4 s: a connection is opened
    only with 2 s left), and the tick fails by name."""
    stack, proxy = proxied_stack
    stack.add_merchant(FROZEN, "tok-frozen", "STORE-FROZEN", items=convenience_store_catalog(2))
    proxy.freeze_on(b"FROM merchants m WHERE")
    started = time.monotonic()

    def context(function: str) -> LambdaContext:
        return LambdaContext(
            function, remaining=lambda: 4000 - int((time.monotonic() - started) * 1000)
        )

    raised: list[BaseException] = []

    def tick() -> DrainResult:
        try:
            stack.invoke("dispatcher", {"reason": "schedule"}, context=context)
        except Exception as error:  # what Lambda records as the invocation's error
            raised.append(error)
        return DrainResult()

    _run_watched(tick, proxy)

    assert proxy.frozen.is_set()
    assert [type(error).__name__ for error in raised] == ["DatabaseUnanswered"]
    assert stack.dispatch() == 1  # the next tick, on a new connection


def test_a_commit_not_sent_for_time_closes_its_connection_and_its_transaction(
    database_url: str,
) -> None:
    """With no time left nothing is sent, and the connection is closed all the same: a
    COMMIT not sent must not leave its transaction open on a connection the thread keeps
    (the next poll's COMMIT would commit this poll's writes)."""
    db = Database(database_url)
    left = [60_000]

    def write_until_time_is_up() -> None:
        with db.transaction():
            db.connection().execute("CREATE TABLE written_by_the_failed_poll (x int)")
            left[0] = 0  # the invocation's time runs out before the COMMIT

    try:
        first = db.connection()
        with statements_within(lambda: left[0]), pytest.raises(DatabaseUnanswered):
            write_until_time_is_up()
        assert first.closed
        again = db.connection()
        assert again is not first
        found = again.execute("SELECT to_regclass('written_by_the_failed_poll')").fetchone()
        assert found == (None,)  # rolled back by the server as the connection closed
    finally:
        db.close()


def test_a_wait_ended_by_its_deadline_is_unanswered_even_if_the_time_left_still_reads_1_ms(
    database_url: str,
) -> None:
    """The time left is read in whole milliseconds on the wall clock (Lambda's context),
    the wait's timeout runs on the monotonic clock: as it expires, the time left may still
    read a millisecond (rounding, an NTP slew of the wall clock). The wait ended for the
    deadline all the same: its statement is still running, its answer unread, so the
    connection is closed (never reused mid-protocol) and the wait fails as
    ``DatabaseUnanswered``, not as psycopg's internal wait timeout."""
    db = Database(database_url)
    reads = iter([500])

    def left() -> int:  # 0.5 s when the statement is sent; 1 ms whenever asked after
        return next(reads, 1)

    try:
        first = db.connection()
        with statements_within(left), pytest.raises(DatabaseUnanswered):
            first.execute("SELECT pg_sleep(3)")
        assert first.closed
        again = db.connection()
        assert again is not first
        assert again.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_a_statement_abandoned_for_time_ends_on_the_server_and_its_locks_with_it(
    database_url: str,
) -> None:
    """A healthy but slow statement (behind a lock, a big write) abandoned by the deadline:
    the client closed its connection, but a server executing a statement does not read the
    socket, so the statement ran on, its transaction open and its row locks held (the
    poll's retry waiting on them) until it ended by itself. The server checks its client
    while a statement runs (``client_connection_check_interval``): it ends the session
    soon after, rolling its transaction back."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE TABLE abandoned (id int PRIMARY KEY)")
    db = Database(database_url)
    left = [60_000]

    def write_then_wait() -> None:
        with db.transaction():
            db.connection().execute("INSERT INTO abandoned VALUES (1)")
            left[0] = 1000
            db.connection().execute("SELECT pg_sleep(30)")  # the slow statement

    try:
        pid = db.connection().info.backend_pid
        started = time.monotonic()
        with statements_within(lambda: left[0]), pytest.raises(DatabaseUnanswered):
            write_then_wait()
        assert time.monotonic() - started < 5
        with psycopg.connect(database_url, autocommit=True) as admin:
            deadline = time.monotonic() + 5
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                assert time.monotonic() < deadline, "the abandoned statement ran on"
                time.sleep(0.1)
            admin.execute("SET lock_timeout = '1s'")
            admin.execute("INSERT INTO abandoned VALUES (1)")  # its row lock is gone
    finally:
        db.close()


def _in_time(
    timeout_ms: int, invoke: Callable[[Callable[[str], LambdaContext]], object]
) -> tuple[object, int]:
    """``invoke`` with a context whose ``timeout_ms`` run down on the clock, on a thread
    joined until that time is up (and two seconds more): its result, and the time the
    invocation still had when it returned (negative: it outlived its timeout; the proxy
    is thawed then, so that a hung statement gets its answer and the test ends)."""
    started = time.monotonic()

    def left() -> int:
        return timeout_ms - int((time.monotonic() - started) * 1000)

    done: list[tuple[object, int]] = []

    def run() -> None:
        result = invoke(lambda name: LambdaContext(name, timeout_ms=timeout_ms, remaining=left))
        done.append((result, left()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_ms / 1000 + 2)
    return done[0] if done else (None, left())


WEBHOOK_503 = "webhook not handled; answered 503 (the scheduled poll covers it)"


def _delivery(merchant_id: str) -> bytes:
    """A valid Clover notification: one item of the merchant's updated."""
    event = {"objectId": "I:ITEM1", "type": "UPDATE", "ts": 1}
    return json.dumps({"appId": "A1", "merchants": {merchant_id: [event]}}).encode()


def _named_without_traceback(lines: list[str], message: str) -> dict[str, object]:
    """The one error line ``message`` names, as a dict: the failure's class and words,
    never a traceback (a named outage, not a bug)."""
    errors = [json.loads(line) for line in lines if '"level":"ERROR"' in line]
    assert [e["message"] for e in errors] == [message], errors
    assert "exception" not in errors[0], "a named outage logged with a traceback"
    return errors[0]


def test_a_frozen_postgres_answers_the_webhook_503_by_name_before_its_timeout(
    proxied_stack: tuple[LocalStack, FreezingProxy],
) -> None:
    """The webhook's read of the merchants is never answered: the invocation (the
    template's 15 s) answers Clover the 503 it gives any failure of its own, named
    (``DatabaseUnanswered``) and counted (``WebhookErrors``), without a traceback, within
    its time; the next delivery, on a new connection, queues its poll."""
    stack, proxy = proxied_stack
    stack.add_merchant(FROZEN, "tok-frozen", "STORE-FROZEN", items=convenience_store_catalog(2))
    body = _delivery(FROZEN)
    mark = len(stack.logs)
    proxy.freeze_on(b"FROM merchants m WHERE")

    answer, left = _in_time(
        15_000,
        lambda context: stack.invoke(
            "webhook", webhook_event(body, CLOVER_WEBHOOK_AUTH), context=context
        ),
    )
    proxy.thaw()

    assert proxy.frozen.is_set()
    assert left > 0, f"the webhook answered {-left} ms after its timeout"
    assert isinstance(answer, dict)
    assert (answer["statusCode"], json.loads(answer["body"])) == (
        503,
        {"message": "temporarily unavailable"},
    )
    line = _named_without_traceback(stack.logs[mark:], WEBHOOK_503)
    assert line["error_class"] == "DatabaseUnanswered"
    assert metric_sums(stack.logs[mark:])["WebhookErrors"] == 1
    again = stack.send_webhook(body.decode(), CLOVER_WEBHOOK_AUTH, deliver=False)
    assert (again.status, stack.queue_depths()["PollQueue"]) == (202, 1)


def test_a_webhook_entering_with_its_postgres_time_already_spent_answers_503_by_name(
    stack: LocalStack,
) -> None:
    """A deadline already past on entry: nothing is sent to Postgres (no connection
    opened, no statement), the answer is the named 503 at once."""
    stack.add_merchant(FROZEN, "tok-frozen", "STORE-FROZEN", items=convenience_store_catalog(2))
    body = _delivery(FROZEN)
    mark = len(stack.logs)
    answer = stack.invoke(
        "webhook",
        webhook_event(body, CLOVER_WEBHOOK_AUTH),
        context=lambda name: LambdaContext(name, timeout_ms=15_000, remaining=lambda: 900),
    )
    assert answer["statusCode"] == 503
    line = _named_without_traceback(stack.logs[mark:], WEBHOOK_503)
    assert line["error_class"] == "DatabaseUnanswered"
    assert stack.queue_depths()["PollQueue"] == 0


def test_a_frozen_postgres_shows_the_installing_merchant_the_try_again_page_in_time(
    proxied_stack: tuple[LocalStack, FreezingProxy],
) -> None:
    """Onboarding: Clover approved, the code is exchanged, and the merchant's registration
    is never answered. The callback (6 s left) shows its "not available right now" page
    (503, its reference) within its time, named (``DatabaseUnanswered``) and counted
    (``OnboardingErrors``) without a traceback; the merchant's lock is given back, so
    starting again installs at once, on a new connection."""
    stack, proxy = proxied_stack
    assert stack.clover is not None
    merchant = "MINSTALLFRZ1"
    stack.clover.add_merchant(merchant, "tok-install", items=convenience_store_catalog(2))
    started = stack.install_app(merchant, approve=False)
    assert started.install.location is not None
    stack.clover.signed_in_merchant = merchant
    authorize = httpx.get(started.install.location, timeout=10)
    callback = urlsplit(authorize.headers["location"])
    mark = len(stack.logs)
    proxy.freeze_on(b"esl-sync merchant ")

    answer, left = _in_time(
        6_000,
        lambda context: stack.invoke(
            "onboarding", http_get_event(callback.path, callback.query), context=context
        ),
    )
    proxy.thaw()

    assert proxy.frozen.is_set()
    assert left > 0, f"the callback answered {-left} ms after its timeout"
    assert isinstance(answer, dict)
    assert answer["statusCode"] == 503
    assert "esl-sync is not available right now" in answer["body"]
    line = _named_without_traceback(stack.logs[mark:], "install not handled; answered 503")
    assert line["error_class"] == "DatabaseUnanswered"
    assert metric_sums(stack.logs[mark:])["OnboardingErrors"] == 1
    again = stack.install_app(merchant, deliver=False)
    assert again.callback is not None
    assert again.callback.status == 200, again.callback.body


def test_a_frozen_postgres_fails_the_migration_by_name_to_cloudformation_in_time(
    proxied_stack: tuple[LocalStack, FreezingProxy], cloudformation: Any
) -> None:
    """The deploy's migrator: its migration lock's statement is never answered. The custom
    resource is answered FAILED within the invocation's time (12 s here; 120 s deployed),
    the reason naming the silent database and no secret, so the deploy fails by name
    rather than at the function's timeout; the next deploy's migrator migrates."""
    stack, proxy = proxied_stack
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "migrator.json").read_text())
    event.update(RequestType="Update", ResponseURL=cloudformation.url)
    event["PhysicalResourceId"] = "esl-sync-schema"
    mark = len(stack.logs)
    proxy.freeze_on(b"pg_advisory_xact_lock")

    answer, left = _in_time(
        12_000, lambda context: stack.invoke("migrator", event, context=context)
    )
    proxy.thaw()

    assert proxy.frozen.is_set()
    assert left > 0, f"the migrator answered {-left} ms after its timeout"
    assert isinstance(answer, dict)
    assert cloudformation.answers == [answer]
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("DatabaseUnanswered: "), answer["Reason"]
    assert stack.env["DATABASE_URL"] not in json.dumps(answer) + "".join(stack.logs[mark:])
    failed = [json.loads(line) for line in stack.logs[mark:] if '"migration failed"' in line]
    assert [(line["level"], line["error_class"]) for line in failed] == [
        ("ERROR", "DatabaseUnanswered")
    ]
    assert "exception" not in failed[0], "an outage logged with a bug's traceback"
    again = stack.invoke("migrator", event)
    assert again["Status"] == "SUCCESS", again
