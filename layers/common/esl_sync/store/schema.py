"""Versioned SQL migrations, applied once each and recorded in ``schema_migrations``.

The same files run locally (``esl-sync migrate``) and on deploy (the migration function).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources

import psycopg
import psycopg.errors
from psycopg.conninfo import make_conninfo

from esl_sync.store.pg_connection import BoundedConnection

MIGRATIONS_PACKAGE = "esl_sync.store"
_LOCK_KEY = 0x65736C  # pg_advisory_xact_lock key: one migrator at a time


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in order of version."""
    folder = resources.files(MIGRATIONS_PACKAGE).joinpath("migrations")
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda e: e.name,
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text()) for entry in files]


LOCK_WAIT_MS = 2_000
"""How long one try waits for a lock. While a migration waits for a table's lock, Postgres
queues every later query on that table behind it, and a poll's transaction lasts from its
first page to its last: waiting out a poll stalled every other poll and label job with it.
A try that waits longer rolls back and gives way; the next starts after
:data:`RETRY_PAUSE_SECONDS`."""
RETRY_PAUSE_SECONDS = 1.0
CLI_TRIES = 60
"""Tries of ``esl-sync migrate`` (no budget of its own): about three minutes of waiting."""


class MigrationLocked(RuntimeError):
    """A table (or the migrators' advisory lock) stayed busy for every try: a transaction
    holds it (see ``pg_stat_activity``). Nothing was applied; try again later."""


def apply_migrations(
    conninfo: str,
    *,
    connect_timeout: float | None = None,
    statement_timeout_ms: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied now.

    The deploy's migration step bounds both waits (the connection, and every statement,
    the advisory lock's included, by ``statement_timeout_ms``); ``esl-sync migrate``
    leaves statements to the server. Every wait for an answer once connected also ends by
    the invocation's deadline, if one is set (:class:`BoundedConnection`:
    ``DatabaseUnanswered``, the connection closed; the login is bounded by
    ``connect_timeout`` only). Either way no try waits for a lock longer than
    :data:`LOCK_WAIT_MS`, so the fleet never queues behind a migration for longer; tries
    go on while the budget lasts (:data:`CLI_TRIES` without one), each all or nothing.
    """
    if connect_timeout is not None:
        conninfo = make_conninfo(conninfo, connect_timeout=max(1, int(connect_timeout)))
    started = time.monotonic()
    with BoundedConnection.connect(conninfo, autocommit=False) as conn:
        tries = 0
        while True:
            tries += 1
            left_ms = None
            if statement_timeout_ms is not None:
                left_ms = statement_timeout_ms - int((time.monotonic() - started) * 1000)
            try:
                return _apply(conn, left_ms)
            except psycopg.errors.LockNotAvailable:
                conn.rollback()
                spent_ms = (time.monotonic() - started) * 1000
                next_try_ms = RETRY_PAUSE_SECONDS * 1000 + LOCK_WAIT_MS
                if statement_timeout_ms is None:
                    out_of_time = tries >= CLI_TRIES
                else:  # another whole try must still fit
                    out_of_time = statement_timeout_ms - spent_ms < next_try_ms
                if out_of_time:
                    raise MigrationLocked(
                        f"a table stayed locked through {tries} tries of {LOCK_WAIT_MS} ms"
                        " (a long transaction holds it; see pg_stat_activity)"
                    ) from None
            sleep(RETRY_PAUSE_SECONDS)


def _apply(conn: psycopg.Connection[tuple[object, ...]], left_ms: int | None) -> list[str]:
    """One try, in one transaction: what it applied, or an error and nothing applied."""
    applied_now: list[str] = []
    settings = {"lock_timeout": LOCK_WAIT_MS}
    if left_ms is not None:
        settings["statement_timeout"] = max(1, left_ms)
        settings["lock_timeout"] = max(1, min(LOCK_WAIT_MS, left_ms))
    for setting, value in settings.items():
        conn.execute("SELECT set_config(%s, %s, true)", (setting, str(value)))
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, sql in migration_files():
        if version in done:
            continue
        conn.execute(sql.encode())
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        applied_now.append(version)
    conn.commit()
    return applied_now
