"""A loopback TCP proxy in front of Postgres that can freeze a connection: both sockets
stay open, nothing is forwarded either way. What a client sees of a server gone without a
word (a failover whose old primary vanished, a network cut, a hung server): its statement
sent, no answer ever, no reset."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

from psycopg.conninfo import conninfo_to_dict


def upstream_of(conninfo: str) -> tuple[str, int] | str:
    """Where a connection string's server listens: host and port, or a Unix socket."""
    parts = conninfo_to_dict(conninfo)
    host, port = str(parts.get("host") or "localhost"), int(str(parts.get("port") or 5432))
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


class FreezingProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` (host and port, or a Unix socket's
    path). :meth:`freeze_on` arms a one-shot trigger: the first client message holding
    ``marker`` is held, and its connection forwards nothing more either way until
    :meth:`thaw` (other connections, and new ones, flow on).

    ``latency``: seconds each of the server's messages takes to reach the client (what the
    client sees of a network: the server has done, and said, things it has not heard yet).
    """

    def __init__(self, upstream: tuple[str, int] | str, *, latency: float = 0.0) -> None:
        self._upstream = upstream
        self._latency = latency
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._frozen_connection: object | None = None
        self.frozen = threading.Event()  # set once a connection froze
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="pg-proxy").start()

    def freeze_on(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def thaw(self) -> None:
        self._frozen_connection = None
        self._thawed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if isinstance(self._upstream, str):
                server = socket.socket(socket.AF_UNIX)
                server.connect(self._upstream)
            else:
                server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            connection = object()
            for source, target, watch in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, target, connection, watch), daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, target: socket.socket, conn: object, watch: bool
    ) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if watch and self._marker is not None and self._marker in data:
                        self._marker, self._frozen_connection = None, conn
                        self._thawed.clear()
                        self.frozen.set()
                while self._frozen_connection is conn:  # held, not forwarded
                    self._thawed.wait()
                if not watch and self._latency:
                    time.sleep(self._latency)
                target.sendall(data)
        except OSError:
            pass
        finally:
            # The client hears of the server's end through the server's side, after what
            # the server said before it (its goodbye): not as soon as its own data bounced.
            for end in (target,) if watch else (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.thaw()
        self._listener.close()
        for end in self._sockets:
            end.close()
