"""Verified TLS, one context per trust store per process, shared by every HTTPS client.

Loading a trust store's roots into a context costs ≈ 35 ms of CPU. httpx builds a context per
``Client`` and the AWS client one of its own, so a deployed poller's first invocation paid it
three times (Clover, Hipoink's client is the sender's, AWS); one context serves them all
(``ssl.SSLContext`` is safe to share between threads; httpcore only sets ALPN on it, to the
same ``http/1.1`` every time).

Which roots: what each library would have used on its own, so sharing changes no trust.
AWS calls honour ``AWS_CA_BUNDLE`` (as botocore does); the other HTTPS clients honour
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (as httpx does); otherwise both use certifi's roots (both
libraries' default), or the system's if certifi is not installed. certifi's roots come from
the layer's hashed directory of them when it matches the bundle (:mod:`esl_sync.hashed_roots`:
the same roots, parsed only as a handshake needs one: ≈ 1 ms instead of ≈ 30 per context).
"""

from __future__ import annotations

import os
import ssl
import threading

_lock = threading.Lock()
_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def verified(cafile: str | None = None, capath: str | None = None) -> ssl.SSLContext:
    """The process's context for these roots (certifi's when neither is given)."""
    key = (cafile or None, capath or None)
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = _new_context(*key)
        return context


def for_aws() -> ssl.SSLContext:
    """The context of AWS endpoints: ``AWS_CA_BUNDLE`` if set."""
    return verified(cafile=os.environ.get("AWS_CA_BUNDLE"))


def for_https() -> ssl.SSLContext:
    """The context of Clover's and Hipoink's endpoints: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``
    if set (what httpx reads when it builds its own)."""
    return verified(
        cafile=os.environ.get("SSL_CERT_FILE"),
        capath=None if os.environ.get("SSL_CERT_FILE") else os.environ.get("SSL_CERT_DIR"),
    )


def forget() -> None:
    """Drop every context (a test that changes the trust store starts afresh)."""
    with _lock:
        _contexts.clear()


def _new_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile is None and capath is None:
        from esl_sync import hashed_roots

        cafile = hashed_roots.certifi_bundle()  # None: the system's roots
        capath = hashed_roots.folder_for(cafile) if cafile is not None else None
        if capath is not None:
            cafile = None
    return ssl.create_default_context(cafile=cafile, capath=capath)
