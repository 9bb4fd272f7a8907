"""The Hipoink client against the simulator over HTTP: each answer lands in its error class."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.hipoink_sim import HipoinkSimulator
from esl_sync.hipoink.client import ANSWER_MAX_BYTES, MESSAGE_MAX_CHARS, HipoinkClient, held_page
from esl_sync.hipoink.errors import (
    HipoinkConfigError,
    HipoinkError,
    HipoinkNotFound,
    HipoinkRecordError,
    HipoinkRetryable,
)
from tests.bounded import raised_within
from tests.strategies import HOSTILE_TEXT, JSON_VALUES, assert_one_storable_line

SIGN = "s3cret-sign"
STORE = "store-1"


@pytest.fixture
def sim() -> Iterator[HipoinkSimulator]:
    with HipoinkSimulator(sign=SIGN, stores=[STORE]) as simulator:
        yield simulator


def client_for(
    sim: HipoinkSimulator, *, sign: str = SIGN, client_id: str = "default", **options: object
) -> HipoinkClient:
    return HipoinkClient(sim.base_url, client_id, lambda: sign, **options)  # type: ignore[arg-type]


def record(pc: str, price: str = "1.00") -> dict[str, str]:
    return {"pc": pc, "pn": f"Item {pc}", "pp": price, "pi": f"ID{pc}"}


def test_upsert_then_delete(sim: HipoinkSimulator) -> None:
    client = client_for(sim)
    client.upsert(STORE, [record("A"), record("B", "2.50")])
    assert sim.labels(STORE)["B"]["pp"] == "2.50"
    assert client.delete(STORE, ["A", "never-there"]) == 1
    assert list(sim.labels(STORE)) == ["B"]
    assert sim.request_count("product/create_multiple") == 1


@pytest.mark.parametrize("encoding", ["array", "string"])
def test_f1_encoding_is_configurable(sim: HipoinkSimulator, encoding: str) -> None:
    sim.f1_encoding = encoding  # type: ignore[assignment]
    client_for(sim, f1_encoding=encoding).upsert(STORE, [record("A")])
    assert list(sim.labels(STORE)) == ["A"]
    other = "string" if encoding == "array" else "array"
    with pytest.raises(HipoinkConfigError, match="f1 must be"):
        client_for(sim, f1_encoding=other).upsert(STORE, [record("B")])


@pytest.mark.parametrize(
    ("setup", "store", "message"),
    [
        ({"sign": "wrong-sign"}, STORE, "sign error"),
        ({"client_id": "nobody"}, STORE, "app key nobody not found"),
        ({}, "no-such-store", "store no-such-store not found"),
        ({}, "", "default missing store_code field"),
    ],
)
def test_configuration_errors(
    sim: HipoinkSimulator, setup: dict[str, str], store: str, message: str
) -> None:
    client = client_for(sim, **setup)
    with pytest.raises(HipoinkConfigError, match=message) as caught:
        client.upsert(store, [record("A")])
    assert "wrong-sign" not in str(caught.value)
    assert "wrong-sign" not in repr(client)


def test_a_record_error_names_the_product(sim: HipoinkSimulator) -> None:
    sim.reject_pcs = {"B"}
    with pytest.raises(HipoinkRecordError, match="product B: rejected") as caught:
        client_for(sim).upsert(STORE, [record("A"), record("B")])
    assert not isinstance(caught.value, HipoinkNotFound)
    with pytest.raises(HipoinkRecordError, match="product C: missing field pn"):
        client_for(sim).upsert(STORE, [{"pc": "C", "pp": "1.00"}])
    assert sim.labels(STORE) == {}


def test_a_batch_over_the_server_limit_is_refused_for_splitting(sim: HipoinkSimulator) -> None:
    sim.max_batch_size = 1
    with pytest.raises(HipoinkRecordError, match="too many products"):
        client_for(sim).upsert(STORE, [record("A"), record("B")])


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (503, None),
        (429, None),
        (408, None),
        (200, "<html>proxy error</html>"),
        # Answers without the integer error_code Hipoink documents: never taken for success.
        (200, '{"error_code": false}'),
        (200, '{"error_code": true}'),
        (200, '{"error_code": "0"}'),
        (200, '{"error_code": 0.0}'),
        (200, '{"error_code": null}'),
        (200, "{}"),
        (200, "[0]"),
        (200, "[" * 100_000 + "]" * 100_000),  # deeper than Python's parser goes
        (200, '{"error_code": 0, "pad": "' + "x" * (1 << 20) + '"}'),  # past ANSWER_MAX_BYTES
        (400, '{"error_code": 0}'),  # a success under an error status is none
        (302, '{"error_code": 0}'),
    ],
    ids=lambda value: (
        value
        if not isinstance(value, str) or len(value) < 40
        else f"{value[:16]}…{len(value)}-chars"
    ),
)
def test_retryable_answers(sim: HipoinkSimulator, status: int, body: str | None) -> None:
    sim.fail_next(status, body=body)
    with pytest.raises(HipoinkRetryable):
        client_for(sim).upsert(STORE, [record("A")])
    assert sim.labels(STORE) == {}  # the fault answered in the server's stead


def test_an_answer_past_its_bound_is_not_read_whole(sim: HipoinkSimulator) -> None:
    sim.fail_next(200, body='{"error_code": 0, "pad": "' + "x" * 50_000_000 + '"}')
    with pytest.raises(HipoinkRetryable, match=r"answer larger than 1048576 bytes \(HTTP 200\)$"):
        client_for(sim).upsert(STORE, [record("A")])
    assert ANSWER_MAX_BYTES == 1 << 20
    sim.fail_next(200, body='{"error_code": 0, "pad": "' + "x" * (ANSWER_MAX_BYTES - 30) + '"}')
    client_for(sim).upsert(STORE, [record("A")])  # within it: read, and a success


@pytest.mark.parametrize("call", ["upsert", "delete", "query"])
def test_an_answer_that_cannot_be_decoded_is_retryable_and_named(
    sim: HipoinkSimulator, call: str
) -> None:
    """A broken proxy's ``Content-Encoding: gzip`` over a body that is not: httpx raised its
    own DecodingError, which no caller expects (the job crashed, its labels unnamed; a verify
    was not refused by name but raised, retried ahead of its store's jobs). It is an
    unreadable answer like one that is not JSON: retryable, named, not chained (httpx's
    errors hold the request, and with it the sign)."""
    sim.fail_next(200, body='{"error_code": 0}', content_encoding="gzip")
    client = client_for(sim)
    calls = {
        "upsert": lambda: client.upsert(STORE, [record("A")]),
        "delete": lambda: client.delete(STORE, ["A", "B"]),
        "query": lambda: client.query(STORE, 1, 100),
    }
    with pytest.raises(HipoinkRetryable) as raised:
        calls[call]()
    path = {"upsert": "create_multiple", "delete": "del_multiple", "query": "query"}[call]
    assert str(raised.value) == f"{path}: answer cannot be decoded (gzip, HTTP 200)"
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert SIGN not in str(raised.value)


def test_a_timeout_is_retryable(sim: HipoinkSimulator) -> None:
    sim.delay_next(0.5)
    with pytest.raises(HipoinkRetryable, match="timed out"):
        client_for(sim, timeout_seconds=0.1).upsert(STORE, [record("A")])


def test_a_refused_unknown_code_counts_as_deleted_when_alone(sim: HipoinkSimulator) -> None:
    sim.unknown_delete = "error"
    client = client_for(sim)
    client.upsert(STORE, [record("A")])
    assert client.delete(STORE, ["gone"]) == 0
    with pytest.raises(HipoinkNotFound):  # the batch was refused: the sender splits it
        client.delete(STORE, ["A", "gone"])
    assert client.delete(STORE, ["A"]) == 1


def test_the_sign_is_read_on_every_call(sim: HipoinkSimulator) -> None:
    current = {"sign": "old-sign"}
    client = HipoinkClient(sim.base_url, "default", lambda: current["sign"])
    with pytest.raises(HipoinkError):
        client.upsert(STORE, [record("A")])
    current["sign"] = SIGN  # rotated in the secret store
    client.upsert(STORE, [record("A")])
    assert list(sim.labels(STORE)) == ["A"]


_answers = st.one_of(
    # What a Hipoink could say: an object with any error_code and any error_msg (the sign
    # echoed in it at times), written as json writes it (lone surrogates as escapes).
    st.fixed_dictionaries(
        {"error_code": st.integers(-1, 2) | st.booleans() | JSON_VALUES},
        optional={
            "error_msg": HOSTILE_TEXT
            | st.builds("{} sign {} {}".format, st.text(), st.just(SIGN), st.text())
            | JSON_VALUES,
            "count": JSON_VALUES,
        },
    ).map(json.dumps),
    # What a proxy or a broken server could say instead.
    st.text(st.characters(exclude_categories=("Cs",)), max_size=200),
)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[HipoinkSimulator]:
    """One simulator for every example: each answers one request with a fault it set."""
    with HipoinkSimulator(sign=SIGN, stores=[STORE]) as simulator:
        yield simulator


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    status=st.sampled_from([200, 200, 200, 400, 401, 404, 408, 413, 429, 500, 502]), body=_answers
)
def test_whatever_hipoink_answers_is_one_named_class_with_a_storable_message(
    shared_sim: HipoinkSimulator, status: int, body: str
) -> None:
    """Any status and body: the client either succeeds or raises one of the sender's error
    classes (never another exception), whose message is one line Postgres can store, at
    most the kept length past its prefix, with the sign masked."""
    shared_sim.fail_next(status, body=body)
    client = client_for(shared_sim)
    try:
        client.upsert(STORE, [record("A")])
    except HipoinkError as error:
        message = str(error)
        assert message.startswith("create_multiple: ")
        assert_one_storable_line(message)
        assert len(message) <= len("create_multiple: ") + MESSAGE_MAX_CHARS
        assert SIGN not in message
    else:
        assert status == 200  # only an answer with error_code 0 is a success
        answer = json.loads(body)
        assert type(answer) is dict
        assert type(answer["error_code"]) is int
        assert answer["error_code"] == 0
    finally:
        client.close()


# -- an answer that drips ------------------------------------------------------------------


class _Drip:
    """A server that answers ``head`` and then writes ``drip`` one byte each ``every``
    seconds, for as long as the client listens: each read gets a byte well within the
    client's read timeout, so only a deadline on the whole call ends it."""

    def __init__(self, head: bytes, drip: bytes, every: float = 0.05) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sent = 0
        self._head, self._drip, self._every = head, drip, every
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self._head)
                    while True:
                        for byte in self._drip:
                            conn.sendall(bytes([byte]))
                            self.sent += 1
                            time.sleep(self._every)
                except OSError:  # the client gave up
                    continue


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X-Padding: aaaa\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b' {"error_code": 0}'),
    ],
    ids=["head", "body"],
)
def test_an_answer_that_drips_is_a_timeout_by_the_calls_deadline(head: bytes, drip: bytes) -> None:
    """A server, proxy or load balancer writing its answer a byte at a time, each within
    the read timeout, held a call (the timeout bounded each read, not the call) until the
    sender's Lambda timed out, and with it the batch's other jobs, already sent or not: the
    sender starts a job only while one call's HIPOINK_TIMEOUT_SECONDS still fits. The whole
    call now ends by that deadline, as a retryable timeout."""
    server = _Drip(head, drip)
    client = HipoinkClient(server.url, "default", lambda: SIGN, timeout_seconds=0.5)
    try:
        error = raised_within(
            10,
            lambda: client.upsert(STORE, [record("A")]),
            "still reading the dripping answer",
        )
        assert isinstance(error, HipoinkRetryable), repr(error)
        assert "timed out" in str(error)
        assert SIGN not in str(error)
    finally:
        client.close()
        server.listener.close()


@pytest.mark.parametrize(
    ("answer", "total"),
    [
        ({"data": [], "total": 250}, 250),
        ({"data": [], "total": "250"}, 250),
        ({"data": {"list": [], "total": 250}, "total": 7}, 250),
        ({"data": [], "count": 100}, None),  # one page's count, or a call's: not the total
        ({"data": {"list": [], "count": 100}}, None),
        ({"data": [], "total": True}, None),
        ({"data": [], "total": -1}, None),
        ({"data": [], "total": "1e3"}, None),
    ],
)
def test_a_listings_total_is_read_only_where_it_can_only_be_the_total(
    answer: dict[str, object], total: int | None
) -> None:
    """The verify stops reading at the reported total: a ``count`` read as one would end a
    store's listing after its first page, and every later label would look drifted."""
    assert held_page({"error_code": 0, **answer}, 1).total == total
