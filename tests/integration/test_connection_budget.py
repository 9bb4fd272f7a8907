"""The connections a function keeps, counted on the server (``pg_stat_activity``).

A burst of Clover webhooks warms up to the HTTP API's burst limit of webhook environments,
each keeping its Postgres connection while Lambda keeps it frozen: the bursty functions
(webhook, dispatcher, onboarding) ask the server to end their sessions once idle
(``DATABASE_IDLE_SESSION_TIMEOUT_SECONDS``, README "Deploying"), and the next invocation
opens a new one, unharmed. Real parts: the webhook's handler through the local stack,
moto, the embedded Postgres doing the closing.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devkit.catalog import gas_station_catalog
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack
from tests.integration.conftest import StackFactory

MID = "MBUDGET00001"


def sessions(stack: LocalStack) -> list[int]:
    """The pids of the functions' sessions (``application_name`` esl-sync) on the stack's
    database, seen from a connection of the test's own."""
    url = stack.env["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True, application_name="test") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = 'esl-sync' ORDER BY pid",
            (conninfo_to_dict(url)["dbname"],),
        ).fetchall()
    return [pid for (pid,) in rows]


def hint(stack: LocalStack) -> int:
    body: dict[str, Any] = {
        "appId": "A",
        "merchants": {MID: [{"objectId": "I:X", "type": "UPDATE", "ts": int(time.time() * 1000)}]},
    }
    return stack.send_webhook(body, CLOVER_WEBHOOK_AUTH, deliver=False).status


def wait_for(stack: LocalStack, held: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    now = sessions(stack)
    while now == held and time.monotonic() < deadline:
        time.sleep(0.1)
        now = sessions(stack)
    return now


@pytest.fixture
def idle_closing(make_stack: StackFactory) -> LocalStack:
    stack = make_stack(
        DATABASE_IDLE_SESSION_TIMEOUT_SECONDS="1", CLOVER_WEBHOOK_POLL_WINDOW_SECONDS="0"
    )
    stack.add_merchant(MID, "budget-token", "STORE-BUDGET", items=gas_station_catalog(3))
    return stack


def test_the_server_ends_an_idle_webhook_session_and_the_next_webhook_opens_one(
    idle_closing: LocalStack,
) -> None:
    stack = idle_closing
    from esl_sync import runtime

    runtime.database().close()  # the setup's own connection (add_merchant) is not a webhook's
    assert hint(stack) == 202
    first = sessions(stack)
    assert len(first) == 1, first  # the webhook's one connection
    # Idle for more than the timeout: the server ends the session (not the function).
    assert wait_for(stack, first, 10) == [], "the server kept the idle webhook session"
    # The next delivery finds its kept connection closed before using it, opens a new one.
    assert hint(stack) == 202
    second = sessions(stack)
    assert len(second) == 1, second
    assert second != first
    assert not [line for line in stack.logs if '"level":"ERROR"' in line.replace(" ", "")]


def test_without_the_setting_a_webhook_session_stays(make_stack: StackFactory) -> None:
    """The default (0): the poller's and sender's connections, kept for their next batch."""
    stack = make_stack(CLOVER_WEBHOOK_POLL_WINDOW_SECONDS="0")
    stack.add_merchant(MID, "budget-token", "STORE-BUDGET", items=gas_station_catalog(3))
    from esl_sync import runtime

    runtime.database().close()
    assert hint(stack) == 202
    first = sessions(stack)
    assert len(first) == 1, first
    assert wait_for(stack, first, 2.5) == first
