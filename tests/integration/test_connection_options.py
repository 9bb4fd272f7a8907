"""The operator's connection options in ``DATABASE_URL`` stay theirs: the store's
connections add keepalives, a ``tcp_user_timeout`` and a ``connect_timeout`` bounded by
the invocation's time (:mod:`esl_sync.store.pg_connection`) only where the URL sets none,
and a ``connect_timeout`` the URL sets shorter is kept. Real parts: the embedded Postgres,
over its Unix socket (where libpq ignores the TCP options, refusing none).

``DATABASE_SESSION_SETTINGS=off`` (behind RDS Proxy, which pins a session whose settings a
statement changed): a new connection sends no ``set_config`` at all, and the session keeps
the server's own settings."""

from __future__ import annotations

import time

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from esl_sync.store.pg_connection import CountingCursor
from esl_sync.store.postgres import Database
from tests.integration.conftest import StackFactory


def _options(conn: psycopg.Connection[object]) -> dict[str, object]:
    return conninfo_to_dict(conn.info.dsn)


def test_the_urls_own_tcp_options_and_a_shorter_connect_timeout_are_kept(
    database_url: str,
) -> None:
    url = make_conninfo(
        database_url,
        keepalives_idle="5",
        keepalives_interval="2",
        keepalives_count="4",
        tcp_user_timeout="7000",
        connect_timeout="3",
        options="-c statement_timeout=7s",
    )
    db = Database(url, idle_session_seconds=60)
    try:
        conn = db.connection()
        got = _options(conn)
        assert {k: got.get(k) for k in ("keepalives_idle", "keepalives_interval")} == {
            "keepalives_idle": "5",
            "keepalives_interval": "2",
        }
        assert (got.get("keepalives_count"), got.get("tcp_user_timeout")) == ("4", "7000")
        assert got.get("connect_timeout") == "3"
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
        assert conn.execute("SHOW idle_session_timeout").fetchone() == ("1min",)
    finally:
        db.close()


def test_without_them_in_the_url_the_stores_own_are_used(database_url: str) -> None:
    db = Database(database_url)
    try:
        got = _options(db.connection())
        assert (got.get("keepalives"), got.get("keepalives_idle")) == ("1", "30")
        assert (got.get("tcp_user_timeout"), got.get("connect_timeout")) == ("30000", "10")
    finally:
        db.close()


def _opened(db: Database) -> tuple[psycopg.Connection[object], int]:
    """A new connection of ``db``, and the statements its opening sent."""
    before = CountingCursor.statements
    conn = db.connection()
    return conn, CountingCursor.statements - before


def _shown(conn: psycopg.Connection[object]) -> tuple[str, str]:
    row = conn.execute(
        "SELECT current_setting('client_connection_check_interval'),"
        " current_setting('idle_session_timeout')"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_with_session_settings_off_a_new_connection_sets_nothing(
    make_stack: StackFactory,
) -> None:
    """The functions' own store (the runtime's), configured as behind RDS Proxy: no statement
    at all before the caller's first, and the server's defaults (0: neither set), although an
    idle session timeout is configured too. Its kept connection is not replaced for that
    timeout either (the server would not end it: nothing asked it to)."""
    make_stack(DATABASE_SESSION_SETTINGS="off", DATABASE_IDLE_SESSION_TIMEOUT_SECONDS="1")
    from esl_sync import runtime

    db = runtime.database()
    db.close()
    conn, sent = _opened(db)
    assert sent == 0
    assert _shown(conn) == ("0", "0")
    time.sleep(1.1)  # idle past the configured timeout
    assert db.connection() is conn


def test_with_session_settings_on_a_new_connection_sets_them_in_one_statement(
    make_stack: StackFactory,
) -> None:
    make_stack(DATABASE_SESSION_SETTINGS="on", DATABASE_IDLE_SESSION_TIMEOUT_SECONDS="60")
    from esl_sync import runtime

    db = runtime.database()
    db.close()
    conn, sent = _opened(db)
    assert sent == 1
    assert _shown(conn) == ("1s", "1min")


def test_a_url_that_sets_the_client_check_itself_connects_with_no_setting_left_to_send(
    database_url: str,
) -> None:
    """The poller's and sender's connections ask for no idle timeout; with the URL's
    ``options`` setting ``client_connection_check_interval``, nothing is left to set: the
    connection opens without a statement (not a ``SELECT`` of nothing, which Postgres refuses)."""
    url = make_conninfo(database_url, options="-c client_connection_check_interval=2s")
    db = Database(url)  # idle_session_seconds 0: the poller's and the sender's
    try:
        conn, sent = _opened(db)
        assert sent == 0
        assert conn.execute("SHOW client_connection_check_interval").fetchone() == ("2s",)
    finally:
        db.close()
