"""The operator's connection options in ``DATABASE_URL`` stay theirs: the store's
connections add keepalives, a ``tcp_user_timeout`` and a ``connect_timeout`` bounded by
the invocation's time (:mod:`esl_sync.store.pg_connection`) only where the URL sets none,
and a ``connect_timeout`` the URL sets shorter is kept. Real parts: the embedded Postgres,
over its Unix socket (where libpq ignores the TCP options, refusing none)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from esl_sync.store.postgres import Database


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
