"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EslSync")

from devkit.aws_calls import SESSION_CALLS, AwsCall, as_record, read_record, write_record
from devkit.embedded_postgres import EmbeddedPostgres
from devkit.local_stack import LocalStack
from tests.fakes import MemoryLog


@pytest.fixture
def log() -> Iterator[MemoryLog]:
    """The log lines the code under test writes."""
    with MemoryLog.attached() as lines:
        yield lines


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``DATABASE_URL`` when set (CI with its own server), else an embedded server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with EmbeddedPostgres() as server:
        yield server.url


@pytest.fixture(scope="session")
def make_database(postgres_server: str) -> Callable[[], str]:
    """Creates a new, empty database on the session's server and returns its URL."""

    def create() -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_conninfo(postgres_server, dbname=name)

    return create


@pytest.fixture
def database_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def stack(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """The whole local stack on a fresh database, with both simulators."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    with LocalStack() as local:
        yield local


# ---------------------------------------------------------------- deploy-time stand-ins


class CloudFormationAnswers:
    """CloudFormation's presigned response URL on loopback: keeps each PUT answer."""

    def __init__(self) -> None:
        answers: list[dict[str, Any]] = []
        self.answers = answers

        class Receive(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers["Content-Length"])
                answers.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = HTTPServer(("127.0.0.1", 0), Receive)
        self.url = f"http://127.0.0.1:{self._server.server_port}/cfn-response?signed"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()  # shutdown() waits up to one poll_interval (0.5 s by default)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def cloudformation() -> Iterator[CloudFormationAnswers]:
    answers = CloudFormationAnswers()
    yield answers
    answers.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections, reads whatever comes and never answers (a
    Postgres or an AWS endpoint that hangs); the port it listens on."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)  # kept open, never written to

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


# ---------------------------------------------------------------- AWS calls of the handlers
#
# Every local stack records the AWS calls its handlers make (devkit/aws_calls.py) and fails
# when one is not granted by the function's role. The other direction (nothing granted that
# is never called) needs every call the code makes: tests/infra/aws_calls.json holds them,
# and tests/infra/test_iam.py compares it with the roles. Here the file is kept true: when
# a session runs the whole integration suite and it passes, the calls made during its tests
# must be exactly the file's (whatever the order of the tests), and `scripts/record-aws-calls`
# rewrites the file from such a run.

AWS_CALLS_FILE = Path(__file__).parent / "infra" / "aws_calls.json"
RECORD_VARIABLE = "ESL_SYNC_RECORD_AWS_CALLS"
_INTEGRATION = Path(__file__).parent / "integration"
_integration_calls: set[AwsCall] = set()
_integration_items: set[str] = set()
_passed: set[str] = set()  # every test that passed or was skipped (see logreport)
_integration_partial: list[str] = []


def _is_integration(item: pytest.Item) -> bool:
    return _INTEGRATION in Path(str(item.path)).parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _integration_items.update(item.nodeid for item in items if _is_integration(item))
    files = {Path(str(item.path)).name for item in items if _is_integration(item)}
    missing = {p.name for p in _INTEGRATION.glob("test_*.py")} - files
    if missing:
        _integration_partial.append(f"not collected: {sorted(missing)}")


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(_is_integration(item) for item in items):
        _integration_partial.append("some integration tests deselected")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    before = set(SESSION_CALLS)
    SESSION_CALLS.clear()
    try:
        return (yield)
    finally:
        if _is_integration(item):
            _integration_calls.update(SESSION_CALLS)
        SESSION_CALLS.update(before)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test passed, or was skipped (say, no PostgreSQL 15 here: its calls are others' too).
    Any test: under xdist the controller hears of every test before it knows which ones are
    integration tests (the workers collect, and tell it at the end)."""
    if report.skipped or (report.when == "call" and report.passed):
        _passed.add(report.nodeid)


# Under pytest-xdist (`scripts/test` runs two worker processes) each worker runs part of
# the suite: at its end it hands what it collected and the calls its tests made to the
# controller (xdist's `workeroutput`), which hears every test's report and checks the whole.
_WORKER_OUTPUT = "esl_sync_integration"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """(xdist, on the controller) A worker ended: take what it saw."""
    seen = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT)
    if seen is None:  # it crashed before the end of its session
        _integration_partial.append(f"worker {node.gateway.id} ended without its record")
        return
    _integration_items.update(seen["items"])
    _integration_partial.extend(seen["partial"])
    _integration_calls.update(
        AwsCall(function, action, resource, tuple(attributes))
        for function, action, resource, attributes in seen["calls"]
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _is_worker(session.config):
        session.config.workeroutput[_WORKER_OUTPUT] = {  # type: ignore[attr-defined]
            "items": sorted(_integration_items),
            "partial": list(_integration_partial),
            "calls": [
                (c.function, c.action, c.resource, list(c.attributes)) for c in _integration_calls
            ],
        }
        return
    complete = (
        bool(_integration_items) and not _integration_partial and _integration_items <= _passed
    )
    recording = bool(os.environ.get(RECORD_VARIABLE))
    if not complete:
        if recording:
            _fail(session, f"{RECORD_VARIABLE}: run the whole integration suite, and pass it")
        return
    if recording:
        write_record(AWS_CALLS_FILE, _integration_calls)
        return
    recorded, committed = as_record(_integration_calls), read_record(AWS_CALLS_FILE)
    if recorded != committed:
        lines = [
            f"{function} {action} {resource} {attributes}: {where}"
            for where, one, other in (
                ("called, not in the file", recorded, committed),
                ("in the file, never called", committed, recorded),
            )
            for function, actions in one.items()
            for action, resources in actions.items()
            for resource, attributes in resources.items()
            if other.get(function, {}).get(action, {}).get(resource) != attributes
        ]
        _fail(
            session,
            f"the handlers' AWS calls differ from {AWS_CALLS_FILE.name}:\n  "
            + "\n  ".join(lines)
            + "\nIf the code is right: scripts/record-aws-calls, then make each role in"
            " template.yaml grant exactly that (tests/infra/test_iam.py says what differs).",
        )


def _fail(session: pytest.Session, message: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
