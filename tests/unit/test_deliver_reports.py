"""What the delivery tells the operator: its log lines and its metrics (README, "Metrics")."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.deadline import OutOfTime
from esl_sync.hipoink.errors import HipoinkRetryable
from esl_sync.hipoink.records import HipoinkRecord
from esl_sync.messages import LabelJob
from esl_sync.observability import metrics
from esl_sync.records import LabelAck
from esl_sync.settings import Settings
from esl_sync.sync import deliver as deliver_module
from tests.fakes import MemoryLedger, MemoryLog, MemorySink

COOLDOWN = 600
FAILED = "label job failed; back to its queue"  # README, "Operations": what operators query
NOW_MS = 1_767_225_600_000


def _deliver(
    job: LabelJob, ledger: MemoryLedger, sink: MemorySink, batch_size: int = 10
) -> deliver_module.DeliveryOutcome:
    settings = Settings.from_values(
        {"hipoink_batch_size": batch_size, "hipoink_block_cooldown_seconds": COOLDOWN}
    )
    return deliver_module.deliver(job, deliver_module.DeliveryDeps(ledger, sink, settings))


def _record(pc: str, price: str = "1.00") -> HipoinkRecord:
    return {"pc": pc, "pn": f"Item {pc}", "pp": price, "pi": pc}


def _job(
    upserts: list[HipoinkRecord],
    deletes: list[str] | None = None,
    version: int = 5,
    oldest_change_ms: int | None = None,
) -> LabelJob:
    return LabelJob(
        merchant_id="M",
        store_code="S",
        upserts=upserts,
        deletes=deletes or [],
        version=version,
        oldest_change_ms=oldest_change_ms,
    )


@pytest.fixture
def emf(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The metrics the code under test wrote, as EMF lines."""
    metrics.clear_metrics()  # other tests' metrics wait in the same process-wide buffer

    def lines() -> list[str]:
        metrics.flush_metrics()
        return capsys.readouterr().out.splitlines()

    yield lines
    metrics.clear_metrics()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery's clock (the latency) stands at NOW_MS."""
    monkeypatch.setattr(deliver_module.time, "time_ns", lambda: NOW_MS * 1_000_000)


def _older_and_refused(ledger: MemoryLedger, sink: MemorySink) -> LabelJob:
    """A job (v5) with two labels a newer job (v7) already changed, one record Hipoink
    refuses, two upserts and a delete that go through; its oldest change 90 s ago."""
    _deliver(_job([_record("O2", "2.00"), _record("O1", "2.00")], version=7), ledger, sink)
    sink.bad = {"BAD"}
    upserts = [_record(pc) for pc in ("O2", "O1", "A", "BAD", "B")]
    return _job(upserts, ["D"], oldest_change_ms=NOW_MS - 90_000)


def test_a_delivery_logs_every_fact_of_the_job(frozen: None) -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    job = _older_and_refused(ledger, sink)
    _deliver(_job([_record("A")]), ledger, sink)
    with MemoryLog.attached() as log:
        _deliver(job, ledger, sink)
    assert log.lines("label job delivered") == [
        {
            "merchant_id": "M",
            "store_code": "S",
            "upserted": 1,
            "deleted": 1,
            "skipped": 1,
            "version": 5,
            "skipped_older": 2,
            "skipped_older_codes": ["O2", "O1"],
            "rejected": 1,
            "rejected_codes": ["BAD"],
            "refused_before": 0,
            "blocked": None,
            "latency_seconds": 90.0,
            "level": "INFO",
        }
    ]


def test_a_delivery_counts_what_it_did(frozen: None, emf: Callable[[], list[str]]) -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    job = _older_and_refused(ledger, sink)
    emf()  # the newer job's metrics
    _deliver(job, ledger, sink)
    lines = emf()
    assert metric_sums(lines) == {
        "LabelsUpserted": 2.0,
        "LabelsDeleted": 1.0,
        "LabelsRejected": 1.0,
        "LabelsSkippedOlder": 2.0,
        "LabelDeliveryLatency": 90.0,
    }
    assert metric_units(lines) == {
        "LabelsUpserted": "Count",
        "LabelsDeleted": "Count",
        "LabelsRejected": "Count",
        "LabelsSkippedOlder": "Count",
        "LabelDeliveryLatency": "Seconds",
    }


def test_a_log_line_names_twenty_codes_and_counts_them_all() -> None:
    """A job of 1,000 codes named in full was longer than one CloudWatch Logs event."""
    ledger, sink = MemoryLedger(), MemorySink(bad={f"R{i:02d}" for i in range(25)})
    _deliver(_job([_record(f"O{i:02d}", "2.00") for i in range(25)], version=7), ledger, sink)
    older = [_record(f"O{i:02d}") for i in reversed(range(25))]
    refused = [_record(f"R{i:02d}") for i in reversed(range(25))]
    with MemoryLog.attached() as log:
        _deliver(_job(older + refused), ledger, sink, 100)
    (line,) = log.lines("label job delivered")
    assert (line["skipped_older"], line["rejected"]) == (25, 25)
    assert line["skipped_older_codes"] == [f"O{i:02d}" for i in reversed(range(5, 25))]
    assert line["rejected_codes"] == [f"R{i:02d}" for i in range(20)]


def test_a_store_refusing_the_configuration_is_logged_counted_and_its_labels_blocked(
    emf: Callable[[], list[str]],
) -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    with MemoryLog.attached() as log:
        _deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
        _deliver(_job([_record("C")], ["D"]), ledger, sink)
    lines = emf()
    assert metric_sums(lines) == {
        "HipoinkConfigErrors": 1.0,
        "LabelsBlocked": 2.0,
        "LabelsUpserted": 0.0,
        "LabelsDeleted": 0.0,
        "LabelsRejected": 0.0,
        "LabelsSkippedOlder": 0.0,
    }
    assert {metric_units(lines)[name] for name in ("HipoinkConfigErrors", "LabelsBlocked")} == {
        "Count"
    }
    assert log.lines("Hipoink refused the store's configuration; store blocked") == [
        {
            "merchant_id": "M",
            "store_code": "S",
            "error": "create_multiple: sign error",
            "retry_after_seconds": COOLDOWN,
            "level": "ERROR",
        }
    ]
    not_delivered = log.lines("label job not (fully) delivered")
    assert [(line["upserted"], line["blocked"]) for line in not_delivered] == [
        (0, "create_multiple: sign error"),
        (0, "create_multiple: sign error"),
    ]
    assert log.lines("label job delivered") == []


def test_a_store_re_test_that_passes_is_logged() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    _deliver(_job([_record("A")]), ledger, sink)
    sink.wrong_sign = False
    ledger.now += timedelta(seconds=COOLDOWN)
    with MemoryLog.attached() as log:
        _deliver(_job([_record("A")]), ledger, sink)
    assert log.lines("store re-test passed; store unblocked") == [
        {"merchant_id": "M", "level": "INFO"}
    ]


def test_a_store_re_test_cut_short_is_a_warning_and_leaves_the_store_blocked() -> None:
    """A 503 says nothing of the configuration: the operator reads why the store is still
    blocked, and that the SQS retry re-tests it."""
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    _deliver(_job([_record("A")]), ledger, sink)
    sink.wrong_sign, sink.down = False, True
    ledger.now += timedelta(seconds=COOLDOWN)
    with MemoryLog.attached() as log, pytest.raises(HipoinkRetryable):
        _deliver(_job([_record("A")]), ledger, sink)
    assert log.lines("store re-test cut short; the next job re-tests") == [
        {
            "merchant_id": "M",
            "store_code": "S",
            "error": "create_multiple: HTTP 503",
            "level": "WARNING",
        }
    ]
    assert log.lines("store re-test passed; store unblocked") == []


def test_a_record_that_is_not_a_hipoink_record_is_logged_with_its_code_when_it_has_one() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    job = _job([_record("A"), {**_record("P1"), "pp": 1}, {**_record(" P2"), "pp": "2.00"}], [""])
    with MemoryLog.attached() as log:
        _deliver(job, ledger, sink)
    assert log.lines("label job record refused: not a Hipoink record; the others go on") == [
        {"merchant_id": "M", "pc": pc, "problem": problem, "level": "ERROR"}
        for pc, problem in [
            ("P1", "a value that is not text"),
            (None, "a product code (pc) with spaces or line breaks at an end"),
            (None, "no product code (pc) of 1 to 64 characters"),
        ]
    ]


def test_a_code_a_job_names_twice_is_logged_once_with_the_others() -> None:
    """A code upserted and deleted in one job is no repeat: the delete wins (LabelJob)."""
    ledger, sink = MemoryLedger(), MemorySink()
    twice = [_record(pc) for pc in ("B", "A", "B", "D")]
    job = _job([*twice, _record("A"), {"pc": 5}, {"pc": 5}], ["D", "C", "C", "", ""])
    with MemoryLog.attached() as log:
        _deliver(job, ledger, sink)
    assert log.lines("label job names a product code more than once: its last record applies") == [
        {"merchant_id": "M", "count": 3, "codes": ["A", "B", "C"], "level": "WARNING"}
    ]
    with MemoryLog.attached() as log:
        _deliver(_job([_record("E")], ["E"]), ledger, sink)
    assert log.messages == ["label job delivered"]


def test_a_warning_names_twenty_repeated_codes_and_counts_them_all() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    codes = [f"C{i:02d}" for i in reversed(range(25))]
    with MemoryLog.attached() as log:
        _deliver(_job([], codes + codes), ledger, sink, 100)
    (line,) = log.lines("label job names a product code more than once: its last record applies")
    assert (line["count"], line["codes"]) == (25, [f"C{i:02d}" for i in range(20)])


def test_a_job_refused_for_time_midway_is_a_warning_with_what_it_did(
    emf: Callable[[], list[str]],
) -> None:
    """Out of time before its second call: it logged ``label job delivered`` at INFO."""
    ledger, sink = MemoryLedger(), MemorySink()
    settings = Settings.from_values({"hipoink_batch_size": 1})
    calls: list[int] = []

    def before_call() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OutOfTime("label job of M not started: 10 ms left, 20000 ms needed")

    job = _job([_record("A"), _record("B")], ["C"])
    with MemoryLog.attached() as log, pytest.raises(OutOfTime):
        deliver_module.deliver(
            job, deliver_module.DeliveryDeps(ledger, sink, settings), before_call
        )
    assert log.lines("label job delivered") == []
    (line,) = log.lines(FAILED)
    assert (line["level"], line["error_class"], line["upserted"], line["deleted"]) == (
        "WARNING",
        "OutOfTime",
        1,
        0,
    )
    assert line["error"] == "label job of M not started: 10 ms left, 20000 ms needed"
    assert [r.exc_info for r in log.records if r.getMessage() == FAILED] == [None]
    assert metric_sums(emf())["LabelsUpserted"] == 1.0


def test_a_job_failing_otherwise_is_an_error_with_its_traceback(
    emf: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a failure SQS retries by design (the ledger's Postgres, a bug): an error, which
    nothing else logs. It logged ``label job delivered`` at INFO."""
    ledger, sink = MemoryLedger(), MemorySink()

    def down(merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        raise RuntimeError("the ledger is down")

    monkeypatch.setattr(ledger, "acknowledge", down)
    with MemoryLog.attached() as log, pytest.raises(RuntimeError):
        _deliver(_job([_record("A")]), ledger, sink)
    assert log.lines("label job delivered") == []
    (line,) = log.lines(FAILED)
    assert (line["level"], line["error_class"], line["error"], line["upserted"]) == (
        "ERROR",
        "RuntimeError",
        "the ledger is down",
        0,
    )
    (record,) = [r for r in log.records if r.getMessage() == FAILED]
    assert record.exc_info is not None
    traceback = logging.Formatter().formatException(record.exc_info)
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.endswith("RuntimeError: the ledger is down")
    assert metric_sums(emf())["LabelsUpserted"] == 0.0


def test_a_failed_jobs_error_is_logged_to_its_first_500_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One line a job, however long the error (docs/architecture.md: at most 500)."""
    ledger, sink = MemoryLedger(), MemorySink()
    message = "the ledger is down: " + "a statement quoting every code " * 40

    def down(merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        raise RuntimeError(message)

    monkeypatch.setattr(ledger, "acknowledge", down)
    with MemoryLog.attached() as log, pytest.raises(RuntimeError):
        _deliver(_job([_record("A")]), ledger, sink)
    (line,) = log.lines(FAILED)
    assert line["error"] == message[:500]
    assert len(message) > 500
