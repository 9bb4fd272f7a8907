"""The dispatcher's choices, with in-memory stand-ins for Postgres and SQS."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from esl_sync.records import Merchant
from esl_sync.settings import Settings
from esl_sync.sync.dispatch import DispatchDeps, DispatchOutcome, dispatch, is_due
from tests.fakes import MemoryDirectory, MemoryLedger, MemoryPollQueue, MemoryStates

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


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
