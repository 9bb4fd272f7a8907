"""HTTP/1.1 to one origin over kept-alive standard-library connections.

What the functions' own HTTP clients share (the AWS client, :mod:`esl_sync.store.aws_json`,
and Clover's items client, :mod:`esl_sync.clover.client`): per origin (scheme, host, port)
idle connections shared by the process's threads; each opened under a connect timeout with
``TCP_NODELAY`` and, for ``https``, the process's verified TLS context (:mod:`esl_sync.tls`);
every socket operation after that under a read timeout (per operation, as httpx's and
botocore's timeouts are); a kept connection that died while it was idle (the peer closed it,
Lambda froze the instance) replaced at once and the request sent again, when it failed
before any byte of an answer came (a failure after that is the caller's to retry). With a
``deadline``, an answer must also come whole within it: the read timeout bounds each read,
and a peer writing a byte at a time, each within it, held a request for as long as it
kept writing (a poll until its Lambda timed out, with the batch's other polls). Answers
are read whole (``Content-Length``, chunked, or to the close), their size bounded, and a
``gzip`` body decoded with zlib.

Why the standard library: httpx, httpcore and h11 cost ≈ 35–45 ms of a poller's cold start
to import, and botocore a third of it, for what ``http.client`` does (measured; the README's
"Performance and cost" has the figures). Proxies are not used: ``HTTPS_PROXY`` and
``NO_PROXY`` are not read (Lambda sets none; httpx read them).
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

# How a kept connection that died while idle fails: the peer closed it, or the instance was
# frozen long enough. Before any answer came, such a request was never read: sent again.
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)
_TRANSPORT = (OSError, http.client.HTTPException)  # ssl.SSLError and TimeoutError included
_PIECE = 1 << 16


class Unanswered(Exception):
    """No complete answer: ``error`` is the socket's, TLS's or ``http.client``'s exception,
    ``connecting`` says whether it came while opening the connection. The callers make their
    own error of it and never chain it (its traceback's frames hold the request)."""

    def __init__(self, error: BaseException, *, connecting: bool) -> None:
        super().__init__(type(error).__name__)
        self.error = error
        self.connecting = connecting

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, TimeoutError)


class Unreadable(Exception):
    """An answer whose body is larger than the limit, or whose encoding cannot be read;
    the text says which (it holds no byte of the body)."""


class Answer(NamedTuple):
    status: int
    headers: http.client.HTTPMessage  # case-insensitive ``get``; the first of repeated ones
    body: bytes  # as sent: :meth:`content` decodes it

    def content(self, limit: int) -> bytes:
        """The body, decoded as its ``Content-Encoding`` says (``gzip`` or none), at most
        ``limit`` bytes once decoded (a small body that inflates to gigabytes is refused)."""
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding == "identity":
            return self.body
        if encoding not in ("gzip", "x-gzip"):
            raise Unreadable(f"body in an encoding not asked for ({encoding[:40]!r})")
        out, rest = bytearray(), self.body
        while rest:  # gzip members one after another (RFC 1952) make one body
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out += inflater.decompress(rest, limit + 1 - len(out))
            except zlib.error:
                raise Unreadable("gzip body is corrupt") from None
            if len(out) > limit:
                raise Unreadable(f"gzip body is larger than {limit} bytes once decoded")
            if not inflater.eof:
                raise Unreadable("gzip body is truncated")
            rest = inflater.unused_data
        return bytes(out)


def read_at_most(chunks: Iterable[bytes], limit: int) -> bytes | None:
    """``chunks`` joined, or None as soon as they pass ``limit`` bytes (the rest is never
    read): how the httpx clients (Hipoink's, Clover's OAuth) bound a streamed answer."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class _DeadlineReads(io.RawIOBase):
    """The reads of one answer from ``sock``, each under the read timeout shortened to the
    time left before ``until`` (``time.monotonic``); ``TimeoutError`` once none is left."""

    def __init__(self, sock: socket.socket, until: float, read_timeout: float) -> None:
        self._sock, self._until, self._read_timeout = sock, until, read_timeout
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int | None:  # type: ignore[override]
        left = self._until - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not come whole within its deadline")
        self._sock.settimeout(min(self._read_timeout, left))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An answer read through :class:`_DeadlineReads`."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        until: float,
        read_timeout: float,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # the plain reader http.client made: nothing was read from it
        self.fp = io.BufferedReader(_DeadlineReads(sock, until, read_timeout))


class Origin:
    """Kept-alive connections to the origin of ``url``, shared by the threads of the
    process: an exchange takes an idle one (or opens one) and gives it back once its answer
    is read. ``ValueError`` (saying why, without the URL) when ``url`` is no http(s) URL."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        context: Callable[[], ssl.SSLContext],
        keep: int = 16,
        deadline: float | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        try:
            port = parts.port
        except ValueError:  # not a number, or past 65535
            raise ValueError("not a port") from None
        self.https = parts.scheme == "https"
        self.hostname, self.port = parts.hostname, port
        default = 443 if self.https else 80
        # The Host header: the port only when it is not the scheme's (as clients send it).
        self.host = parts.netloc.lower() if port not in (None, default) else self.hostname
        self.path = parts.path or "/"
        self._timeouts = (connect_timeout, read_timeout)
        self._deadline = deadline
        self._context = context
        self._keep = keep
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def exchange(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        *,
        limit: int | None = None,
    ) -> Answer:
        """One request and its whole answer (its body at most ``limit`` bytes as sent,
        else :class:`Unreadable`), within the deadline if there is one. Raises
        :class:`Unanswered` when the transport fails (``TimeoutError`` past the deadline)."""
        try:
            connection, reused = self._take()
        except _TRANSPORT as error:
            raise Unanswered(error, connecting=True) from None
        until = None if self._deadline is None else time.monotonic() + self._deadline
        while True:
            if until is not None:
                connection.response_class = functools.partial(  # type: ignore[assignment]
                    _DeadlineResponse, until=until, read_timeout=self._timeouts[1]
                )
            response: http.client.HTTPResponse | None = None
            try:
                connection.request(method, target, body, dict(headers))
                response = connection.getresponse()
                data = _read(response, limit)
            except _TRANSPORT as error:
                connection.close()
                if not (reused and response is None and isinstance(error, _STALE)):
                    raise Unanswered(error, connecting=False) from None
                try:
                    connection, reused = self._open(), False
                except _TRANSPORT as again:
                    raise Unanswered(again, connecting=True) from None
                continue
            if data is None:
                connection.close()  # the rest of the body is not read
                raise Unreadable(f"body is larger than {limit} bytes")
            if response.will_close:
                connection.close()
            else:
                self._give(connection)
            return Answer(response.status, response.msg, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (True: used before, it may have died since) or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _open(self) -> http.client.HTTPConnection:
        """A new connection (its TLS handshake done under the connect timeout)."""
        connect, read = self._timeouts
        connection: http.client.HTTPConnection
        if self.https:
            connection = http.client.HTTPSConnection(
                self.hostname, self.port, timeout=connect, context=self._context()
            )
        else:
            connection = http.client.HTTPConnection(self.hostname, self.port, timeout=connect)
        try:
            connection.connect()
            assert connection.sock is not None
            # http.client sends the head and the body in two writes: without TCP_NODELAY the
            # body waits for the peer's (delayed, up to 40 ms) ACK of the head. urllib3 (under
            # botocore) and httpcore set it too.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.sock.settimeout(read)
        except BaseException:
            connection.close()
            raise
        return connection

    def _give(self, connection: http.client.HTTPConnection) -> None:
        if connection.sock is not None:  # a deadline shortened it for its last reads
            connection.sock.settimeout(self._timeouts[1])
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(connection)
                return
        connection.close()


class Origins:
    """The :class:`Origin` of each base URL a client calls (built on first use, shared by
    the process's threads), all with the same timeouts and TLS context."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        context: Callable[[], ssl.SSLContext],
        keep: int = 16,
        deadline: float | None = None,
    ) -> None:
        self._new: Callable[[str], Origin] = functools.partial(
            Origin,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            context=context,
            keep=keep,
            deadline=deadline,
        )
        self._origins: dict[str, Origin] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> Origin:
        with self._lock:
            found = self._origins.get(url)
            if found is None:
                found = self._origins[url] = self._new(url)
            return found

    def close(self) -> None:
        with self._lock:
            origins, self._origins = list(self._origins.values()), {}
        for origin in origins:
            origin.close()


def _read(response: http.client.HTTPResponse, limit: int | None) -> bytes | None:
    """The whole body (``IncompleteRead`` when it ends early), or ``None`` past ``limit``."""
    if limit is None or (response.length is not None and response.length <= limit):
        return response.read()  # by Content-Length, chunks, or to the close
    if response.length is not None:
        return None
    pieces, size = [], 0
    while piece := response.read(_PIECE):  # chunked, or to the close: bounded as it comes
        size += len(piece)
        if size > limit:
            return None
        pieces.append(piece)
    return b"".join(pieces)
