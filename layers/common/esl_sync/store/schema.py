"""Versioned SQL migrations, applied once each and recorded in ``schema_migrations``.

The same files run locally (``esl-sync migrate``) and on deploy (the migration function).
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg.conninfo import make_conninfo

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


def apply_migrations(
    conninfo: str,
    *,
    connect_timeout: float | None = None,
    statement_timeout_ms: int | None = None,
) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied now.

    The deploy's migration step bounds both waits (the connection, and every statement,
    the advisory lock's included); ``esl-sync migrate`` leaves them to the server.
    """
    applied_now: list[str] = []
    if connect_timeout is not None:
        conninfo = make_conninfo(conninfo, connect_timeout=max(1, int(connect_timeout)))
    with psycopg.connect(conninfo, autocommit=False) as conn:
        if statement_timeout_ms is not None:
            for setting in ("statement_timeout", "lock_timeout"):
                conn.execute(
                    "SELECT set_config(%s, %s, true)", (setting, str(max(1, statement_timeout_ms)))
                )
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
