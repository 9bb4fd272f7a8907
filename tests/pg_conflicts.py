"""Real Postgres contention for the tests: a deadlock between the code under test and a
transaction of the test's own, two transactions locking two rows in opposite order.

:func:`deadlock_once` adds a trigger to a table the code writes: it locks row 2 of a
``lockbox`` table, then row 1, the first time it runs only (a sequence counts, which
no rollback undoes: the code's next write, say the failure it records, may not meet the
test's transaction again before it commits, and end in a second deadlock). The test's
transaction, on a thread, holds row 1, waits until a backend waits for it, then asks for
row 2: a cycle. Postgres's deadlock check runs once in a backend that has waited
``deadlock_timeout``: the code's looks after :data:`CODE_CHECKS_AFTER`, the test's only
after :data:`TEST_CHECKS_AFTER`, so the code's statement is the one that fails with
``DeadlockDetected`` (40P01), and the test's transaction goes on and commits. Later
writes take both rows uncontended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

CODE_CHECKS_AFTER = "3s"
"""When the code's backend looks for a deadlock, once, after it starts waiting (its
trigger sets it): the test's side has that long to close the cycle, even on a loaded
machine (at Postgres's default of 1 s it sometimes had not, and the check, made once per
wait, found nothing; the test's own backend then found the cycle and was the one ended)."""

TEST_CHECKS_AFTER = "60s"
"""The test's backend looks later than the code's, so the code's is always the one ended."""


@contextmanager
def deadlock_once(database_url: str, table: str, merchant_id: str) -> Iterator[None]:
    """The first write of ``merchant_id``'s rows of ``table`` within the block ends in a
    real deadlock (the writer's statement is the one Postgres cancels)."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE TABLE lockbox (id int PRIMARY KEY)")
        admin.execute("INSERT INTO lockbox VALUES (1), (2)")
        admin.execute("CREATE SEQUENCE lock_in_order_calls")  # not rolled back: counts once
        admin.execute(
            "CREATE FUNCTION lock_in_order() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF nextval('lock_in_order_calls') > 1 THEN RETURN NEW; END IF;"
            f" PERFORM set_config('deadlock_timeout', '{CODE_CHECKS_AFTER}', true);"
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
            conn.execute(f"SET deadlock_timeout = '{TEST_CHECKS_AFTER}'")  # never first
            conn.execute("SELECT 1 FROM lockbox WHERE id = 1 FOR UPDATE")
            mine = conn.info.backend_pid
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with psycopg.connect(database_url, autocommit=True) as watcher:
                    waiting = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE %s = ANY(pg_blocking_pids(pid))",  # waits for this one
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
