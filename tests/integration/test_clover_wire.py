"""The Clover items client against what a server, a proxy or a broken network may send: a
scripted server on loopback that writes each answer byte for byte (bodies cut short,
connections dropped mid-body, chunked and gzip bodies, corrupt gzip, too many headers, an
invalid status line, a 100 KB header line, silence past the timeout). Each ends in a named
Clover error (retried when the transport failed, not when a complete answer was wrong),
never in another exception, and never shows the token. Backoff sleeps are recorded, not
slept."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_sync.clover import client as clover_client
from esl_sync.clover.client import CloverClient, MerchantCatalog
from esl_sync.clover.errors import (
    CloverBadResponse,
    CloverConnectionError,
    CloverError,
    CloverOutOfTime,
    CloverRateLimited,
    CloverRequestRejected,
    CloverTimeout,
)
from esl_sync.clover.oauth import CloverOAuthClient
from esl_sync.clover.pacing import RequestPacer
from esl_sync.clover.walk import ItemWalk
from tests.bounded import raised_within

MID = "MWIRE0000001"
TOKEN = "tok-WIRE-SECRET-5e4d3c2b1a"
ITEM = {"id": "ITEM00000001", "name": "Coffee", "price": 199, "modifiedTime": 1_704_067_200_000}
PAGE = json.dumps({"elements": [ITEM]}).encode()

# What a step is given: the connection and the request's head; it writes the answer (or
# not) and says whether the connection stays open for another request.
Step = Callable[[socket.socket, bytes], bool]


def answer(
    body: bytes = PAGE,
    *,
    status: bytes = b"200 OK",
    headers: tuple[bytes, ...] = (),
    length: int | None = None,
    keep: bool = True,
) -> Step:
    """A plain answer; ``length`` other than the body's own makes a lying Content-Length."""

    def step(conn: socket.socket, head: bytes) -> bool:
        size = len(body) if length is None else length
        lines = [b"HTTP/1.1 " + status, b"Content-Type: application/json", *headers]
        lines.append(b"Content-Length: %d" % size)
        conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return keep

    return step


def raw(data: bytes, *, keep: bool = False) -> Step:
    """Exactly ``data``, then the connection closed (unless ``keep``)."""

    def step(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(data)
        return keep

    return step


def chunked(*chunks: bytes, end: bool = True) -> Step:
    """A chunked body; without its last chunk (``end=False``) the connection just closes."""
    data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + (b"0\r\n\r\n" if end else b"")
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return raw(head + data, keep=end)


def silent(seconds: float, prefix: bytes = b"") -> Step:
    """``prefix`` (maybe nothing), then nothing for ``seconds``, then the connection closed."""

    def step(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(prefix)
        time.sleep(seconds)
        return False

    return step


def reset(prefix: bytes) -> Step:
    """``prefix``, then the connection reset (RST, not a clean close)."""

    def step(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(prefix)
        time.sleep(0.05)  # let the bytes go first
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    return step


class Wire:
    """Serves each request (on any connection) with the next step of ``script``, then with
    :func:`answer` once the script is used up; keeps the heads it was sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.script: list[Step] = []
        self.heads: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                with self._lock:
                    self.heads.append(head)
                    step = self.script.pop(0) if self.script else answer()
                try:
                    if not step(conn, head):
                        return
                except OSError:  # the client gave up first
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def wire() -> Iterator[Wire]:
    server = Wire()
    yield server
    server.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def catalog(wire: Wire, sleeps: list[float]) -> Iterator[MerchantCatalog]:
    with CloverClient(
        max_attempts=3, timeout_seconds=0.3, pacer=RequestPacer(), sleep=sleeps.append
    ) as client:
        yield client.merchant(MID, TOKEN, wire.url)


def _page(catalog: MerchantCatalog) -> list[dict[str, Any]]:
    return catalog.list_page([("limit", "1000")]).elements


def _gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# -- what is sent, and bodies that are fine --------------------------------------------------


def test_each_request_asks_for_gzip_and_json_and_carries_the_token_in_one_header(
    wire: Wire, catalog: MerchantCatalog
) -> None:
    assert _page(catalog) == [ITEM]
    [head] = wire.heads
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == f"GET /v3/merchants/{MID}/items?limit=1000 HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Accept-Encoding"] == "gzip"
    assert headers["Accept"] == "application/json"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Host"] == urlsplit(wire.url).netloc
    assert [line for line in lines if TOKEN in line] == [f"Authorization: Bearer {TOKEN}"]


@pytest.mark.parametrize(
    "step",
    [
        answer(_gzipped(PAGE), headers=(b"Content-Encoding: gzip",)),
        answer(_gzipped(PAGE[:20]) + _gzipped(PAGE[20:]), headers=(b"Content-Encoding: gzip",)),
        chunked(PAGE[:7], PAGE[7:30], PAGE[30:]),
        chunked(*(bytes([b]) for b in PAGE)),
        raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + PAGE),  # to the close
    ],
    ids=["gzip", "gzip-two-members", "chunked", "chunked-bytewise", "body-to-the-close"],
)
def test_gzip_chunked_and_unbounded_bodies_are_read_whole(
    wire: Wire, catalog: MerchantCatalog, step: Step, sleeps: list[float]
) -> None:
    wire.script = [step]
    assert _page(catalog) == [ITEM]
    assert (catalog.requests, sleeps) == (1, [])


def test_a_chunked_gzip_body_is_decoded(wire: Wire, catalog: MerchantCatalog) -> None:
    body = _gzipped(PAGE)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 5]), body[i : i + 5])
            for i in range(0, len(body), 5)
        )
        + b"0\r\n\r\n"
    )
    wire.script = [raw(head, keep=True)]
    assert _page(catalog) == [ITEM]
    assert catalog.get_item("ITEM00000001") is not None  # and the connection was kept
    assert wire.connections == 1


def test_a_connection_the_server_closed_while_idle_is_reopened_uncounted(
    wire: Wire, catalog: MerchantCatalog, sleeps: list[float]
) -> None:
    wire.script = [answer(keep=False)]  # closes without saying so (no Connection: close)
    assert _page(catalog) == [ITEM]
    assert _page(catalog) == [ITEM]
    assert (catalog.requests, wire.connections, sleeps) == (2, 2, [])


def test_a_kept_connection_that_fails_after_its_answer_began_is_a_counted_attempt(
    wire: Wire, catalog: MerchantCatalog, sleeps: list[float]
) -> None:
    """Only a failure before any byte of the answer is a connection that died while idle
    (sent again at once, uncounted); a reset mid-body is an attempt, retried with backoff."""
    wire.script = [answer(), reset(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{")]
    assert _page(catalog) == [ITEM]
    assert _page(catalog) == [ITEM]  # on the kept connection: reset, then a new one
    assert (catalog.requests, len(sleeps), len(wire.heads)) == (3, 1, 3)


def test_a_redirect_is_not_followed(wire: Wire, catalog: MerchantCatalog) -> None:
    wire.script = [answer(b"", status=b"302 Found", headers=(b"Location: http://evil.test/",))]
    with pytest.raises(CloverRequestRejected) as raised:
        _page(catalog)
    assert raised.value.status == 302
    assert len(wire.heads) == 1


# -- hostile answers: each a named error, retried only when the transport failed -------------

_HUGE_LINE = b"X-Padding: " + b"a" * 100_000
_MANY_HEADERS = b"".join(b"X-H%d: v\r\n" % n for n in range(101))
_ECHO = f"HTTP/1.1 2OO Bearer {TOKEN}\r\n\r\n".encode()  # a status line quoting the token


@pytest.mark.parametrize(
    ("step", "error_type", "text", "retried"),
    [
        (answer(b"<html>Bearer " + TOKEN.encode()), CloverBadResponse, "body is not JSON", False),
        (
            answer(PAGE[:30], length=len(PAGE), keep=False),
            CloverConnectionError,
            "IncompleteRead",
            True,
        ),
        (chunked(PAGE[:30], end=False), CloverConnectionError, "IncompleteRead", True),
        (
            reset(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + PAGE[:10]),
            CloverConnectionError,
            "ConnectionResetError",
            True,
        ),
        (
            answer(_gzipped(PAGE)[:-8] + b"\x00" * 8, headers=(b"Content-Encoding: gzip",)),
            CloverBadResponse,
            "gzip body is corrupt",
            False,
        ),
        (
            answer(_gzipped(PAGE)[:-12], headers=(b"Content-Encoding: gzip",)),
            CloverBadResponse,
            "gzip body is truncated",
            False,
        ),
        (
            answer(PAGE, headers=(b"Content-Encoding: br",)),
            CloverBadResponse,
            "encoding not asked for ('br')",
            False,
        ),
        (
            raw(b"HTTP/1.1 200 OK\r\n" + _MANY_HEADERS + b"\r\n"),
            CloverConnectionError,
            "got more than 100 headers",
            True,
        ),
        (raw(b"HTTPS/9 nonsense\r\n\r\n"), CloverConnectionError, "BadStatusLine", True),
        (raw(_ECHO), CloverConnectionError, "BadStatusLine", True),
        (raw(b"\x00\xff\xfe garbage\r\n\r\n"), CloverConnectionError, "BadStatusLine", True),
        (raw(b""), CloverConnectionError, "RemoteDisconnected", True),
        (
            raw(b"HTTP/1.1 200 OK\r\n" + _HUGE_LINE + b"\r\n\r\n"),
            CloverConnectionError,
            "LineTooLong",
            True,
        ),
        (silent(1.0), CloverTimeout, "no answer within 0.3s", True),
        (
            silent(1.0, b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + PAGE[:10]),
            CloverTimeout,
            "no answer within 0.3s",
            True,
        ),
    ],
    ids=[
        "not-json",
        "truncated-body",
        "dropped-mid-chunked-body",
        "reset-mid-body",
        "corrupt-gzip",
        "truncated-gzip",
        "unasked-encoding",
        "101-headers",
        "invalid-status-line",
        "status-line-quoting-the-token",
        "binary-status-line",
        "closed-without-answer",
        "100kb-header-line",
        "silent-past-the-timeout",
        "stalled-mid-body",
    ],
)
def test_hostile_answers_end_in_named_errors_without_the_token(
    wire: Wire,
    catalog: MerchantCatalog,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    step: Step,
    error_type: type[CloverError],
    text: str,
    retried: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    wire.script = [step] * 3
    with pytest.raises(CloverError) as raised:
        _page(catalog)
    error = raised.value
    assert type(error) is error_type
    assert text in str(error)
    assert error.merchant_id == MID
    assert error.__cause__ is None  # nothing chained
    assert error.__suppress_context__
    attempts = 3 if retried else 1
    assert (catalog.requests, len(sleeps)) == (attempts, attempts - 1)
    shown = [str(error), repr(error), "".join(traceback.format_exception(error)), caplog.text]
    assert not [piece for piece in shown if TOKEN in piece]
    wire.script = []
    assert _page(catalog) == [ITEM]  # and the client is fine afterwards


_HEADS = st.sampled_from(
    [
        b"",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\n",
    ]
)


@settings(max_examples=60, deadline=None)
@given(head=_HEADS, rest=st.binary(max_size=200) | st.sampled_from([PAGE, _gzipped(PAGE)]))
def test_any_bytes_from_the_server_end_in_a_page_or_a_named_error(head: bytes, rest: bytes) -> None:
    """Whatever a server writes before it closes the connection, the caller gets a page or
    a Clover error, never another exception, never the token."""
    wire = Wire()
    wire.script = [raw(head + rest)] * 2
    client = CloverClient(
        max_attempts=2, timeout_seconds=2, pacer=RequestPacer(), sleep=lambda _: None
    )
    outcome: list[dict[str, Any]] | CloverError
    try:
        with client:
            outcome = _page(client.merchant(MID, TOKEN, wire.url))
    except CloverError as error:
        outcome = error
    finally:
        wire.close()
    if isinstance(outcome, CloverError):
        assert outcome.merchant_id == MID
        assert TOKEN not in str(outcome) + repr(outcome)
    else:
        assert all(isinstance(element, dict) for element in outcome)


def test_answers_past_the_size_limit_are_refused_unread(
    wire: Wire, catalog: MerchantCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body (as sent, or once inflated: a gzip bomb) larger than ``MAX_BODY_BYTES`` is a
    bad answer, not retried, its rest never read (the limit is lowered to 1 MiB here)."""
    monkeypatch.setattr(clover_client, "MAX_BODY_BYTES", 1 << 20)
    bomb = _gzipped(b'{"elements": [], "pad": "' + b" " * (2 << 20) + b'"}')
    assert len(bomb) < 10_000
    big = b" " * ((1 << 20) + 1)
    cases = [
        (answer(bomb, headers=(b"Content-Encoding: gzip",)), "larger than 1048576 bytes once"),
        (answer(big), "body is larger than 1048576 bytes"),
        (answer(b"", length=10**12), "body is larger than 1048576 bytes"),
        (chunked(big[:700_000], big[700_000:]), "body is larger than 1048576 bytes"),
        (
            raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n" + big * 2),
            "body is larger than 1048576 bytes",
        ),
    ]
    for step, text in cases:
        wire.script = [step]
        before = catalog.requests
        with pytest.raises(CloverBadResponse, match=text):
            _page(catalog)
        assert catalog.requests == before + 1
    wire.script = []
    assert _page(catalog) == [ITEM]


def test_a_connection_refused_is_a_named_error_after_every_attempt(
    sleeps: list[float],
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    client = CloverClient(max_attempts=3, pacer=RequestPacer(), sleep=sleeps.append)
    with client, pytest.raises(CloverConnectionError, match="ConnectionRefusedError"):
        _page(client.merchant(MID, TOKEN, url))
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "token", ["tok\r\nX-Injected: 1", "tok with space", "tók-unicode", "tok\x00nul", "tok\t"]
)
def test_a_token_a_header_cannot_carry_is_refused_before_sending(wire: Wire, token: str) -> None:
    client = CloverClient(pacer=RequestPacer())
    with client, pytest.raises(ValueError, match="access token is not header-safe") as raised:
        client.merchant(MID, token, wire.url)
    assert token not in str(raised.value)
    assert wire.heads == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc", "http://127.0.0.1:70000", "http://"])
def test_a_base_url_that_is_no_url_is_refused_by_name(url: str) -> None:
    client = CloverClient(pacer=RequestPacer())
    with client, pytest.raises(ValueError, match=f"merchant {MID}: base_url"):
        client.merchant(MID, TOKEN, url)


def test_a_server_ignoring_offset_cannot_loop_forever(wire: Wire) -> None:
    """Not the simulator: a server that honours filter and order but ignores ``offset``."""
    items = [
        {"id": f"T{n:012d}", "name": f"Tied {n}", "price": 1, "modifiedTime": 1_704_067_200_000}
        for n in range(5)
    ]

    def ignoring_offset(conn: socket.socket, head: bytes) -> bool:
        # Every item shares one ms, so every filter matches all and the order is trivial.
        target = head.split(b" ")[1].decode()
        limit = int(parse_qs(urlsplit(target).query)["limit"][0])
        return answer(json.dumps({"elements": items[:limit]}).encode())(conn, head)

    wire.script = [ignoring_offset] * 20
    with CloverClient(page_size=2, pacer=RequestPacer()) as client:
        catalog = client.merchant(MID, TOKEN, wire.url)
        walk = ItemWalk(catalog, None)
        with pytest.raises(CloverBadResponse, match="is 'offset' ignored"):
            list(walk)
        assert walk.fell_back
        assert catalog.requests < 10


# -- which limit a 429 names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (b"X-RateLimit-tokenLimit: 16", "tokenLimit"),
        (b"x-ratelimit-crosstokenlimit: 50", "crossTokenLimit"),  # as an HTTP/2 proxy writes it
        (b"X-RateLimit-Remaining: 0", "other"),
        (b"X-RateLimit-crossTokenSomething: 1", "other"),
        (b"X-RateLimit-" + b"Z" * 5000 + b": 1", "other"),
        (b"X-Other: 1", "unnamed"),
    ],
)
def test_a_429_is_counted_under_a_limit_clover_has_or_other(
    wire: Wire,
    catalog: MerchantCatalog,
    capsys: pytest.CaptureFixture[str],
    header: bytes,
    named: str,
) -> None:
    """The limit a 429 names becomes a metric's dimension and goes into the error and log:
    a header's name is whatever a server or proxy writes, and every new dimension value is
    a new CloudWatch metric, paid for each month. Only Clover's four names are kept."""
    wire.script = [answer(b"{}", status=b"429 Too Many", headers=(header, b"Retry-After: 0"))]
    capsys.readouterr()
    assert _page(catalog) == [ITEM]
    printed = capsys.readouterr().out
    limits = [
        json.loads(line)["Limit"]
        for line in printed.splitlines()
        if '"CloverRateLimitedByLimit"' in line
    ]
    assert limits == [named]
    for odd in ("Z" * 100, "Remaining", "Something"):
        assert odd not in printed


# -- a Retry-After the poll cannot wait out ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"3600",
        b"inf",
        b"1e400",
        b"9" * 400,
        b"Fri, 31 Dec 2099 23:59:59 GMT",
    ],
    ids=["an hour", "inf", "1e400", "400 digits", "2099"],
)
def test_a_retry_after_longer_than_the_longest_backoff_fails_at_once_and_pauses_no_longer(
    wire: Wire, sleeps: list[float], value: bytes
) -> None:
    """A 429 asking for a wait longer than the client's longest backoff (an hour, infinity,
    a date in 2099: what a proxy or a misconfigured gateway may send) is not waited out:
    the poll would sleep into the Lambda timeout, killing the batch's other polls with it,
    and a pause that long would stall every later poll of the token (of every merchant,
    for a cross-token limit) in the warm instance. It fails at once, by name, and pauses
    the token no longer than the longest backoff."""
    pacer = RequestPacer()
    wire.script = [
        answer(
            b"{}",
            status=b"429 Too Many",
            headers=(b"X-RateLimit-crossTokenLimit: 50", b"Retry-After: " + value),
        )
    ]
    with CloverClient(
        max_attempts=3,
        timeout_seconds=0.3,
        backoff_cap_seconds=0.5,  # the longest backoff, short for the test
        pacer=pacer,
        sleep=sleeps.append,
    ) as client:
        catalog = client.merchant(MID, TOKEN, wire.url)
        started = time.monotonic()
        error = raised_within(10, lambda: _page(catalog), "the poll waits out the Retry-After")
        assert isinstance(error, CloverRateLimited), repr(error)
        assert catalog.requests == 1
        assert sleeps == []
        assert error.retry_after_seconds > client.backoff_cap_seconds  # what was asked
        assert "Retry-After" in str(error)
        # The next request waits no longer than the longest backoff (the pacer's pause).
        waited = threading.Event()

        def next_request() -> None:
            pacer.acquire("another-token")
            pacer.release("another-token")
            waited.set()

        threading.Thread(target=next_request, daemon=True).start()
        assert waited.wait(10), "a later request waits out the hour"
        assert time.monotonic() - started < 10


@pytest.mark.parametrize("value", [b"nan", b"-inf", b"soon", b""])
def test_an_unreadable_retry_after_is_taken_as_none_and_backs_off_as_ever(
    wire: Wire, catalog: MerchantCatalog, sleeps: list[float], value: bytes
) -> None:
    """``nan`` reads as a float but is no wait: it, and any other unreadable value, is
    handled as a 429 without Retry-After (the jittered backoff), never an exception."""
    wire.script = [answer(b"{}", status=b"429 Too Many", headers=(b"Retry-After: " + value,))]
    assert _page(catalog) == [ITEM]
    [slept] = sleeps
    assert 0 < slept <= 20.1


# -- the invocation's time ----------------------------------------------------------------


def test_no_request_or_retry_starts_that_the_invocation_could_not_wait_out(
    wire: Wire, sleeps: list[float]
) -> None:
    """A request needs the longest an attempt may take (three timeouts: its answer's
    deadline) left in the invocation; a retry its wait too.
    What cannot finish is not started (``CloverOutOfTime``): cut off by Lambda's timeout,
    the poll would record nothing and its batch report nothing."""
    wire.script = [answer(b"{}", status=b"503 Busy")]
    # Enough for one attempt of at most 0.9 s; once it is made, 500 ms: no retry after it.
    left = [1000, 500]
    with CloverClient(
        max_attempts=3, timeout_seconds=0.3, pacer=RequestPacer(), sleep=sleeps.append
    ) as client:
        catalog = client.merchant(
            MID, TOKEN, wire.url, time_left_ms=lambda: left[min(len(wire.heads), 1)]
        )
        with pytest.raises(CloverOutOfTime, match="not sent: 500 ms left"):
            _page(catalog)
        assert (catalog.requests, sleeps) == (1, [])
        left[1] = 200  # not even a first request
        with pytest.raises(CloverOutOfTime):
            catalog.get_item("ITEM00000001")
        assert catalog.requests == 1


# -- a Date whose numbers no clock holds ------------------------------------------------------

_HUGE = b"9" * 400
_OVERFLOWING_DATES = [
    b"Mon, 01 Jan " + _HUGE + b" 00:00:00 GMT",
    b"Mon, " + _HUGE + b" Jan 2026 00:00:00 GMT",
    b"Mon, 01 Jan 2026 " + _HUGE + b":00:00 GMT",
    b"Mon, 01 Jan 2026 00:00:" + _HUGE + b" GMT",
    b"Mon, 01 Jan 2026 00:00:00 +" + _HUGE,
]
_DATE_IDS = ["year", "day", "hour", "second", "zone"]


@pytest.mark.parametrize("value", _OVERFLOWING_DATES, ids=_DATE_IDS)
def test_a_date_header_whose_numbers_overflow_is_no_clock_and_the_page_is_read(
    wire: Wire, value: bytes
) -> None:
    """A ``Date`` whose year, day, time or zone has 400 digits (what a broken proxy or
    gateway may write) is an unreadable date: the page is read and the walk knows no Clover
    time (the cursor stays, as without a Date). Python's date parsing raised OverflowError
    for it, out of the client, which promises Clover errors only: the poll failed on every
    answer such a front end touched."""
    wire.script = [answer(headers=(b"Date: " + value,))]
    with CloverClient(max_attempts=1, timeout_seconds=0.3, pacer=RequestPacer()) as client:
        walk = ItemWalk(client.merchant(MID, TOKEN, wire.url), None)
        assert [item for page in walk for item in page] == [ITEM]
    assert walk.clover_time_ms is None


@pytest.mark.parametrize("value", _OVERFLOWING_DATES, ids=_DATE_IDS)
def test_a_retry_after_date_whose_numbers_overflow_backs_off_as_ever(
    wire: Wire, catalog: MerchantCatalog, sleeps: list[float], value: bytes
) -> None:
    """The same dates as a 429's ``Retry-After`` (and as its ``Date``): no wait is read, so
    the 429 backs off as one without Retry-After, never an OverflowError."""
    wire.script = [
        answer(
            b"{}",
            status=b"429 Too Many",
            headers=(b"Retry-After: " + value, b"Date: " + value),
        )
    ]
    assert _page(catalog) == [ITEM]
    [slept] = sleeps
    assert 0 < slept <= 20.1


# -- an OAuth answer that drips -----------------------------------------------------------


def drip(head: bytes, body: bytes, every: float = 0.05) -> Step:
    """``head``, then ``body`` one byte each ``every`` seconds, again and again, for as long
    as the client listens: each read gets a byte well within its timeout."""

    def step(conn: socket.socket, _head: bytes) -> bool:
        conn.sendall(head)
        while True:
            for byte in body:
                conn.sendall(bytes([byte]))  # OSError once the client gave up: Wire's
                time.sleep(every)

    return step


@pytest.mark.parametrize(
    ("head", "body"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X-Padding: aaaa\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b' {"access_token": "a"}'),
    ],
    ids=["head", "body"],
)
def test_a_token_refresh_whose_answer_drips_times_out_within_its_lock(
    wire: Wire, head: bytes, body: bytes
) -> None:
    """A refresh runs under the merchant's refresh lock, which outlives the OAuth call's
    timeout three times over. An answer written a byte at a time, each within the read
    timeout, held the call past the lock: another poller then took the lock over and
    refreshed with the same, single-use refresh token, which Clover refuses, marking the
    merchant for re-authorization (and the poll itself ran into its Lambda timeout). The
    whole call now ends within the timeout, as a CloverTimeout."""
    wire.script = [drip(head, body)]
    client = CloverOAuthClient("app-1", timeout_seconds=0.5, pacer=RequestPacer())
    try:
        error = raised_within(
            10,
            lambda: client.refresh(wire.url, MID, "refresh-SECRET"),
            "the refresh still reads the dripping answer",
        )
        assert isinstance(error, CloverTimeout), repr(error)
        assert "SECRET" not in str(error)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("head", "body"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X-Padding: aaaa\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b' {"elements": []}'),
    ],
    ids=["head", "body"],
)
def test_a_page_whose_answer_drips_times_out_by_the_requests_deadline(
    wire: Wire, catalog: MerchantCatalog, sleeps: list[float], head: bytes, body: bytes
) -> None:
    """An items page written a byte at a time, each byte within the read timeout (a broken
    proxy, a stalling gateway), held the poll until its Lambda timed out, and the batch's
    other polls with it: the timeout bounded each read, never the answer. Each attempt now
    ends by its deadline (three timeouts), as a timeout, retried, then a CloverTimeout."""
    wire.script = [drip(head, body) for _ in range(3)]
    error = raised_within(20, lambda: _page(catalog), "the poll still reads the dripping answer")
    assert isinstance(error, CloverTimeout), repr(error)
    assert "or 0.9s (the whole answer)" in str(error)  # the deadline that ended it, named
    assert catalog.requests == 3
    assert len(sleeps) == 2  # backed off between the attempts, as after any timeout
    assert TOKEN not in str(error)
