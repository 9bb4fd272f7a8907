"""One poller invocation (esl_sync.sync.poll_batch): which records SQS retries, when the
invocation fails (PollsFailedInOwnParts), how refused messages are counted, and the batch's
log lines and metrics. The polls run for real (esl_sync.sync.poll) over the fakes of their
ports (tests/fakes.py); a poll fails where the state table's lease read raises the error
the test gives it (MemoryStates.take_errors), whose class decides whose fault it is. The
real stores and Clover are tests/integration/test_poll*.py and test_faults.py."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, cast

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.clover.errors import CloverOutOfTime, CloverServerError
from esl_sync.clover.tokens import TokenKeeper
from esl_sync.credentials import CloverTokens, SealedTokens
from esl_sync.messages import PollRequest
from esl_sync.observability import logger, metrics
from esl_sync.records import FenceRefused, Merchant, TransientConflict
from esl_sync.settings import Settings
from esl_sync.statement_deadline import seconds_left
from esl_sync.sync import poll_batch as batch_module
from esl_sync.sync.poll import PollDeps
from esl_sync.sync.poll_batch import PollsFailedInOwnParts, poll_batch, report
from esl_sync.sync.poll_outcome import PollOutcome
from tests.fakes import (
    MemoryDirectory,
    MemoryLabelQueue,
    MemoryLedger,
    MemoryLog,
    MemoryStates,
    MemoryTokens,
    StaticRefresher,
    UnreachableClover,
)


def _deps(
    states: MemoryStates, *merchants: Merchant, clover: UnreachableClover | None = None
) -> PollDeps:
    """The polls of these tests end before they read products or labels (and Clover but
    for a given ``clover``, whose first request fails)."""
    return PollDeps(
        merchants=MemoryDirectory(merchants),
        products=cast(Any, None),
        state=states,
        tokens=TokenKeeper(MemoryTokens(None), lambda: StaticRefresher(RuntimeError()), 300),
        label_queue=MemoryLabelQueue(),
        label_ledger=cast(Any, MemoryLedger()),
        clover=cast(Any, clover),
        settings=Settings(),
    )


def _record(message_id: str, merchant_id: str) -> dict[str, str]:
    return {"messageId": message_id, "body": PollRequest(merchant_id=merchant_id).to_json()}


def _failing(**errors: Exception) -> tuple[MemoryStates, list[Merchant]]:
    states = MemoryStates()
    states.take_errors = dict(errors)
    return states, [Merchant(m, "S1") for m in errors]


@pytest.fixture
def log() -> Iterator[MemoryLog]:
    with MemoryLog.attached() as attached:
        yield attached


def _metrics(capsys: pytest.CaptureFixture[str], run: Callable[[], object]) -> dict[str, float]:
    metrics.clear_metrics()
    try:
        run()
    finally:
        metrics.flush_metrics()
    lines = capsys.readouterr().out.splitlines()
    assert set(metric_units(lines).items()) <= {
        *((name, "Count") for name in metric_sums(lines)),
        ("SecondsSinceLastSuccess", "Seconds"),
    }
    return metric_sums(lines)


def _failed(response: dict[str, list[dict[str, str]]]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


# -- whether the invocation fails -------------------------------------------------------


def test_a_batch_failed_whole_with_a_service_fault_raises_naming_the_merchant_and_cut_detail(
    log: MemoryLog,
) -> None:
    long = "x" * 400
    states, merchants = _failing(
        A=ConnectionError("DynamoDB unreachable"),
        B=ConnectionError(long),
        C=CloverServerError("503", merchant_id="C", status=503),
    )
    records = [_record("m1", "A"), _record("m2", "B"), _record("m3", "C")]
    with pytest.raises(PollsFailedInOwnParts) as raised:
        poll_batch(records, _deps(states, *merchants), workers=1)
    error = raised.value
    assert error.merchant_ids == ["A", "B"]
    assert str(error) == (
        "every poll of the batch failed (3), 2 in the poller's own parts: "
        "A: ConnectionError: DynamoDB unreachable; B: ConnectionError: "
        + ("ConnectionError: " + long)[:300][len("ConnectionError: ") :]
    )
    assert error.__cause__ is states.take_errors["A"]
    # reported before it raised: every poll named, the merchant's one too
    assert [line["merchant_id"] for line in log.lines("poll finished")] == ["A", "B", "C"]


def test_a_batch_failed_whole_by_the_merchants_fault_or_conflicts_names_every_record() -> None:
    states, merchants = _failing(
        A=CloverServerError("503", merchant_id="A", status=503),
        B=TransientConflict("deadlock"),
        C=FenceRefused("a newer poll wrote first"),
    )
    records = [_record("m1", "A"), _record("m2", "B"), _record("m3", "C")]
    response = poll_batch(records, _deps(states, *merchants), workers=1)
    assert _failed(response) == ["m1", "m2", "m3"]


def test_one_poll_that_did_not_fail_beside_a_service_failure_names_only_the_failed() -> None:
    states, merchants = _failing(A=ConnectionError("DynamoDB unreachable"))
    records = [_record("m1", "A"), _record("m2", "GONE")]  # GONE: skipped, unknown
    response = poll_batch(records, _deps(states, *merchants), workers=1)
    assert _failed(response) == ["m1"]


def test_a_refused_message_beside_a_service_failure_does_not_fail_the_invocation() -> None:
    states, merchants = _failing(A=ConnectionError("DynamoDB unreachable"))
    records = [_record("m1", "A"), {"messageId": "m2", "body": "{}"}]
    response = poll_batch(records, _deps(states, *merchants), workers=1)
    assert _failed(response) == ["m1"]  # the refused one is acknowledged


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_batch_of_zero_retries_nothing_and_reports_nothing(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    sums = _metrics(capsys, lambda: poll_batch([], _deps(MemoryStates()), workers=4))
    assert sums == {}
    assert log.messages == []
    assert poll_batch([], _deps(MemoryStates()), workers=1) == {"batchItemFailures": []}


def test_polls_on_worker_threads_answer_as_on_one(log: MemoryLog) -> None:
    states, merchants = _failing(A=ConnectionError("down"), B=TransientConflict("deadlock"))
    records = [_record("m1", "A"), _record("m2", "GONE"), _record("m3", "B")]
    response = poll_batch(records, _deps(states, *merchants), workers=2)
    assert _failed(response) == ["m1", "m3"]
    assert {line["merchant_id"] for line in log.lines("poll finished")} == {"A", "GONE", "B"}


def _threads(log: MemoryLog) -> list[str]:
    """The thread of each refusal's line: where its record was read."""
    refused = "poll request refused: not a poll message"
    return [r.threadName or "" for r in log.records if r.getMessage() == refused]


def test_a_batch_runs_on_the_worker_threads_only_with_more_than_one_of_each(
    log: MemoryLog,
) -> None:
    main = threading.current_thread().name
    garbage = [{"messageId": "m1", "body": "{}"}, {"messageId": "m2", "body": "{}"}]
    poll_batch(garbage, _deps(MemoryStates()), workers=1)
    poll_batch(garbage[:1], _deps(MemoryStates()), workers=2)
    assert _threads(log) == [main, main, main]
    log.records.clear()
    poll_batch(garbage, _deps(MemoryStates()), workers=2)
    assert [name.startswith("esl-sync-poll_") for name in _threads(log)] == [True, True]
    used = batch_module._pool  # the process's pool, of the share it was given
    assert used is not None
    assert (used[0], used[1]._max_workers) == (2, 2)


def test_each_poll_on_a_worker_thread_runs_in_the_invokers_context() -> None:
    """What the context carries (here the logger's thread-safe keys, which its formatter
    reads where the line is written) follows the poll onto its worker thread."""
    garbage = [{"messageId": "m1", "body": "{}"}, {"messageId": "m2", "body": "{}"}]
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logger.registered_formatter)
    logging.getLogger(logger.name).addHandler(handler)
    logger.thread_safe_append_keys(invocation="inv-1")
    try:
        poll_batch(garbage, _deps(MemoryStates()), workers=2)
    finally:
        logger.thread_safe_clear_keys()
        logging.getLogger(logger.name).removeHandler(handler)
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [line.get("invocation") for line in lines] == ["inv-1", "inv-1"]


def test_the_worker_threads_are_kept_and_replaced_only_when_their_number_changes() -> None:
    two = batch_module._workers(2)
    assert batch_module._workers(2) is two
    three = batch_module._workers(3)
    assert three is not two
    assert three._max_workers == 3
    assert three._thread_name_prefix == batch_module.POLL_WORKER_PREFIX
    assert two._shutdown
    assert batch_module._workers(3) is three


def test_replacing_the_worker_threads_does_not_wait_for_the_old_ones_work() -> None:
    old = batch_module._workers(2)
    release = threading.Event()
    old.submit(release.wait, 30)  # a poll of the old pool, still running
    replaced = threading.Thread(target=batch_module._workers, args=(3,))
    replaced.start()
    replaced.join(5)
    try:
        assert not replaced.is_alive()
    finally:
        release.set()
        replaced.join()


# -- Lambda's deadline --------------------------------------------------------------------


class _Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _with_tokens() -> tuple[MemoryStates, UnreachableClover]:
    states = MemoryStates()
    states.sealed = SealedTokens(CloverTokens.plain("tok").secret_json().encode(), 1)
    return states, UnreachableClover(CloverOutOfTime("not sent", merchant_id="A"))


def test_clover_requests_get_the_invocations_time_left_less_the_polls_closing() -> None:
    states, clover = _with_tokens()
    deps = _deps(states, Merchant("A", "S1"), clover=clover)
    response = poll_batch([_record("m1", "A")], deps, workers=1, context=_Context(12_345))
    assert clover.time_left == [2_345]
    assert _failed(response) == ["m1"]  # the merchant's fault: retried, no raise


def test_each_polls_postgres_statements_get_the_invocations_time_left_less_reporting() -> None:
    """On the worker threads too (their copies of the invoker's context carry it): what the
    store's connections wait at most (esl_sync.store.pg_connection)."""
    seen: list[float | None] = []

    class Directory(MemoryDirectory):
        def get(self, merchant_id: str) -> Merchant | None:
            seen.append(seconds_left())
            return super().get(merchant_id)

    deps = replace(_deps(MemoryStates()), merchants=Directory())
    records = [_record("m1", "A"), _record("m2", "B")]
    poll_batch(records, deps, workers=2, context=_Context(12_345))
    # 5 s of the poll's 10 s closing margin (CLOSING_MS) kept to report a poll failed so:
    # its state saved and lease given back in DynamoDB, its lines (a literal: the margin is
    # the decision under test, not a name for it).
    assert seen == [(12_345 - 5_000) / 1000] * 2
    assert batch_module.REPORTING_MS < batch_module.CLOSING_MS
    poll_batch(records, deps, workers=2)
    assert seen[2:] == [None, None]
    assert seconds_left() is None  # the bound ends with the batch


def test_without_lambdas_context_clover_requests_have_no_limit() -> None:
    states, clover = _with_tokens()
    deps = _deps(states, Merchant("A", "S1"), clover=clover)
    poll_batch([_record("m1", "A")], deps, workers=1)
    assert clover.time_left == [None]


# -- refused messages ---------------------------------------------------------------------


def test_refused_messages_are_acknowledged_counted_and_named_without_their_body(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    records: list[Any] = [
        {"messageId": "m1", "body": '{"merchant_id": "A", "reason": "SECRET-nonsense"}'},
        {"messageId": "m2", "body": b"bytes"},
        "not a record",
        {"body": "not json"},
        _record("m5", "GONE"),
    ]
    response: dict[str, list[dict[str, str]]] = {}

    def run() -> None:
        response.update(poll_batch(records, _deps(MemoryStates()), workers=1))

    assert _metrics(capsys, run) == {"PollMessagesRefused": 4, "Polls": 1, "PollsSkipped": 1}
    assert _failed(response) == []
    lines = log.lines("poll request refused: not a poll message")
    assert [(line["level"], line["message_id"], line["merchant_id"]) for line in lines] == [
        ("ERROR", "m1", "A"),
        ("ERROR", "m2", None),
        ("ERROR", "", None),
        ("ERROR", "", None),
    ]
    assert [line["error"] for line in lines[1:3]] == [
        "poll request: body: the SQS record has no text body",
        "poll request: the SQS record is not an object",
    ]
    assert "poll request: reason" in str(lines[0]["error"])
    assert "SECRET" not in str(log.records)


# -- the report: log lines and levels ------------------------------------------------------


def _outcome(merchant_id: str, **values: Any) -> PollOutcome:
    return PollOutcome(merchant_id=merchant_id, reason="schedule", **values)


def _failed_outcome(merchant_id: str, error: Exception) -> PollOutcome:
    outcome = _outcome(merchant_id)
    outcome.failed(error)
    return outcome


def test_the_report_logs_each_poll_that_did_something_at_its_level_and_the_quiet_in_one_line(
    log: MemoryLog,
) -> None:
    service = ConnectionError("DynamoDB unreachable")
    report(
        [
            _outcome("Q1"),
            _failed_outcome("S", service),
            _outcome("Q2", items_fetched=3, clover_requests=2),  # read, nothing changed
            _failed_outcome("C", TransientConflict("deadlock")),
            _failed_outcome("M", CloverServerError("503", merchant_id="M", status=503)),
            _outcome("K", status="skipped", detail="merchant disabled"),
            _outcome("P", products_changed=1),
        ]
    )
    finished = log.lines("poll finished")
    assert [(line["merchant_id"], line["level"]) for line in finished] == [
        ("S", "ERROR"),
        ("C", "WARNING"),
        ("M", "INFO"),
        ("K", "INFO"),
        ("P", "INFO"),
    ]
    [s, c, m, _, _] = [r for r in log.records if r.getMessage() == "poll finished"]
    assert s.exc_info is not None
    assert s.exc_info[1] is service
    assert (c.exc_info, m.exc_info) == (None, None)
    assert finished[0]["detail"] == "ConnectionError: DynamoDB unreachable"
    assert finished[0]["fault"] == "service"
    assert "error" not in finished[0]
    assert log.lines("polls without changes") == [
        {"polls": 2, "merchant_ids": ["Q1", "Q2"], "level": "INFO"}
    ]


def test_a_batch_without_quiet_polls_has_no_quiet_line(log: MemoryLog) -> None:
    report([_outcome("P", products_changed=1)])
    assert log.messages == ["poll finished"]


def test_a_batch_of_quiet_polls_only_has_the_one_line(log: MemoryLog) -> None:
    report([_outcome("Q1"), _outcome("Q2")])
    assert log.messages == ["polls without changes"]


# -- the report: metrics ---------------------------------------------------------------


def test_the_metrics_are_summed_over_the_batch_zero_counts_left_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcomes = [
        _outcome(
            "A",
            items_fetched=5,
            products_changed=2,
            invalid_items=1,
            label_upserts=3,
            label_deletes=1,
            clover_requests=2,
            full_walk_fallback=True,
            deletes_confirmed=1,
            seconds_since_last_success=40,
        ),
        _outcome("B", items_fetched=7, clover_requests=3, seconds_since_last_success=900),
        _outcome("C", status="skipped", seconds_since_last_success=None),
        _failed_outcome("D", TransientConflict("deadlock")),
        _outcome("E", items_fetched=1, clover_requests=1, seconds_since_last_success=60),
    ]
    assert _metrics(capsys, lambda: report(outcomes)) == {
        "Polls": 5,
        "ItemsFetched": 13,
        "ProductsChanged": 2,
        "InvalidItems": 1,
        "LabelUpsertsQueued": 3,
        "LabelDeletesQueued": 1,
        "CloverRequests": 6,
        "FullWalkFallbacks": 1,
        "DeletesConfirmed": 1,
        "PollsSkipped": 1,
        "TransientConflicts": 1,
        "SecondsSinceLastSuccess": 900,  # the stalest merchant's, not a sum
    }


def test_quiet_polls_count_only_themselves_and_the_age_of_a_fresh_merchant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcomes = [_outcome("A", seconds_since_last_success=0), _outcome("B")]
    assert _metrics(capsys, lambda: report(outcomes)) == {
        "Polls": 2,
        "SecondsSinceLastSuccess": 0,
    }


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_polls_without_a_known_age_emit_no_age(capsys: pytest.CaptureFixture[str]) -> None:
    assert _metrics(capsys, lambda: report([_outcome("A")])) == {"Polls": 1}
    assert _metrics(capsys, lambda: report([])) == {}
