"""How long a Postgres statement may still wait for its answer: the invocation's time.

A Postgres that stops answering without closing the connection (a Multi-AZ failover whose
old primary vanished, a network cut, a server hung on a full disk) leaves a statement
waiting for an answer that never comes: the kernel gives up on unacknowledged data after
about fifteen minutes, and an answer the server's kernel acknowledged but never sends is
waited for without end. A Lambda function ran into its timeout instead, its batch
unreported and its leases held until they expired.

What runs an invocation's work sets the time its statements have (:func:`statements_within`,
for the block; what it starts on other threads in a copy of its context has it too), and
the store's connections end a wait when it is past (:mod:`esl_sync.store.pg_connection`),
as :class:`~esl_sync.records.DatabaseUnanswered`. Outside such a block (the CLI, the
tests' own reads) a statement waits as long as the server takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_time_left_ms: ContextVar[Callable[[], int] | None] = ContextVar(
    "esl_sync_statement_time_left", default=None
)


@contextmanager
def statements_within(time_left_ms: Callable[[], int]) -> Iterator[None]:
    """Within the block (and copies of its context), a statement waits at most
    ``time_left_ms()`` milliseconds, asked as it is sent."""
    token = _time_left_ms.set(time_left_ms)
    try:
        yield
    finally:
        _time_left_ms.reset(token)


def seconds_left() -> float | None:
    """What a statement sent now may wait (``<= 0``: none); None: no bound."""
    time_left_ms = _time_left_ms.get()
    return None if time_left_ms is None else time_left_ms() / 1000
