"""Real Postgres contention for the tests: a deadlock between the code under test and a
transaction of the test's own, two transactions locking two rows in opposite order.

:func:`deadlock_once` adds a trigger to a table the code writes: it locks row 2 of a
``lockbox`` table, then row 1, the first time it runs only (a sequence counts, which
no rollback undoes: the code's next write, say the failure it records, may not meet the
test's transaction again before it commits, and end in a second deadlock). The test's
transaction, on a thread, holds row 1; once the code's trigger holds row 2 (it says so
with a transaction-level advisory lock, :data:`HOLDS_ROW_2`) it asks for row 2 and waits;
the trigger, once a backend waits for its transaction, asks for row 1: the code's request
closes the cycle. Postgres's deadlock check runs once in a backend that has waited
``deadlock_timeout``: the code's looks after :data:`CODE_CHECKS_AFTER` and finds the
cycle already whole, whatever the machine's load; the test's only after
:data:`TEST_CHECKS_AFTER`, so the code's statement is the one that fails with
``DeadlockDetected`` (40P01), and the test's transaction goes on and commits. Later
writes take both rows uncontended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

CODE_CHECKS_AFTER = "50ms"
"""When the code's backend looks for a deadlock, once, after it starts waiting (its
trigger sets it). Its wait is the cycle's last edge (the test's side already waits for
it), so the check finds the cycle at any value. It was 3 s while the test's side closed
the cycle and had to do so before the code's check (at Postgres's default of 1 s it
sometimes had not, on a loaded machine): 3 s of each deadlock test."""

TEST_CHECKS_AFTER = "60s"
"""The test's backend looks later than the code's, so the code's is always the one ended."""

HOLDS_ROW_2 = 7_402_001
"""The advisory lock the code's trigger takes once it holds row 2: the test's side waits
for it before it asks for row 2 (asked earlier, it could take row 2 itself: no cycle)."""


@contextmanager
def deadlock_once(database_url: str, table: str, merchant_id: str) -> Iterator[None]:
    """The first write of ``merchant_id``'s rows of ``table`` within the block ends in a
    real deadlock (the writer's statement is the one Postgres cancels)."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE TABLE lockbox (id int PRIMARY KEY)")
        admin.execute("INSERT INTO lockbox VALUES (1), (2)")
        admin.execute("CREATE SEQUENCE lock_in_order_calls")  # not rolled back: counts once
        admin.execute(
            "CREATE FUNCTION lock_in_order() RETURNS trigger LANGUAGE plpgsql AS $$"  # noqa: S608 - constants
            " DECLARE deadline timestamptz := clock_timestamp() + interval '30 s'; BEGIN"
            " IF nextval('lock_in_order_calls') > 1 THEN RETURN NEW; END IF;"
            f" PERFORM set_config('deadlock_timeout', '{CODE_CHECKS_AFTER}', true);"
            " PERFORM 1 FROM lockbox WHERE id = 2 FOR UPDATE;"
            f" PERFORM pg_advisory_xact_lock({HOLDS_ROW_2});"  # tells the test's side
            " WHILE NOT EXISTS (SELECT FROM pg_stat_activity"  # until a backend waits for us
            "  WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))) LOOP"
            "  IF clock_timestamp() > deadline THEN RAISE 'deadlock_once: nobody waited'; END IF;"
            "  PERFORM pg_sleep(0.005);"
            " END LOOP;"
            " PERFORM 1 FROM lockbox WHERE id = 1 FOR UPDATE; RETURN NEW; END $$"
        )
        admin.execute(
            f"CREATE TRIGGER lock_in_order BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW"
            f" WHEN (NEW.merchant_id = '{merchant_id}') EXECUTE FUNCTION lock_in_order()"
        )
    outcome: list[str] = []

    def other() -> None:
        with psycopg.connect(database_url) as conn:  # one transaction, committed on exit
            conn.execute(f"SET deadlock_timeout = '{TEST_CHECKS_AFTER}'")  # never first
            conn.execute("SELECT 1 FROM lockbox WHERE id = 1 FOR UPDATE")
            with psycopg.connect(database_url, autocommit=True) as watcher:
                deadline = time.monotonic() + 30
                while watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND objid = %s AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())",
                    (HOLDS_ROW_2,),
                ).fetchone() != (1,):
                    if time.monotonic() > deadline:
                        outcome.append("the code never took row 2")
                        return
                    time.sleep(0.005)
            conn.execute("SELECT 1 FROM lockbox WHERE id = 2 FOR UPDATE")  # waits for the code
            outcome.append("committed")

    thread = threading.Thread(target=other, name="deadlock-other")
    thread.start()
    try:
        yield
    finally:
        thread.join(30)
    assert outcome == ["committed"], outcome  # the test's side won: the code's was cancelled
