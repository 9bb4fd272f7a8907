"""Real Postgres contention for the tests: a deadlock between the code under test and a
transaction of the test's own, two transactions locking two rows in opposite order.

:func:`deadlock_once` adds a trigger to a table the code writes: it locks row 2 of a
``lockbox`` table, then row 1. The test's transaction, on a thread, holds row 1, waits
until a backend waits for it, then asks for row 2: a cycle. Postgres's deadlock check runs
in the backend that has waited ``deadlock_timeout`` (1 s), which is the one that waited
first, the code's: its statement fails with ``DeadlockDetected`` (40P01), and the test's
transaction goes on and commits. Later writes take both rows uncontended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


@contextmanager
def deadlock_once(database_url: str, table: str, merchant_id: str) -> Iterator[None]:
    """The first write of ``merchant_id``'s rows of ``table`` within the block ends in a
    real deadlock (the writer's statement is the one Postgres cancels)."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE TABLE lockbox (id int PRIMARY KEY)")
        admin.execute("INSERT INTO lockbox VALUES (1), (2)")
        admin.execute(
            "CREATE FUNCTION lock_in_order() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " PERFORM 1 FROM lockbox WHERE id = 2 FOR UPDATE;"
            " PERFORM 1 FROM lockbox WHERE id = 1 FOR UPDATE; RETURN NEW; END $$"
        )
        admin.execute(
            f"CREATE TRIGGER lock_in_order BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW"
            f" WHEN (NEW.merchant_id = '{merchant_id}') EXECUTE FUNCTION lock_in_order()"
        )
    outcome: list[str] = []

    def other() -> None:
        with psycopg.connect(database_url) as conn:  # one transaction, committed on exit
            conn.execute("SELECT 1 FROM lockbox WHERE id = 1 FOR UPDATE")
            mine = conn.info.backend_pid
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with psycopg.connect(database_url, autocommit=True) as watcher:
                    waiting = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND pid <> %s",
                        (mine,),
                    ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
            else:
                outcome.append("nobody waited")
                return
            conn.execute("SELECT 1 FROM lockbox WHERE id = 2 FOR UPDATE")  # the cycle
            outcome.append("committed")

    thread = threading.Thread(target=other, name="deadlock-other")
    thread.start()
    try:
        yield
    finally:
        thread.join(30)
    assert outcome == ["committed"], outcome  # the test's side won: the code's was cancelled
