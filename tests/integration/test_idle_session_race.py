"""The server ends a bursty function's idle session (``DATABASE_IDLE_SESSION_TIMEOUT_SECONDS``)
at the very moment its next invocation uses it: the server's goodbye (SQLSTATE 57P05,
"terminating connection due to idle-session timeout") is still on its way when the kept
connection is checked (:func:`~esl_sync.store.pg_connection.closed_by_server` finds nothing
to read), and the statement sent on it is answered by that goodbye. Real parts: the
embedded Postgres doing the ending, behind a loopback proxy whose server-to-client
messages take 0.3 s (a network: the server has ended the session, the client has not heard
yet), moto, the webhook's and the dispatcher's handlers through the local stack."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from devkit.catalog import gas_station_catalog
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack
from esl_sync import runtime
from esl_sync.store.postgres import Database
from tests.pg_proxy import FreezingProxy, upstream_of

MID = "MIDLERACE001"
LATENCY = 0.2  # the server's messages' way to the client
IDLE_SECONDS = 2


@pytest.fixture
def racing(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalStack, str]]:
    url = make_database()
    with FreezingProxy(upstream_of(url), latency=LATENCY) as proxy:
        monkeypatch.setenv("DATABASE_URL", make_conninfo(url, host="127.0.0.1", port=proxy.port))
        settings = {
            "DATABASE_IDLE_SESSION_TIMEOUT_SECONDS": str(IDLE_SECONDS),
            "CLOVER_WEBHOOK_POLL_WINDOW_SECONDS": "0",
        }
        with LocalStack(settings=settings) as stack:
            stack.add_merchant(MID, "race-token", "STORE-RACE", items=gas_station_catalog(3))
            runtime.database().close()  # the setup's connection is not a function's
            yield stack, url


def _sessions(url: str) -> list[int]:
    """The functions' sessions, seen on the server itself (not through the proxy)."""
    with psycopg.connect(url, autocommit=True, application_name="test") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'esl-sync'"
            " AND datname = current_database()"
        ).fetchall()
    return [pid for (pid,) in rows]


def _until_the_server_ended(url: str, held: list[int]) -> None:
    """Returns as soon as the server has ended the session (its goodbye still on its way:
    it reaches the function ``LATENCY`` seconds after)."""
    deadline = time.monotonic() + 10
    while set(held) & set(_sessions(url)):
        assert time.monotonic() < deadline, "the server kept the idle session"
        time.sleep(0.01)


def _hint(stack: LocalStack) -> tuple[int, str]:
    body: dict[str, Any] = {
        "appId": "A",
        "merchants": {MID: [{"objectId": "I:X", "type": "UPDATE", "ts": int(time.time() * 1000)}]},
    }
    answer = stack.send_webhook(body, CLOVER_WEBHOOK_AUTH, deliver=False)
    return answer.status, answer.message


def _errors(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if '"level":"ERROR"' in line.replace(" ", "")]


def _terminate(url: str, pids: list[int]) -> None:
    """The server ends the sessions at once (a failover's stand-in), without waiting for
    them to be gone: their goodbye (57P01) is on its way to the function."""
    with psycopg.connect(url, autocommit=True, application_name="test") as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    _until_the_server_ended(url, pids)


# How the kept session ends: by its idle timeout (the connection is replaced before use, as
# it nears the timeout), or at once by the server (a failover, ``pg_terminate_backend``: the
# function cannot see it coming; its first statement is a read of the merchants, nothing of
# which can have been applied, so it is read again once on a new connection).
ENDINGS = pytest.mark.parametrize(
    "end", [_until_the_server_ended, _terminate], ids=["idle timeout", "terminated"]
)


@ENDINGS
def test_a_webhook_whose_session_the_server_ends_is_accepted(
    racing: tuple[LocalStack, str], end: Callable[[str, list[int]], None]
) -> None:
    stack, url = racing
    assert _hint(stack) == (202, "accepted")
    held = _sessions(url)
    assert len(held) == 1, held
    end(url, held)
    mark = len(stack.logs)

    answer = _hint(stack)

    assert answer == (202, "accepted"), [e.get("message") for e in _errors(stack.logs[mark:])]
    assert not _errors(stack.logs[mark:])


@ENDINGS
def test_a_dispatcher_tick_whose_session_the_server_ends_is_done(
    racing: tuple[LocalStack, str], end: Callable[[str, list[int]], None]
) -> None:
    stack, url = racing
    assert stack.dispatch() == 1
    held = _sessions(url)
    assert len(held) == 1, held
    end(url, held)
    mark = len(stack.logs)

    result = stack.invoke("dispatcher", {"reason": "manual"})

    assert result["enabled"], result
    assert not _errors(stack.logs[mark:])


def test_a_write_at_the_idle_timeout_goes_to_a_new_connection_not_to_the_ending_one(
    database_url: str,
) -> None:
    """What no retry could make exact: a write sent as the server ends the session for
    its idle timeout. The connection is replaced before it is used, so the write is
    never answered by the goodbye (57P05) and is applied once."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE TABLE written (n int)")
    with FreezingProxy(upstream_of(database_url), latency=LATENCY) as proxy:
        db = Database(
            make_conninfo(database_url, host="127.0.0.1", port=proxy.port),
            idle_session_seconds=IDLE_SECONDS,
        )
        try:
            db.connection().execute("INSERT INTO written VALUES (1)")
            _until_the_server_ended(database_url, _sessions(database_url))
            db.connection().execute("INSERT INTO written VALUES (2)")
        finally:
            db.close()
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT n FROM written ORDER BY n").fetchall() == [(1,), (2,)]
