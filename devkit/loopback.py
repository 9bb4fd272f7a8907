"""What the simulators share: serving HTTP on a free loopback port from daemon threads."""

from __future__ import annotations

import ssl
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer(ThreadingHTTPServer):
    """A threading server on 127.0.0.1, port chosen by the system."""

    daemon_threads = True
    # Bursts of concurrent connections (rate-limit tests) must not overflow the backlog.
    request_queue_size = 128


class LoopbackService:
    """Start/stop, context manager and ``base_url`` of a simulator served over HTTP.

    Subclasses build their server in :meth:`_make_server`; :meth:`_stopping_now` lets
    one cut long answers short so that stopping never hangs.
    """

    thread_name = "simulator"

    def __init__(self) -> None:
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        # Where to listen: loopback on a free port, unless containers must reach it
        # (devkit/local_services.py, for `sam local invoke`).
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        # (certificate file, key file): serve HTTPS with them (a test's own certificate,
        # which no trusted root signed: tests/tls_certs.py); None: plain HTTP.
        self.certificate: tuple[str, str] | None = None

    def _make_server(self) -> LoopbackServer:
        raise NotImplementedError

    def _stopping_now(self) -> None:
        """Called before the server shuts down."""

    def start(self) -> Self:
        """Serve in a daemon thread until :meth:`stop`, so a test never waits on it."""
        if self._server is not None:
            raise RuntimeError(f"{self.thread_name} is already running")
        self._server = self._make_server()
        if self.certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.certificate)
            # A client that refuses the certificate fails the handshake in accept(): an
            # OSError, which the server drops with that connection and serves on.
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # how long stop() may wait for the loop
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is None:
            return
        self._stopping_now()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Where the code under test points its base URL."""
        if self._server is None:
            raise RuntimeError(f"{self.thread_name} is not running")
        scheme = "http" if self.certificate is None else "https"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
