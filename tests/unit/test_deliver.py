"""Label delivery: ledger skips, versions, bad-record isolation, ordering, store blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from esl_sync.deadline import OutOfTime
from esl_sync.hipoink.errors import (
    HipoinkRetryable,
)
from esl_sync.hipoink.records import HipoinkRecord, label_hash
from esl_sync.messages import LabelJob
from esl_sync.records import AckedLabel, LabelAck
from esl_sync.settings import Settings
from esl_sync.storable import PC_MAX_LENGTH
from esl_sync.sync import deliver as deliver_module
from tests.fakes import MemoryLedger, MemorySink

COOLDOWN = 600


def deliver(
    job: LabelJob,
    ledger: MemoryLedger,
    sink: MemorySink,
    batch_size: int,
    before_call: Callable[[], None] | None = None,
) -> deliver_module.DeliveryOutcome:
    settings = Settings.from_values(
        {"hipoink_batch_size": batch_size, "hipoink_block_cooldown_seconds": COOLDOWN}
    )
    deps = deliver_module.DeliveryDeps(ledger, sink, settings)
    return deliver_module.deliver(job, deps, before_call)


def _record(pc: str, price: str = "1.00") -> HipoinkRecord:
    return {"pc": pc, "pn": f"Item {pc}", "pp": price, "pi": pc}


def _job(
    upserts: list[HipoinkRecord], deletes: list[str] | None = None, version: int | None = 1
) -> LabelJob:
    """A job of this code (a version); ``version=None``: one from before versions."""
    return LabelJob(
        merchant_id="M", store_code="S", upserts=upserts, deletes=deletes or [], version=version
    )


def test_batches_of_the_configured_size() -> None:
    sink = MemorySink()
    outcome = deliver(_job([_record(f"{i:03d}") for i in range(25)]), MemoryLedger(), sink, 10)
    assert [len(pcs) for _, pcs in sink.calls] == [10, 10, 5]
    assert outcome.upserted == 25


def test_bad_records_are_isolated_recorded_and_not_raised() -> None:
    ledger, sink = MemoryLedger(), MemorySink(bad={"007", "042", "099"})
    outcome = deliver(_job([_record(f"{i:03d}") for i in range(100)]), ledger, sink, 100)
    assert sorted(outcome.rejected) == ["007", "042", "099"]
    assert outcome.upserted == 97
    assert set(ledger.failures) == {"007", "042", "099"}
    assert "field pp is malformed" in ledger.failures["042"].message
    assert ledger.failures["042"].failure_class == "bad_record"
    assert len(ledger.acks) == 97


def test_acknowledged_versions_are_not_sent_again() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    job = _job([_record("A"), _record("B")], ["C"])
    deliver(job, ledger, sink, 10)
    sink.calls.clear()
    outcome = deliver(job, ledger, sink, 10)
    assert sink.calls == []
    assert outcome.skipped == 3
    changed = _job([_record("A", "2.00"), _record("B")])
    deliver(changed, ledger, sink, 10)
    assert sink.calls == [("upsert", ["A"])]
    assert ledger.acks["A"] == label_hash(_record("A", "2.00"))


def test_a_retryable_failure_propagates_after_keeping_progress() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")]), ledger, sink, 1)
    sink.down = True
    with pytest.raises(HipoinkRetryable):
        deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert sink.calls[-1] == ("upsert", ["B"])  # A was acknowledged before, so only B was tried


def test_upserts_go_before_deletes_so_a_later_delete_wins() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("X")], ["Y"]), ledger, sink, 10)
    assert [kind for kind, _ in sink.calls] == ["upsert", "delete"]
    assert ledger.acks == {"X": label_hash(_record("X")), "Y": None}


def test_a_retryable_failure_names_what_is_left_on_each_label() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.down = True
    with pytest.raises(HipoinkRetryable):
        deliver(_job([_record("A"), _record("B")], ["C"]), ledger, sink, 10)
    assert {pc: f.failure_class for pc, f in ledger.failures.items()} == {
        "A": "retryable",
        "B": "retryable",
        "C": "retryable",
    }
    assert "HTTP 503" in ledger.failures["C"].message


def test_a_configuration_error_blocks_the_store_and_acknowledges_the_message() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    outcome = deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)  # does not raise
    assert outcome.blocked == "create_multiple: sign error"
    assert len(sink.calls) == 1  # the first batch; the second is not tried
    assert ledger.blocks["M"].reason == "create_multiple: sign error"
    assert {f.failure_class for f in ledger.failures.values()} == {"configuration"}
    assert set(ledger.failures) == {"A", "B"}

    assert ledger.failures["B"].message == "create_multiple: sign error"

    # While blocked, jobs make no call and their labels say why, and since when.
    sink.calls.clear()
    ledger.now += timedelta(seconds=60)
    outcome = deliver(_job([_record("C")], ["D"]), ledger, sink, 10)
    assert sink.calls == []
    assert outcome.blocked == "create_multiple: sign error"
    assert {
        pc: (f.failure_class, f.message) for pc, f in ledger.failures.items() if pc in "CD"
    } == {
        pc: (
            "configuration",
            "store blocked since 2025-01-01 00:00:00 UTC: create_multiple: sign error",
        )
        for pc in "CD"
    }


def test_after_the_cool_down_one_job_re_tests_the_store() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    deliver(_job([_record("A")]), ledger, sink, 10)
    ledger.now += timedelta(seconds=COOLDOWN)

    # Still broken: one call, blocked again, and the next job waits a full cool-down.
    sink.calls.clear()
    deliver(_job([_record("A")]), ledger, sink, 10)
    deliver(_job([_record("B")]), ledger, sink, 10)
    assert len(sink.calls) == 1

    # Fixed: the re-test goes through, lifts the block, and the rest follows.
    sink.wrong_sign = False
    ledger.now += timedelta(seconds=COOLDOWN)
    outcome = deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert outcome.upserted == 2
    assert ledger.blocks == {}
    assert deliver(_job([_record("C")]), ledger, sink, 10).upserted == 1


def test_a_re_test_cut_short_before_any_call_was_taken_is_due_again_at_once() -> None:
    """A 503 (or too little time) says nothing of the configuration: the job's retry
    found the store blocked for another cool-down and parked its labels as ``configuration``."""
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    deliver(_job([_record("A")]), ledger, sink, 10)
    sink.wrong_sign, sink.down = False, True
    ledger.now += timedelta(seconds=COOLDOWN)
    with pytest.raises(HipoinkRetryable):
        deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert ledger.blocks["M"].retry_after == ledger.now
    assert ledger.blocks["M"].reason == "create_multiple: sign error"
    assert {f.failure_class for f in ledger.failures.values()} == {"retryable"}
    refused: list[int] = []

    def out_of_time() -> None:
        refused.append(1)
        raise OutOfTime("label job of M not started: 10 ms left, 20000 ms needed")

    with pytest.raises(OutOfTime):
        deliver(_job([_record("A"), _record("B")]), ledger, sink, 1, out_of_time)
    assert (refused, ledger.blocks["M"].retry_after) == ([1], ledger.now)

    sink.down = False  # the SQS retry re-tests, and the store is fine
    outcome = deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert (outcome.upserted, outcome.blocked, ledger.blocks) == (2, None, {})


def test_a_re_test_cut_short_after_hipoink_took_a_call_has_passed() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    deliver(_job([_record("A")]), ledger, sink, 10)
    sink.wrong_sign, sink.outage_after = False, 1 + 1  # the block's call, then one more
    ledger.now += timedelta(seconds=COOLDOWN)
    with pytest.raises(HipoinkRetryable):
        deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert ledger.blocks == {}
    assert ledger.acks.keys() == {"A"}


def test_a_re_test_the_ledger_cuts_short_is_due_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hipoink took the re-test's call, the ledger refused its acknowledgement (the
    sender's own parts): the claim is given back, its labels are not marked (not a failure
    SQS retries by design), and the retry re-tests."""
    ledger, sink = MemoryLedger(), MemorySink()
    sink.wrong_sign = True
    deliver(_job([_record("A")]), ledger, sink, 10)
    sink.wrong_sign = False
    ledger.now += timedelta(seconds=COOLDOWN)
    acknowledge = ledger.acknowledge

    def down(merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        raise RuntimeError("the ledger is down")

    monkeypatch.setattr(ledger, "acknowledge", down)
    with pytest.raises(RuntimeError, match="the ledger is down"):
        deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert ledger.blocks["M"].retry_after == ledger.now
    assert "B" not in ledger.failures  # not marked retryable: SQS does not retry it by design

    monkeypatch.setattr(ledger, "acknowledge", acknowledge)
    outcome = deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert (outcome.upserted, outcome.blocked, ledger.blocks) == (2, None, {})


def test_an_unknown_code_is_deleted_even_from_a_batch_refused_for_it() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.unknown = {"Y"}
    outcome = deliver(_job([], ["X", "Y", "Z"]), ledger, sink, 10)
    assert outcome.deleted == 3
    assert outcome.rejected == []
    assert ledger.acks == {"X": None, "Y": None, "Z": None}


def test_a_job_with_nothing_left_to_send_reads_no_block() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")]), ledger, sink, 10)
    ledger.block_store("M", "S", "sign error", COOLDOWN)
    outcome = deliver(_job([_record("A")]), ledger, sink, 10)
    assert outcome.skipped == 1
    assert outcome.blocked is None


# -- versions: nothing older replaces something newer --------------------------------------


def test_an_older_version_never_replaces_a_newer_one() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A", "1.00")], version=5), ledger, sink, 10)
    deliver(_job([_record("A", "2.00")], version=7), ledger, sink, 10)
    sink.calls.clear()

    redriven = deliver(_job([_record("A", "1.00"), _record("B")], version=5), ledger, sink, 10)

    assert redriven.skipped_older == ["A"]
    assert sink.calls == [("upsert", ["B"])]  # the rest of the job still goes
    assert (ledger.acks["A"], ledger.versions["A"]) == (label_hash(_record("A", "2.00")), 7)
    assert ledger.failures == {}  # skipping is not a failure


def test_an_older_upsert_never_brings_a_deleted_label_back() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")], version=6), ledger, sink, 10)
    deliver(_job([], ["A"], version=8), ledger, sink, 10)
    assert deliver(_job([_record("A")], version=6), ledger, sink, 10).skipped_older == ["A"]
    assert ledger.acks["A"] is None
    # ... and a delete older than a newer upsert leaves the label up.
    deliver(_job([_record("A", "3.00")], version=10), ledger, sink, 10)
    assert deliver(_job([], ["A"], version=8), ledger, sink, 10).skipped_older == ["A"]
    assert ledger.acks["A"] == label_hash(_record("A", "3.00"))


def test_the_same_record_from_a_newer_decision_takes_its_version() -> None:
    """1.00 (v5) shown; 2.00 (v7) dead-lettered; back to 1.00 (v9) makes no call but moves
    the version, so the redriven 2.00 is older than what the shelf shows."""
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A", "1.00")], version=5), ledger, sink, 10)
    sink.calls.clear()
    again = deliver(_job([_record("A", "1.00")], version=9), ledger, sink, 10)
    assert (again.skipped, sink.calls, ledger.versions["A"], ledger.renewed) == (1, [], 9, ["A"])
    redriven = deliver(_job([_record("A", "2.00")], version=7), ledger, sink, 10)
    assert redriven.skipped_older == ["A"]
    assert ledger.acks["A"] == label_hash(_record("A", "1.00"))


def test_jobs_from_before_versions_deliver_only_what_is_wanted_now_never_over_a_version() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    ledger.wanted = {"A": label_hash(_record("A", "1.00")), "B": label_hash(_record("B", "1.00"))}
    legacy = deliver(
        _job([_record("A", "1.00"), _record("B", "1.00")], version=None), ledger, sink, 10
    )
    assert legacy.upserted == 2
    assert ledger.versions == {"A": None, "B": None}
    ledger.wanted["A"] = label_hash(_record("A", "2.00"))
    assert deliver(_job([_record("A", "2.00")], version=None), ledger, sink, 10).upserted == 1
    deliver(_job([_record("B", "3.00")], version=0), ledger, sink, 10)
    older = deliver(_job([_record("B", "2.00")], version=None), ledger, sink, 10)
    assert older.skipped_older == ["B"]
    assert ledger.acks["B"] == label_hash(_record("B", "3.00"))
    assert ledger.calls.count("labels_wanted") == 2  # not asked where a version decides


def test_a_job_from_before_versions_never_puts_back_what_the_products_no_longer_want() -> None:
    """Redriven after the upgrade over labels acknowledged before versions (or never): an
    older price, a delete of a label wanted since, or a label no product wants any more
    are skipped as older; what the product store wants now still goes."""
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A", "2.75"), _record("B"), _record("C")]), ledger, sink, 10)
    ledger.versions = dict.fromkeys(ledger.versions)  # as acknowledged before versions
    ledger.wanted = {pc: ledger.acks[pc] for pc in "AB"} | {"D": label_hash(_record("D"))}
    sink.calls.clear()

    redriven = deliver(
        _job([_record("A", "2.50"), _record("C", "9.99"), _record("D")], ["B"], version=None),
        ledger,
        sink,
        10,
    )

    assert (redriven.skipped_older, redriven.upserted) == (["A", "C", "B"], 1)
    assert sink.calls == [("upsert", ["D"])]
    assert ledger.acks["A"] == label_hash(_record("A", "2.75"))
    assert ledger.failures == {}  # skipping is not a failure
    # A delete no product contradicts still goes.
    assert deliver(_job([], ["C"], version=None), ledger, sink, 10).deleted == 1


def test_the_same_version_with_another_record_is_sent() -> None:
    """One decision read twice with other label settings (extra fields): not older."""
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")], version=3), ledger, sink, 10)
    with_field = {**_record("A"), "f1": "FIXED"}
    assert deliver(_job([with_field], version=3), ledger, sink, 10).upserted == 1


@pytest.mark.parametrize(
    ("version", "acknowledged", "older"),
    [
        (None, None, False),
        (None, 0, True),
        (0, None, False),
        (4, 5, True),
        (5, 5, False),
        (6, 5, False),
    ],
)
def test_is_older(version: int | None, acknowledged: int | None, older: bool) -> None:
    assert deliver_module.is_older(version, acknowledged) is older


def test_a_skipped_job_names_the_failure_on_the_labels_it_would_have_changed() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")], version=1), ledger, sink, 10)
    skipped = _job([_record("A"), _record("B")], ["C"], version=2)
    assert deliver_module.name_skipped(skipped, ledger) == 2
    assert {pc: f.failure_class for pc, f in ledger.failures.items()} == {
        "B": "retryable",
        "C": "retryable",
    }
    assert ledger.failures["B"].message == "not tried: an earlier job of this store failed"
    assert sink.calls == [("upsert", ["A"])]  # nothing sent for the skipped job


def test_label_jobs_from_before_versions_still_parse_and_versions_stay_in_range() -> None:
    old = '{"merchant_id": "M", "store_code": "S", "upserts": [], "deletes": ["A"]}'
    assert LabelJob.parse(old).version is None
    assert LabelJob.parse(old[:-1] + ', "version": 9223372036854775807}').version
    for bad in ("-1", "9223372036854775808", '"7"', "1.5", "true"):
        with pytest.raises(ValueError, match="version"):
            LabelJob.parse(old[:-1] + f', "version": {bad}}}')


@pytest.mark.parametrize(
    ("oldest_change_ms", "expected"),
    [(10**400, 0.0), (-(10**400), 10 * 365 * 86_400.0), (-1, 10 * 365 * 86_400.0)],
    ids=["far-future", "far-past", "before-1970"],
)
def test_any_change_time_in_a_job_gives_a_latency_and_never_fails_the_delivery(
    oldest_change_ms: int, expected: float
) -> None:
    """A job with a nonsense change time (written by hand, or corrupted) is still delivered
    and acknowledged: the latency is never negative and never raises (10**400 / 1000 did)."""
    ledger, sink = MemoryLedger(), MemorySink()
    job = LabelJob(
        merchant_id="M",
        store_code="S",
        upserts=[_record("A")],
        deletes=[],
        oldest_change_ms=oldest_change_ms,
        version=1,
    )
    outcome = deliver(job, ledger, sink, 10)
    assert outcome.upserted == 1
    assert "A" in ledger.acks
    assert outcome.latency_seconds == expected


def test_the_latency_is_the_time_since_the_change() -> None:
    import time

    ledger, sink = MemoryLedger(), MemorySink()
    now_ms = time.time_ns() // 1_000_000
    job = LabelJob(
        merchant_id="M",
        store_code="S",
        upserts=[_record("A")],
        oldest_change_ms=now_ms - 90_000,
        version=1,
    )
    outcome = deliver(job, ledger, sink, 10)
    assert outcome.latency_seconds is not None
    assert 90.0 <= outcome.latency_seconds < 3600.0


@pytest.mark.parametrize(
    ("bad", "rejected", "named"),
    [
        ({"pc": "A1", "pn": "x", "pp": 10**400, "pi": "I"}, "A1", "a value that is not text"),
        ({"pc": "A1", "pn": None, "pp": "1.00", "pi": "I"}, "A1", "a value that is not text"),
        ({"pn": "x", "pp": "1.00"}, "(no usable pc)", None),
        ({"pc": 5, "pn": "x", "pp": "1.00"}, "(no usable pc)", None),
        ({"pc": "P" * 10_000, "pn": "x", "pp": "1.00"}, "(no usable pc)", None),
        ({"pc": "", "pn": "x", "pp": "1.00"}, "(no usable pc)", None),
    ],
    ids=["price-10**400", "null-name", "no-pc", "number-pc", "10k-pc", "empty-pc"],
)
def test_a_hand_written_record_that_is_not_a_hipoink_record_is_refused_and_the_rest_go_on(
    bad: dict[str, Any], rejected: str, named: str | None
) -> None:
    """A job edited by hand and redriven: valid JSON, but a record the poll never writes.
    It raised (TypeError, KeyError) after nothing was sent, so SQS retried the whole job
    into the dead-letter queue with its good labels, and its store's later jobs waited."""
    ledger, sink = MemoryLedger(), MemorySink()
    upserts = [_record("OK1"), bad]
    text = LabelJob(merchant_id="M", store_code="S", upserts=upserts, version=1).to_json()
    job = LabelJob.parse(text)
    outcome = deliver(job, ledger, sink, 10)
    assert outcome.upserted == 1
    assert [pcs for _, pcs in sink.calls] == [["OK1"]]
    assert outcome.rejected == [rejected]
    if named is None:
        assert ledger.failures == {}
    else:
        assert ledger.failures[rejected].failure_class == "bad_record"
        assert ledger.failures[rejected].message == f"label job record: {named}"
    assert deliver_module.name_skipped(job, MemoryLedger()) == 1


# -- what each call names, and what is left after a failure ---------------------------------


def test_every_call_and_acknowledgement_names_the_jobs_store() -> None:
    """Hipoink refuses a store it does not know (configuration), and the ledger records
    acknowledgements only for the merchant's current store: each names the job's."""
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")], version=1), ledger, sink, 10)
    ledger.store_code = sink.store_code = "S"
    outcome = deliver(_job([_record("A"), _record("B")], ["C"], version=2), ledger, sink, 10)
    assert (outcome.upserted, outcome.deleted, outcome.skipped, outcome.blocked) == (1, 1, 1, None)
    assert (ledger.acks, ledger.versions) == (
        {"A": label_hash(_record("A")), "B": label_hash(_record("B")), "C": None},
        {"A": 2, "B": 2, "C": 2},
    )


def test_after_a_failure_only_what_is_left_is_named_retryable() -> None:
    """A rejected record, acknowledged labels on both sides of it, then Hipoink goes down:
    the rejected one keeps its own failure, the acknowledged ones none."""
    ledger, sink = MemoryLedger(), MemorySink(bad={"B"})
    sink.outage_after = 3  # A, B (refused), C answered; X's delete meets a 503
    job = _job([_record("A"), _record("B"), _record("C")], ["X"])
    with pytest.raises(HipoinkRetryable):
        deliver(job, ledger, sink, 1)
    assert {pc: f.failure_class for pc, f in ledger.failures.items()} == {
        "B": "bad_record",
        "X": "retryable",
    }
    assert set(ledger.acks) == {"A", "C"}


def test_the_retry_of_a_job_never_sends_counts_or_un_names_the_record_hipoink_refused() -> None:
    """B refused, then X's delete meets a 503: SQS redelivers the job whole. Its retries
    sent B again (refused again, counted again) and, down again, named it ``retryable``."""
    ledger, sink = MemoryLedger(), MemorySink(bad={"B"})
    sink.outage_after = 3
    job = _job([_record("A"), _record("B"), _record("C")], ["X"])
    with pytest.raises(HipoinkRetryable):
        deliver(job, ledger, sink, 1)
    refusal = ledger.failures["B"]
    sink.outage_after, sink.down, sink.calls = None, True, []
    with pytest.raises(HipoinkRetryable):  # still down: nothing taken
        deliver(job, ledger, sink, 1)
    assert sink.calls == [("delete", ["X"])]
    assert ledger.failures["B"] == refusal
    assert deliver_module.name_skipped(job, ledger) == 1  # X only
    assert ledger.failures["B"] == refusal
    sink.down, sink.calls = False, []
    outcome = deliver(job, ledger, sink, 1)
    assert sink.calls == [("delete", ["X"])]
    assert (outcome.rejected, outcome.refused_before, outcome.deleted) == ([], 1, 1)
    assert ledger.failures["B"] == refusal


def test_a_refused_record_is_sent_again_by_another_decision_or_once_acknowledged() -> None:
    """Only this job's very record (version and hash) is held back: a newer decision (the
    heal's, a poll's) or another record of the code is sent, and an acknowledgement ends
    the refusal."""
    ledger, sink = MemoryLedger(), MemorySink(bad={"B"})
    deliver(_job([_record("B")], version=3), ledger, sink, 10)
    assert deliver(_job([_record("B")], version=3), ledger, sink, 10).refused_before == 1
    sink.calls.clear()
    assert deliver(_job([_record("B")], version=4), ledger, sink, 10).rejected == ["B"]
    assert deliver(_job([_record("B", "2.00")], version=4), ledger, sink, 10).rejected == ["B"]
    assert len(sink.calls) == 2
    sink.bad = set()
    deliver(_job([_record("B")], version=5), ledger, sink, 10)
    assert ledger.refusals("M", ["B"]) == {}
    outcome = deliver(_job([_record("B")], version=3), ledger, sink, 10)
    assert (outcome.skipped, outcome.refused_before) == (1, 0)


def test_after_a_failure_in_a_later_batch_the_earlier_batches_stay_acknowledged() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    sink.outage_after = 2
    with pytest.raises(HipoinkRetryable):
        deliver(_job([_record(pc) for pc in "ABCDE"]), ledger, sink, 2)
    assert [pcs for _, pcs in sink.calls] == [["A", "B"], ["C", "D"], ["E"]]
    assert set(ledger.failures) == {"E"}
    assert set(ledger.acks) == {"A", "B", "C", "D"}


def test_a_call_that_would_not_fit_in_the_invocation_is_not_made_and_what_is_left_is_named() -> (
    None
):
    ledger, sink = MemoryLedger(), MemorySink()
    allowed = [True, False]

    def before_call() -> None:
        if not allowed.pop(0):
            raise OutOfTime("label job of M: 900 ms left, 15000 ms needed")

    with pytest.raises(OutOfTime):
        deliver(_job([_record("A")], ["B", "C"]), ledger, sink, 10, before_call)
    assert sink.calls == [("upsert", ["A"])]
    assert set(ledger.acks) == {"A"}
    assert {pc: (f.failure_class, f.message) for pc, f in ledger.failures.items()} == {
        pc: ("retryable", "label job of M: 900 ms left, 15000 ms needed") for pc in "BC"
    }


def test_a_clean_job_writes_no_failure() -> None:
    ledger = MemoryLedger()
    deliver(_job([_record("A")], ["B"]), ledger, MemorySink(), 10)
    assert "record_failures" not in ledger.calls


def test_the_same_record_from_an_older_job_leaves_the_newer_version() -> None:
    """Renewing to the older job's version would let a job decided in between (7 < v < 9)
    put its value back over what the shelf shows since 9."""
    ledger, sink = MemoryLedger(), MemorySink()
    deliver(_job([_record("A")], version=9), ledger, sink, 10)
    for older in (7, None):
        assert deliver(_job([_record("A")], version=older), ledger, sink, 10).skipped == 1
        assert (ledger.renewed, ledger.versions["A"]) == ([], 9)
    assert (
        deliver_module.triage(
            _job([_record("A")], version=7), {"A": AckedLabel(label_hash(_record("A")), 9)}
        ).renewed
        == []
    )


def test_a_job_that_upserts_and_deletes_as_many_still_reports_its_latency() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    job = LabelJob(
        merchant_id="M",
        store_code="S",
        upserts=[_record("A")],
        deletes=["B"],
        oldest_change_ms=0,
        version=1,
    )
    outcome = deliver(job, ledger, sink, 10)
    assert (outcome.upserted, outcome.deleted) == (1, 1)
    assert outcome.latency_seconds == 10 * 365 * 86_400.0  # 1970: the cap


def test_a_change_a_millisecond_old_has_a_millisecond_of_latency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now_ms = 1_767_225_600_000
    monkeypatch.setattr(deliver_module.time, "time_ns", lambda: now_ms * 1_000_000)
    job = LabelJob(
        merchant_id="M",
        store_code="S",
        upserts=[_record("A")],
        oldest_change_ms=now_ms - 1,
        version=1,
    )
    assert deliver(job, MemoryLedger(), MemorySink(), 10).latency_seconds == 0.001


def test_the_longest_product_code_is_delivered() -> None:
    longest = "P" * PC_MAX_LENGTH
    ledger, sink = MemoryLedger(), MemorySink()
    outcome = deliver(_job([_record(longest)], [longest[:-1]]), ledger, sink, 10)
    assert (outcome.upserted, outcome.deleted, outcome.rejected) == (1, 1, [])


@pytest.mark.parametrize(
    ("pc", "problem"),
    [
        ("P" * (PC_MAX_LENGTH + 1), "no product code (pc) of 1 to 64 characters"),
        ("", "no product code (pc) of 1 to 64 characters"),
        (
            "A\x00B",
            "a product code (pc) that holds control characters, invisible characters or"
            " invalid code points",
        ),
        (" A", "a product code (pc) with spaces or line breaks at an end"),
        ("A\n", "a product code (pc) with spaces or line breaks at an end"),
    ],
    ids=["65-chars", "empty", "nul", "leading-space", "trailing-newline"],
)
def test_a_delete_of_a_code_that_is_no_product_code_is_refused_and_the_rest_go_on(
    pc: str, problem: str
) -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    assert deliver_module.code_problem(pc) == problem
    outcome = deliver(_job([], ["A", pc, "B"]), ledger, sink, 10)
    assert (outcome.deleted, outcome.rejected) == (2, ["(no usable pc)"])
    assert sink.calls == [("delete", ["A", "B"])]
    assert ledger.failures == {}  # no usable code to name it on


def test_a_code_named_twice_is_sent_once_with_its_last_record() -> None:
    """A job edited by hand: the last record of a code applies, a repeated delete is made
    once (the ledger refuses a code twice in one write: the job failed every retry)."""
    ledger, sink = MemoryLedger(), MemorySink()
    job = _job([_record("A", "1.00"), _record("B"), _record("A", "2.00")], ["C", "C"])
    outcome = deliver(job, ledger, sink, 10)
    assert (outcome.upserted, outcome.deleted) == (2, 1)
    assert sink.calls == [("upsert", ["A", "B"]), ("delete", ["C"])]
    assert ledger.acks == {
        "A": label_hash(_record("A", "2.00")),
        "B": label_hash(_record("B")),
        "C": None,
    }
    assert deliver_module.name_skipped(job, MemoryLedger()) == 3


def test_two_refused_records_of_one_code_name_one_failure() -> None:
    ledger, sink = MemoryLedger(), MemorySink()
    bad = [{**_record(pc), "pp": price} for pc, price in (("A", 1), ("A", None), ("C", 2))]
    outcome = deliver(_job([*bad, _record("B")]), ledger, sink, 10)
    assert (outcome.upserted, outcome.rejected) == (1, ["A", "A", "C"])
    assert {pc: f.message for pc, f in ledger.failures.items()} == {
        pc: "label job record: a value that is not text" for pc in "AC"
    }


def test_triage_names_the_records_refused_for_this_very_job() -> None:
    """Which codes were refused before, not only how many: the job's record (its hash and
    version) refused earlier is set apart; another version or record of the code is sent."""
    job = _job([_record("A"), _record("B")], deletes=["X"], version=4)
    refused = {
        "A": LabelAck("A", label_hash(_record("A")), 4),
        "B": LabelAck("B", label_hash(_record("B")), 3),  # an older decision's refusal
        "X": LabelAck("X", None, 4),  # the delete refused
    }
    triaged = deliver_module.triage(job, {}, refused)
    assert triaged.refused == ["A", "X"]
    assert [change.pc for change in triaged.send] == ["B"]
