"""The self-healing pass: which stale labels go out again, when, and with which version."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.observability import metrics
from esl_sync.products import Product
from esl_sync.records import Fence, Merchant, RepairCandidate, RepairSnapshot
from esl_sync.settings import Settings
from esl_sync.sync.heal import (
    RepairPolicy,
    choose,
    heal_after_poll,
    heal_merchant,
    queue_verify_if_due,
)
from tests.fakes import MemoryLabelQueue, MemoryLedger, MemoryLog

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _ledger(snapshot: RepairSnapshot) -> MemoryLedger:
    """The ledger of a merchant whose committed label version is 7."""
    return MemoryLedger(snapshot, clock=7)


def _product(pc: str) -> Product:
    return Product(
        merchant_id="M", source_id=f"ID{pc}", name=f"Item {pc}", barcode=pc, price=Decimal(1)
    )


def _stale(
    pc: str,
    *,
    changed: int = 60,
    failed: int | None = None,
    failure: str = "retryable",
    requeued: int | None = None,
    delete: bool = False,
) -> RepairCandidate:
    """A stale label: product changed ``changed`` minutes ago, failed ``failed`` minutes
    ago, queued again ``requeued`` minutes ago."""
    return RepairCandidate(
        pc=pc,
        product=None if delete else _product(pc),
        since=NOW - changed * MINUTE,
        failure_class=failure if failed is not None else None,
        failed_at=None if failed is None else NOW - failed * MINUTE,
        requeued_at=None if requeued is None else NOW - requeued * MINUTE,
    )


def _snapshot(*candidates: RepairCandidate, last_ack: int | None = None) -> RepairSnapshot:
    return RepairSnapshot(NOW, None if last_ack is None else NOW - last_ack * MINUTE, [*candidates])


RETRY = RepairPolicy(
    retry=True, limit=100, probe_size=2, probe_after=4 * MINUTE, requeue_expiry=15 * MINUTE
)
MERCHANT = Merchant("M", "STORE-M")
FAILING = Merchant("M", "STORE-M", labels_failing=3)


def _codes(snapshot: RepairSnapshot, policy: RepairPolicy = RETRY) -> tuple[list[str], str]:
    choice = choose(snapshot, policy)
    return [c.pc for c in choice.chosen], choice.mode


# -- choose: the pure decision -------------------------------------------------------------


def test_labels_stale_long_enough_are_chosen_but_never_a_refused_record() -> None:
    snapshot = _snapshot(
        _stale("OLD", changed=20),
        _stale("NEW", changed=5),
        _stale("FAILED_LATE", changed=20, failed=3),  # counted from its last failure
        _stale("REFUSED", changed=30, failed=25, failure="bad_record"),
        _stale("REFUSED_THEN_CHANGED", changed=20, failed=25, failure="bad_record"),
        _stale("GONE", delete=True, changed=60),
    )
    codes, mode = _codes(snapshot, RepairPolicy(older_than=15 * MINUTE))
    assert (codes, mode) == (["GONE", "OLD", "REFUSED_THEN_CHANGED"], "")


def test_while_the_store_still_fails_a_probe_goes_out_only_after_the_spacing() -> None:
    failing = [_stale("A", failed=10), _stale("B", failed=3), _stale("C", failed=12)]
    assert _codes(_snapshot(*failing, last_ack=60)) == ([], "backing off")
    older = [_stale("A", failed=10), _stale("B", failed=5), _stale("C", failed=12)]
    # One small batch of the longest-failing labels; the labels that never failed wait.
    assert _codes(_snapshot(*older, _stale("D"), last_ack=60)) == (["A", "C"], "probe")


def test_no_second_probe_while_the_first_waits_for_its_attempt() -> None:
    waiting = _snapshot(_stale("A", failed=30, requeued=10), _stale("B", failed=30))
    assert _codes(waiting) == ([], "probe in flight")
    tried = _snapshot(
        _stale("A", failed=9, requeued=10), _stale("B", failed=30), _stale("C", failed=20)
    )
    assert _codes(tried) == (["B", "C"], "probe")  # the two that failed longest ago
    lost = _snapshot(_stale("A", failed=30, requeued=20), _stale("B", failed=30))
    assert _codes(lost)[1] == "probe"  # queued longer ago than the expiry: presumed lost
    # Skipped behind a job that failed after it was queued: dead-lettered with it.
    skipped = _snapshot(_stale("A", failed=30, requeued=10), _stale("B", failed=5))
    assert _codes(skipped) == (["A", "B"], "probe")


def test_once_hipoink_answered_every_settled_label_goes_failed_ones_last() -> None:
    snapshot = _snapshot(
        _stale("F1", failed=10),
        _stale("SKIPPED", changed=40),  # its job was dead-lettered behind a failing one
        _stale("FRESH", changed=1),  # changed after Hipoink's answer: its job is in flight
        _stale("QUEUED", changed=40, requeued=3),  # queued again already
        _stale("GONE", delete=True, changed=90),
        last_ack=2,
    )
    assert _codes(snapshot) == (["GONE", "SKIPPED", "F1"], "recovered")
    limited = RepairPolicy(retry=True, limit=2, requeue_expiry=15 * MINUTE)
    assert _codes(snapshot, limited)[0] == ["GONE", "SKIPPED"]


def test_nothing_failed_means_no_retry() -> None:
    assert _codes(_snapshot(_stale("A"), last_ack=1)) == ([], "")


# -- the passes ----------------------------------------------------------------------------


def test_the_operator_pass_uses_the_committed_version_read_with_the_ledger() -> None:
    ledger = _ledger(_snapshot(*[_stale(f"P{i}") for i in range(5)], _stale("OLD1", delete=True)))
    queue = MemoryLabelQueue()
    settings = Settings(hipoink_batch_size=2, hipoink_extra_fields=(("f1", "price_type"),))

    outcome = heal_merchant(MERCHANT, ledger, queue, settings)

    assert ledger.calls == ["repair_candidates", "mark_requeued"]
    assert (outcome.upserts, outcome.deletes, outcome.jobs, outcome.version) == (5, 1, 4, 7)
    assert [len(j.upserts) for j in queue.jobs] == [2, 2, 1, 0]
    assert queue.jobs[-1].deletes == ["OLD1"]
    assert {(j.store_code, j.version) for j in queue.jobs} == {("STORE-M", 7)}
    assert queue.jobs[0].upserts[0] == {
        "pc": "P0",
        "pn": "Item P0",
        "pp": "1.00",
        "pi": "IDP0",
        "f1": "FIXED",
    }
    assert ledger.requeued == [(["OLD1", "P0", "P1", "P2", "P3", "P4"], None)]


def test_a_healthy_merchant_costs_the_poll_nothing() -> None:
    ledger, queue = _ledger(_snapshot(_stale("A", failed=60))), MemoryLabelQueue()
    assert heal_after_poll(MERCHANT, ledger, queue, Settings(), swept=False) is None
    assert (ledger.calls, queue.jobs) == ([], [])


def test_after_a_poll_the_pass_advances_the_clock_only_when_it_queues() -> None:
    settings = Settings()
    waiting = _ledger(
        _snapshot(_stale("A", failed=1), _stale("B", failed=1), _stale("C", failed=1))
    )
    heal_after_poll(FAILING, waiting, MemoryLabelQueue(), settings, swept=False)
    assert waiting.calls == ["repair_candidates"]

    probing = _ledger(
        _snapshot(_stale("A", failed=10), _stale("B", failed=10), _stale("C", failed=10))
    )
    queue = MemoryLabelQueue()
    fence = Fence("epoch", 7)
    outcome = heal_after_poll(FAILING, probing, queue, settings, swept=False, fence=fence)
    assert outcome is not None
    assert (outcome.mode, outcome.upserts, outcome.version) == ("probe", 3, 8)
    assert probing.calls == ["repair_candidates", "advance_label_clock", "mark_requeued"]
    assert probing.clock_fences == [fence]  # the poll lease's: refused once a newer wrote
    assert [j.version for j in queue.jobs] == [8]


def test_failures_fixed_meanwhile_are_forgotten_so_the_poll_stops_looking() -> None:
    """The lookup counted three failed labels; only one is still stale."""
    ledger = _ledger(_snapshot(_stale("A", failed=1)))
    heal_after_poll(FAILING, ledger, MemoryLabelQueue(), Settings(), swept=False)
    assert ledger.requeued == [([], NOW)]


def test_a_sweep_poll_also_heals_labels_lost_without_a_failure() -> None:
    ledger, queue = (
        _ledger(_snapshot(_stale("LOST", changed=60), _stale("NEW", changed=1))),
        MemoryLabelQueue(),
    )
    outcome = heal_after_poll(MERCHANT, ledger, queue, Settings(), swept=True)
    assert outcome is not None
    assert [r["pc"] for j in queue.jobs for r in j.upserts] == ["LOST"]


def test_no_store_queues_nothing() -> None:
    ledger, queue = _ledger(_snapshot(_stale("A"))), MemoryLabelQueue()
    heal_merchant(Merchant("M", None), ledger, queue, Settings(), stale_for=timedelta(0))
    assert (ledger.calls, queue.jobs) == ([], [])


# -- the edges of each rule ----------------------------------------------------------------


def test_a_label_stale_for_exactly_the_age_waits() -> None:
    """Stale for *longer than* the age: the operator's ``--older-than 15m`` leaves a label
    stale for exactly 15 minutes alone."""
    snapshot = _snapshot(_stale("EXACT", changed=15), _stale("OLDER", changed=16))
    assert _codes(snapshot, RepairPolicy(older_than=15 * MINUTE)) == (["OLDER"], "")


def test_a_label_without_any_time_is_stale_since_forever() -> None:
    forever = RepairCandidate(pc="X", product=_product("X"), since=None)
    assert _codes(_snapshot(forever), RepairPolicy(older_than=15 * MINUTE)) == (["X"], "")


def test_a_record_refused_when_its_product_changed_stays_refused() -> None:
    """Hipoink refused the record the product had at that very moment: same record."""
    same_moment = _stale("SAME", changed=30, failed=30, failure="bad_record")
    assert _codes(_snapshot(same_moment), RepairPolicy(older_than=15 * MINUTE)) == ([], "")


def test_an_acknowledgement_at_the_moment_of_the_last_failure_is_no_recovery() -> None:
    snapshot = _snapshot(_stale("A", failed=10), last_ack=10)
    assert _codes(snapshot) == (["A"], "probe")


def test_once_recovered_a_label_stale_since_the_acknowledgement_is_in_flight() -> None:
    """Its job came after Hipoink's answer in the store's order: not settled yet."""
    snapshot = _snapshot(_stale("F", failed=10), _stale("AT_ACK", changed=2), last_ack=2)
    assert _codes(snapshot) == (["F"], "recovered")


def test_a_probe_goes_out_once_exactly_the_spacing_has_passed() -> None:
    assert _codes(_snapshot(_stale("A", failed=4)))[1] == "probe"  # probe_after: 4 minutes
    later = replace(_stale("A", failed=0), failed_at=NOW - 4 * MINUTE + timedelta(seconds=1))
    assert _codes(_snapshot(later))[1] == "backing off"


@pytest.mark.parametrize(
    ("requeued", "failed", "changed", "in_flight"),
    [
        (10, 30, 10, True),  # queued again the moment its product changed: it is on its way
        (10, 10, 60, False),  # queued at the moment of the store's last failure: failed with it
        (15, 30, 60, False),  # queued exactly the expiry ago: presumed lost
        (14, 30, 60, True),
    ],
)
def test_when_a_label_queued_again_counts_as_on_its_way(
    requeued: int, failed: int, changed: int, in_flight: bool
) -> None:
    label = _stale("A", changed=changed, failed=failed, requeued=requeued)
    assert _codes(_snapshot(label)) == (([], "probe in flight") if in_flight else (["A"], "probe"))


# -- the pass after a poll takes its policy from the settings ------------------------------


def _failing(*pcs: str, failed: int = 10, requeued: int | None = None) -> MemoryLedger:
    return _ledger(_snapshot(*[_stale(pc, failed=failed, requeued=requeued) for pc in pcs]))


def _after_poll(ledger: MemoryLedger, settings: Settings) -> list[str]:
    queue = MemoryLabelQueue()
    heal_after_poll(FAILING, ledger, queue, settings, swept=False)
    return [r["pc"] for job in queue.jobs for r in job.upserts]


def test_the_probe_is_one_hipoink_batch_or_the_per_poll_limit_if_smaller() -> None:
    five = ("A", "B", "C", "D", "E")
    assert _after_poll(_failing(*five), Settings(hipoink_batch_size=2)) == ["A", "B"]
    assert _after_poll(_failing(*five), Settings(label_heal_per_poll=3)) == ["A", "B", "C"]


def test_after_a_recovery_a_poll_queues_at_most_the_per_poll_limit() -> None:
    ledger = _ledger(_snapshot(*[_stale(f"P{i}", failed=10) for i in range(5)], last_ack=1))
    assert _after_poll(ledger, Settings(label_heal_per_poll=2)) == ["P0", "P1"]


def test_a_label_queued_again_is_presumed_lost_after_label_heal_after_seconds() -> None:
    settings = Settings(label_heal_after_seconds=600)
    assert _after_poll(_failing("A", failed=30, requeued=9), settings) == []
    assert _after_poll(_failing("A", failed=30, requeued=10), settings) == ["A"]


@pytest.mark.parametrize(("failed_seconds_ago", "probed"), [(240, True), (239, False)])
def test_the_probe_waits_four_fifths_of_the_poll_interval(
    failed_seconds_ago: int, probed: bool
) -> None:
    label = replace(_stale("A", failed=0), failed_at=NOW - timedelta(seconds=failed_seconds_ago))
    settings = Settings(clover_sync_interval_seconds=300)
    assert _after_poll(_ledger(_snapshot(label)), settings) == (["A"] if probed else [])


# -- what a pass tells the operator --------------------------------------------------------


def test_the_outcome_names_the_merchant_and_the_first_twenty_codes(log: MemoryLog) -> None:
    ledger = _ledger(_snapshot(*[_stale(f"P{i:02d}") for i in range(25)]))
    outcome = heal_merchant(MERCHANT, ledger, MemoryLabelQueue(), Settings())
    assert outcome.merchant_id == "M"
    assert outcome.codes == [f"P{i:02d}" for i in range(20)]
    [line] = log.lines("stale labels queued again")
    assert (line["level"], line["merchant_id"], line["upserts"], line["jobs"]) == (
        "INFO",
        "M",
        25,
        1,
    )
    assert line["codes"] == outcome.codes


@pytest.mark.parametrize(
    ("snapshot", "mode"),
    [
        (_snapshot(_stale("A", failed=1)), "backing off"),
        (_snapshot(_stale("A", failed=30, requeued=10)), "probe in flight"),
    ],
)
def test_a_pass_that_waits_says_so(log: MemoryLog, snapshot: RepairSnapshot, mode: str) -> None:
    heal_after_poll(FAILING, _ledger(snapshot), MemoryLabelQueue(), Settings(), swept=False)
    [line] = log.lines("labels failing; waiting before the next retry")
    assert (line["mode"], line["jobs"]) == (mode, 0)
    assert "stale labels queued again" not in log.messages


def test_a_pass_with_nothing_to_do_logs_nothing(log: MemoryLog) -> None:
    heal_after_poll(
        FAILING, _ledger(_snapshot(_stale("A"))), MemoryLabelQueue(), Settings(), swept=False
    )
    assert log.messages == []


def test_labels_healed_counts_upserts_and_deletes(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.clear_metrics()
    ledger = _ledger(_snapshot(_stale("A"), _stale("B"), _stale("GONE", delete=True)))
    heal_merchant(MERCHANT, ledger, MemoryLabelQueue(), Settings())
    metrics.flush_metrics()
    lines = capsys.readouterr().out.splitlines()
    assert metric_sums(lines) == {"LabelsHealed": 3.0}
    assert metric_units(lines) == {"LabelsHealed": "Count"}


def test_the_probe_is_the_longest_failing_labels_even_under_the_per_poll_limit() -> None:
    ledger = _ledger(
        _snapshot(
            _stale("A", failed=5),
            _stale("B", failed=20),
            _stale("C", failed=30),
            _stale("D", failed=40),
        )
    )
    assert _after_poll(ledger, Settings(label_heal_per_poll=2)) == ["C", "D"]


# -- labels a verify found drifted ---------------------------------------------------------


def test_drifted_labels_go_at_once_without_a_probe_unless_queued_since() -> None:
    """Hipoink answered the verify: no outage, so no probe nor backing off; a drifted label
    queued again since it drifted waits for its job, until that is presumed lost."""
    fresh = _stale("A", failed=1, failure="drift")
    queued = _stale("B", failed=10, failure="drift", requeued=5)
    lost = _stale("C", failed=30, failure="drift", requeued=20)
    before = _stale("D", failed=10, failure="drift", requeued=11)
    assert _codes(_snapshot(fresh, queued, lost, before)) == (["A", "C", "D"], "drift")
    assert _codes(_snapshot(queued)) == ([], "")
    # Beside an outage, the outage decides the mode; the drifted label goes all the same.
    outage = _stale("E", failed=1)
    assert _codes(_snapshot(fresh, outage)) == (["A"], "backing off")


def test_a_drifted_label_counts_as_seen_failing_so_no_failure_is_forgotten() -> None:
    ledger = _ledger(_snapshot(_stale("A", failed=1, failure="drift")))
    heal_after_poll(
        Merchant("M", "STORE-M", labels_failing=1),
        ledger,
        MemoryLabelQueue(),
        Settings(),
        swept=False,
    )
    assert ledger.requeued == [(["A"], None)]


def test_a_sweep_poll_queues_a_verify_once_per_interval_after_its_jobs() -> None:
    ledger, queue = _ledger(_snapshot(_stale("LOST", changed=60))), MemoryLabelQueue()
    heal_after_poll(MERCHANT, ledger, queue, Settings(), swept=True)
    assert [(v.merchant_id, v.store_code, v.reason) for v in queue.verifies] == [
        ("M", "STORE-M", "sweep")
    ]
    assert ledger.calls[-1] == "claim_verify"  # after the pass queued its jobs
    heal_after_poll(MERCHANT, ledger, queue, Settings(), swept=True)  # claimed already
    heal_after_poll(FAILING, _ledger(_snapshot()), queue, Settings(), swept=False)
    never = _ledger(_snapshot())
    heal_after_poll(MERCHANT, never, queue, Settings(label_verify_interval_hours=0), swept=True)
    assert len(queue.verifies) == 1
    assert "claim_verify" not in never.calls


def test_a_drifted_label_queued_the_moment_it_drifted_waits_for_that_job() -> None:
    """Queued again at the very moment the verify marked it: that job carries the fix."""
    assert _codes(_snapshot(_stale("A", failed=10, failure="drift", requeued=10))) == ([], "")


@pytest.mark.parametrize(("requeued", "queued_again"), [(15, True), (14, False)])
def test_a_drifted_labels_job_is_presumed_lost_exactly_the_expiry_after(
    requeued: int, queued_again: bool
) -> None:
    """``requeue_expiry`` is 15 minutes: a job queued that long ago must be lost."""
    label = _stale("A", failed=30, failure="drift", requeued=requeued)
    assert _codes(_snapshot(label)) == ((["A"], "drift") if queued_again else ([], ""))


def test_a_verify_is_claimed_for_the_configured_interval_and_said(log: MemoryLog) -> None:
    ledger, queue = _ledger(_snapshot()), MemoryLabelQueue()
    settings = Settings(label_verify_interval_hours=6)
    assert queue_verify_if_due(MERCHANT, ledger, queue, settings) is True
    assert [(v.merchant_id, v.store_code, v.reason) for v in queue.verifies] == [
        ("M", "STORE-M", "sweep")
    ]
    [line] = log.lines("label verify queued")
    assert (line["level"], line["merchant_id"]) == ("INFO", "M")
    # Within the interval: the claim fails, nothing is queued or said.
    assert queue_verify_if_due(MERCHANT, ledger, queue, settings) is False
    assert (len(queue.verifies), ledger.verify_claims) == (1, [6, 6])
    assert log.messages == ["label verify queued"]


@pytest.mark.parametrize(
    ("merchant", "hours"), [(Merchant("M", None), 24), (Merchant("M", ""), 24), (MERCHANT, 0)]
)
def test_no_verify_without_a_store_or_with_an_interval_of_zero(
    log: MemoryLog, merchant: Merchant, hours: int
) -> None:
    ledger, queue = _ledger(_snapshot()), MemoryLabelQueue()
    settings = Settings(label_verify_interval_hours=hours)
    assert queue_verify_if_due(merchant, ledger, queue, settings) is False
    assert (ledger.calls, queue.verifies, log.messages) == ([], [], [])
