"""The dispatcher's choices, with in-memory stand-ins for Postgres and SQS."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.observability import metrics
from esl_sync.records import Merchant, MerchantState
from esl_sync.settings import Settings
from esl_sync.sync import dispatch as dispatch_module
from esl_sync.sync.dispatch import DispatchDeps, DispatchOutcome, dispatch, is_due
from tests.fakes import MemoryDirectory, MemoryLedger, MemoryLog, MemoryPollQueue, MemoryStates

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _settings(**values: object) -> Settings:
    return Settings.from_values(values)


def _dispatch(
    directory: MemoryDirectory, queue: MemoryPollQueue, settings: Settings
) -> DispatchOutcome:
    ledger = MemoryLedger()
    ledger.stale_total = 7
    outcome = dispatch(DispatchDeps(directory, queue, MemoryStates(), ledger, settings), now=NOW)
    assert directory.saved == []  # the dispatcher never writes merchants
    return outcome


def test_one_request_per_active_merchant_with_a_store_code() -> None:
    directory = MemoryDirectory(
        [
            Merchant("A", "S-A"),
            Merchant("B", None),
            Merchant("C", "S-C", active=False),
            Merchant("D", "S-D"),
        ]
    )
    queue = MemoryPollQueue()
    outcome = _dispatch(directory, queue, _settings())
    assert (outcome.enabled, outcome.dispatched) == (True, ["A", "D"])
    assert [r.merchant_id for r, _ in queue.sent] == ["A", "D"]
    assert all(r.reason == "schedule" and r.requested_at == NOW for r, _ in queue.sent)
    assert outcome.skipped == {"B": "no Hipoink store code"}


def test_disabled_sync_dispatches_nothing() -> None:
    queue = MemoryPollQueue()
    outcome = _dispatch(
        MemoryDirectory([Merchant("A", "S")]), queue, _settings(clover_sync_enabled=False)
    )
    assert not outcome.enabled
    assert queue.sent == []


def test_delays_are_stable_and_spread_within_the_window() -> None:
    merchants = [Merchant(f"M{i:04d}", "S") for i in range(200)]
    first, second = MemoryPollQueue(), MemoryPollQueue()
    _dispatch(MemoryDirectory(merchants), first, _settings())
    _dispatch(MemoryDirectory(merchants), second, _settings())
    delays = [d for _, d in first.sent]
    assert delays == [d for _, d in second.sent]
    assert all(0 <= d < 240 for d in delays)
    assert len(set(delays)) > 100  # spread, not bunched


@pytest.mark.parametrize("own", [None, 60, 300])
def test_a_merchant_at_or_below_the_interval_is_always_due(own: int | None) -> None:
    assert is_due(Merchant("M", "S", poll_interval_seconds=own), 300, NOW)


def test_a_merchant_with_a_longer_interval_is_due_once_per_its_interval() -> None:
    merchant = Merchant("M", "S", poll_interval_seconds=900)
    ticks = [datetime.fromtimestamp(NOW.timestamp() + 300 * k, UTC) for k in range(9)]
    assert sum(is_due(merchant, 300, t) for t in ticks) == 3


LATE_CLOCK = datetime.fromtimestamp(NOW.timestamp() + 137, UTC)  # invocations arrive late


def test_a_longer_interval_is_kept_whatever_second_the_schedule_fires() -> None:
    merchants = [Merchant(f"M{i:03d}", "S", poll_interval_seconds=900) for i in range(30)]
    ticks = [datetime.fromtimestamp(LATE_CLOCK.timestamp() + 300 * k, UTC) for k in range(3)]
    due = [[m.merchant_id for m in merchants if is_due(m, 300, t)] for t in ticks]
    assert sorted(m for tick in due for m in tick) == [m.merchant_id for m in merchants]
    assert all(due)  # spread over the three ticks, not bunched on one


def test_an_interval_that_rounds_to_the_schedule_is_every_tick() -> None:
    merchant = Merchant("M", "S", poll_interval_seconds=400)
    ticks = [datetime.fromtimestamp(LATE_CLOCK.timestamp() + 300 * k, UTC) for k in range(4)]
    assert all(is_due(merchant, 300, t) for t in ticks)


def _deps(
    merchants: list[Merchant], settings: Settings, states: MemoryStates | None = None
) -> tuple[DispatchDeps, MemoryPollQueue]:
    ledger = MemoryLedger()
    ledger.stale_total = 7
    queue = MemoryPollQueue()
    return DispatchDeps(
        MemoryDirectory(merchants), queue, states or MemoryStates(), ledger, settings
    ), queue


def _not_due_now(interval: int = 900) -> Merchant:
    """A merchant on a longer own interval whose turn is not at LATE_CLOCK."""
    for n in range(100):
        merchant = Merchant(f"SLOW{n}", "S", poll_interval_seconds=interval)
        if not is_due(merchant, 300, LATE_CLOCK):
            return merchant
    raise AssertionError("no merchant off its turn")


def test_dispatch_says_what_it_queued_and_why_it_skipped_the_others(log: MemoryLog) -> None:
    slow = _not_due_now()
    deps, queue = _deps([Merchant("A", "S-A"), Merchant("B", None), slow], _settings())
    outcome = dispatch(deps, now=LATE_CLOCK, reason="webhook")
    assert outcome == DispatchOutcome(
        enabled=True,
        dispatched=["A"],
        skipped={"B": "no Hipoink store code", slow.merchant_id: "not due (own poll interval)"},
    )
    assert [(r.merchant_id, r.reason, r.requested_at) for r, _ in queue.sent] == [
        ("A", "webhook", LATE_CLOCK)
    ]
    assert log.lines("merchant not dispatched") == [
        {"merchant_id": "B", "reason": "no Hipoink store code", "level": "INFO"},
        {"merchant_id": slow.merchant_id, "reason": "not due (own poll interval)", "level": "INFO"},
    ]
    assert log.lines("dispatched polls") == [{"dispatched": 1, "skipped": 2, "level": "INFO"}]


def test_disabled_sync_says_so(log: MemoryLog) -> None:
    deps, _ = _deps([Merchant("A", "S")], _settings(clover_sync_enabled=False))
    assert dispatch(deps, now=NOW) == DispatchOutcome(enabled=False)
    assert log.messages == ["sync disabled by CLOVER_SYNC_ENABLED; nothing dispatched"]


def _metrics_of(deps: DispatchDeps, capsys: pytest.CaptureFixture[str]) -> list[str]:
    metrics.clear_metrics()
    dispatch(deps, now=LATE_CLOCK)
    metrics.flush_metrics()
    return capsys.readouterr().out.splitlines()


def test_each_tick_reports_the_fleets_health(capsys: pytest.CaptureFixture[str]) -> None:
    """Measured over the merchants that are synced (a store code), with their own
    states, the label ledger and the poll interval; also while sync is disabled."""
    states = MemoryStates(
        MerchantState("A", last_success_at=LATE_CLOCK - timedelta(minutes=20)),
        MerchantState("B", last_success_at=LATE_CLOCK - timedelta(days=9)),
    )
    merchants = [Merchant("A", "S-A"), Merchant("B", None)]
    lines = _metrics_of(_deps(merchants, _settings(), states)[0], capsys)
    assert metric_sums(lines) == {
        "PollsDispatched": 1.0,
        "MerchantsStale": 1.0,
        "MerchantsNeedingReauth": 0.0,
        "StalestMerchantSeconds": 1200.0,
        "StaleLabels": 7.0,
        "MerchantsAwaitingStoreCode": 1.0,
    }
    assert metric_units(lines)["PollsDispatched"] == "Count"
    hourly = _settings(clover_sync_interval_seconds=600, clover_sync_enabled=False)
    lines = _metrics_of(_deps(merchants, hourly, states)[0], capsys)
    assert metric_sums(lines)["MerchantsStale"] == 0.0  # 20 minutes: two of its intervals


class _BrokenStates(MemoryStates):
    def load_many(self, merchant_ids: Sequence[str]) -> dict[str, MerchantState]:
        raise RuntimeError("state table unreachable")


def test_a_fleet_health_failure_is_counted_and_the_polls_go_out(
    capsys: pytest.CaptureFixture[str], log: MemoryLog
) -> None:
    deps, queue = _deps([Merchant("A", "S-A")], _settings(), _BrokenStates())
    lines = _metrics_of(deps, capsys)
    assert [r.merchant_id for r, _ in queue.sent] == ["A"]
    assert metric_sums(lines) == {"PollsDispatched": 1.0, "FleetHealthErrors": 1.0}
    assert metric_units(lines)["FleetHealthErrors"] == "Count"
    [line] = log.lines("fleet health not measured (the polls were queued); gauges missing")
    assert line["level"] == "ERROR"


def test_the_ticks_statements_leave_it_one_second_to_fail_by_name() -> None:
    """The dispatcher's handler bounds its Postgres statements by the invocation's time less
    this margin: 1 s in which a tick whose read went unanswered raises DatabaseUnanswered and
    Powertools flushes (its handler's 'with statements_within'); a literal here, since the
    margin is the decision, and the integration test (test_database_unanswered) reads the name."""
    assert dispatch_module.REPORTING_MS == 1_000
