"""A deadline on a whole HTTP call, for the httpx clients (Hipoink's, Clover's OAuth).

httpx's timeouts bound each socket operation (the connect, each read, each write), not the
call: a server, proxy or load balancer that writes its answer a byte at a time, each byte
within the read timeout, holds a call for as long as it keeps writing. The Hipoink sender
starts a job only while one call (``HIPOINK_TIMEOUT_SECONDS``) still fits in its
invocation; a call that outlived that ran the invocation into its Lambda timeout, and the
batch's other jobs, sent or not, went back to the queue with it. A token refresh runs under
the merchant's refresh lock (three OAuth timeouts long): one held past it let another
poller take the lock over and refresh the same single-use token, which Clover refuses.

:func:`transport` is an httpx transport whose every socket operation gets at most the time
left until the deadline of the call its thread is in (:func:`deadline`), and fails as a
timeout once none is left: httpcore's ``ConnectTimeout``, ``ReadTimeout`` or
``WriteTimeout``, which httpx raises as its own ``TimeoutException`` (the caller's "timed
out"). Outside :func:`deadline`, operations keep their own timeouts. The deadline is the
thread's: calls on other threads (a warm sender's, a test's) each have their own.

httpx offers no public way to give its transport another network backend: the
connection pool it built is replaced (checked, so an httpx whose transport changed fails
when the client is built, not quietly without a deadline). A transport given this way does
not read ``HTTPS_PROXY`` (httpx reads it only for the transport it builds itself): Lambda
sets none, and :mod:`esl_sync.http_connections` does not read it either.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's calls, within the block, ends by ``seconds``
    from now."""
    _local.until = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.until = None


def _bounded(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """``timeout``, shortened to the time left before the thread's deadline; ``error`` when
    none is left."""
    until: float | None = getattr(_local, "until", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise error("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def transport(verify: ssl.SSLContext) -> httpx.HTTPTransport:
    """httpx's own transport (its connection limits, TLS by ``verify``), its socket
    operations held to the thread's :func:`deadline`."""
    built = httpx.HTTPTransport(verify=verify)
    if not isinstance(getattr(built, "_pool", None), httpcore.ConnectionPool):
        raise RuntimeError("httpx's transport has no connection pool to give a deadline")
    built._pool = httpcore.ConnectionPool(
        ssl_context=verify,
        max_connections=100,  # httpx's default limits, as HTTPTransport took them above
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_Backend(),
    )
    return built
