"""The store's Postgres connections: opened with TCP keepalives and a user timeout, every
wait for an answer bounded by the invocation's time (:mod:`esl_sync.statement_deadline`),
and checked for a server that closed them while they were idle."""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Self

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from esl_sync.records import DatabaseUnanswered, TransientConflict
from esl_sync.statement_deadline import seconds_left

KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq's TCP settings. Keepalives probe a connection idle 30 s (a warm function's kept
one) every 10 s: three unanswered, the kernel ends it, and :func:`closed_by_server` finds
it ended before a statement is sent on it (a vanished primary, a network cut). The user
timeout ends a connection whose sent data (a statement, a probe) stays unacknowledged 30 s,
rather than the kernel's retransmissions of about 15 minutes. Neither ends a wait for a
server whose kernel still acknowledges but which never answers (hung, or behind a proxy
that holds the connection): the invocation's deadline does (:class:`BoundedConnection`)."""


_CONFLICTS = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)
"""Contention a retry resolves (40P01, 40001, 55P03): the statement's transaction is
aborted, nothing of it committed. Raised as :class:`TransientConflict`."""


class CountingCursor(psycopg.Cursor[Any]):
    """Counts the statements this process sends: each one is a round trip to the server.
    A statement Postgres ends for contention raises :class:`TransientConflict` (its
    primary message only: the detail names processes and rows, never a secret)."""

    statements = 0
    lock = threading.Lock()

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        with CountingCursor.lock:
            CountingCursor.statements += 1
        try:
            return super().execute(*args, **kwargs)
        except _CONFLICTS as error:
            said = error.diag.message_primary or type(error).__name__
            raise TransientConflict(f"Postgres {type(error).__name__}: {said}") from error


class BoundedConnection(psycopg.Connection[Any]):
    """A connection whose every wait on the server (a statement, BEGIN, COMMIT, ROLLBACK,
    its results) ends by the invocation's deadline, if one is set: past it, the connection
    is closed (its protocol state unknown: never used again) and the wait raises
    :class:`DatabaseUnanswered`; with none left, nothing is sent and the connection is
    closed as well (a COMMIT not sent must not leave its transaction to the next user).
    psycopg's own wait timeout does it: one ``select`` with that timeout, no thread.

    ``answered``: when its last wait ended (monotonic and wall clock), from which the
    server's idle timer runs (:func:`near_idle_end`)."""

    answered = (0.0, 0.0)

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return self._wait(gen, interval, timeout)
        finally:
            self.answered = (time.monotonic(), time.time())

    def _wait(self, gen: Any, interval: float, timeout: float | None) -> Any:
        left = seconds_left()
        if left is None:
            return super().wait(gen, interval, timeout)
        if left <= 0:  # closed too: a transaction it holds could never be ended by its user
            gen.close()
            self.pgconn.finish()
            raise DatabaseUnanswered("no Postgres statement sent: the invocation's time is up")
        try:
            return super().wait(gen, interval, left if timeout is None else min(left, timeout))
        except psycopg.errors._WaitTimeout:
            if timeout is not None and timeout < left:
                raise  # psycopg's own (a cancel's), not the deadline
            # Ours, whatever the time left reads now (whole ms, on another clock).
            self.pgconn.finish()
            raise DatabaseUnanswered(
                f"Postgres did not answer within the invocation's time ({left:.1f} s)"
            ) from None
        except psycopg.OperationalError:
            still = seconds_left()
            if still is not None and still > 0:
                raise  # the server's own failure, not the deadline
            self.pgconn.finish()  # mid-protocol: closed, so that no later use inherits it
            raise DatabaseUnanswered(
                f"Postgres did not answer within the invocation's time ({left:.1f} s)"
            ) from None


IDLE_SESSION_TIMEOUT_SINCE = 140_000
"""The first server version that knows ``idle_session_timeout`` and
``client_connection_check_interval`` (PostgreSQL 14)."""


def connect(
    conninfo: str, idle_seconds: int = 0, *, session_settings: bool = True
) -> psycopg.Connection[Any]:
    """A new connection, its connect bounded by the invocation's deadline too: libpq's
    ``connect_timeout`` (whole seconds, two at least), 10 s at most (or the URL's own, if
    shorter); with less than two seconds left, none is tried (:class:`DatabaseUnanswered`).
    :data:`KEEPALIVES` are added only where the URL sets none of its own.

    With ``idle_seconds`` (0: none), the server is asked to end the session once it has
    been idle that long (``idle_session_timeout``), so a frozen Lambda environment of a
    bursty function does not hold one of the server's ``max_connections`` for as long as
    Lambda keeps it: the README's connection budget, "Deploying". Set after the login (one
    round trip per new connection, never per use) rather than in the startup packet's
    ``options``: a server before 14 refuses a login naming a setting it does not know, and
    an ``options`` the operator put in the database URL stays theirs. Such a server is not
    asked (the README asks for 15 or newer anyway).

    Without ``session_settings`` (``DATABASE_SESSION_SETTINGS=off``), nothing is set, neither
    that nor :data:`CLIENT_CHECK`: behind RDS Proxy, a session whose settings a statement
    changed is pinned to its database connection until the client disconnects, and the
    parameter group sets them instead (the README's connection budget)."""
    left = seconds_left()
    bound = 10 if left is None else min(10, int(left))
    if bound < 2:
        raise DatabaseUnanswered("no Postgres connection opened: the invocation's time is up")
    own = conninfo_to_dict(conninfo)  # the operator's options: kept, a shorter timeout too
    seconds = min(bound, _whole_seconds(own.get("connect_timeout")) or bound)
    started = time.monotonic()
    try:
        conn = BoundedConnection.connect(
            conninfo,
            autocommit=True,
            connect_timeout=seconds,
            application_name="esl-sync",
            cursor_factory=CountingCursor,
            **{name: value for name, value in KEEPALIVES.items() if name not in own},
        )
    except psycopg.OperationalError:
        by_deadline = left is not None and seconds == int(left) < 10
        if not by_deadline or time.monotonic() - started < seconds:
            raise  # refused, or libpq's own timeout: as without a deadline
        raise DatabaseUnanswered(
            f"Postgres did not answer a connection within the invocation's time ({seconds} s)"
        ) from None
    conn.answered = (time.monotonic(), time.time())  # the login's answer
    settings: dict[str, str] = {}
    if session_settings and conn.info.server_version >= IDLE_SESSION_TIMEOUT_SINCE:
        if idle_seconds:
            settings["idle_session_timeout"] = f"{idle_seconds}s"
        if "client_connection_check_interval" not in str(own.get("options", "")):
            settings["client_connection_check_interval"] = CLIENT_CHECK
    if settings:  # none left to send (the URL sets them): no round trip, no bare SELECT
        try:
            conn.execute(
                "SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(settings)),
                [part for setting in settings.items() for part in setting],
            )
        except BaseException:
            conn.close()
            raise
    return conn


CLIENT_CHECK = "1s"
"""How often the server checks, while a statement of ours runs, that its client is still
there (``client_connection_check_interval``, PostgreSQL 14). A statement abandoned by the
invocation's deadline (:class:`BoundedConnection`: its connection closed) is not heard of
by a server busy executing it: it ran on to its end (a lock wait, a big write), its
transaction open and its row locks held, the poll's retry waiting on them. Checked, the
server ends that session within about this long, rolling its transaction back. Not set
where the URL's ``options`` set it."""


IDLE_END_MARGIN = 1.0
"""Seconds before the server's ``idle_session_timeout`` from which a kept connection is
not used any more (a quarter of the timeout, if less): its idle timer started before the
connection's last answer reached the function, and a statement sent now reaches it later."""


def near_idle_end(conn: psycopg.Connection[Any], idle_seconds: int) -> bool:
    """Whether the server may be ending this idle connection for its idle session timeout
    (``idle_seconds``, 0: none) as a statement sent on it now arrives. At the very moment,
    the server's goodbye (SQLSTATE 57P05) is on its way: :func:`closed_by_server` finds
    nothing to read yet, and the statement is answered by that goodbye (the webhook's 503,
    the dispatcher's tick failed). Such a connection is replaced before it is used: as
    exact as a retry could not be (a write answered by 57P05 may have been applied), and
    the server would end it a moment later anyway. Measured on both clocks, the longer
    counting: a frozen Lambda environment's monotonic clock may not see its freeze."""
    if not idle_seconds or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    since, wall_since = getattr(conn, "answered", (0.0, 0.0))
    idle = max(time.monotonic() - since, time.time() - wall_since)
    return idle >= idle_seconds - min(IDLE_END_MARGIN, idle_seconds / 4)


def _whole_seconds(value: object) -> int:
    """A ``connect_timeout`` the URL sets, in whole seconds (0: none, or not a number,
    which libpq would refuse: the store's own is used instead)."""
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


def closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server closed (or is closing) this idle connection: a failover, a
    restart, an idle timeout or ``pg_terminate_backend`` ends every connection a warm
    function keeps, and the first statement sent on one fails (``AdminShutdown``, "server
    closed the connection"): the dispatcher's tick, or each poll worker's next poll.

    An idle connection has nothing to read, unless the server has said goodbye (its error
    message, the TLS close, the end of the stream): one ``poll`` of the socket, no round
    trip, finds that before anything is sent, so a new connection is opened instead
    (urllib3 checks its kept HTTP connections the same way). Now and then the server
    sends an idle connection something else (a parameter change); that connection is
    replaced too, which costs only the new connection. A connection inside a transaction
    is in use, and never replaced under its user. A server gone without a word (a network
    cut) is found here once the keepalives (:data:`KEEPALIVES`) have ended the connection;
    before that, a statement sent on it waits until the invocation's deadline
    (:class:`BoundedConnection`), and fails as :class:`DatabaseUnanswered`.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))
