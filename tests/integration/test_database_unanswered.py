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

import pytest
from psycopg.conninfo import make_conninfo

from devkit.catalog import convenience_store_catalog
from devkit.lambda_runner import DrainResult, LambdaContext
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.sync.poll_batch import REPORTING_MS
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
        with LocalStack(settings={"CLOVER_INSTANCE_IN_FLIGHT": "1"}) as stack:
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
