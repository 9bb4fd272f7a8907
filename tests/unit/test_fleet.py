"""Fleet health gauges: which merchants are stale or need re-auth, from their state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devkit.emf import metric_sums
from esl_sync.observability import metrics
from esl_sync.records import Merchant, MerchantState
from esl_sync.sync.fleet import fleet_health, report_fleet_health

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _state(merchant_id: str, minutes_ago: float | None, auth: str = "ok") -> MerchantState:
    success = None if minutes_ago is None else NOW - timedelta(minutes=minutes_ago)
    return MerchantState(merchant_id=merchant_id, last_success_at=success, auth_state=auth)


def test_stale_after_three_of_the_merchants_own_intervals() -> None:
    merchants = [
        Merchant("FRESH", "S"),
        Merchant("LATE", "S"),
        Merchant("SLOWOK", "S", poll_interval_seconds=3600),
        Merchant("NEVER", "S", created_at=NOW - timedelta(hours=1)),
        Merchant("NEW", "S", created_at=NOW - timedelta(minutes=2)),
        Merchant("REAUTH", "S"),
    ]
    states = {
        "FRESH": _state("FRESH", 4),
        "LATE": _state("LATE", 16),
        "SLOWOK": _state("SLOWOK", 90),
        "NEVER": _state("NEVER", None),
        "NEW": _state("NEW", None),
        "REAUTH": _state("REAUTH", 2, auth="needs_reauth"),
    }
    health = fleet_health(merchants, states, 12, 300, NOW)
    assert health.stale == ["LATE", "NEVER"]
    assert health.needing_reauth == ["REAUTH"]
    assert health.stalest_seconds == 90 * 60
    assert health.merchants == 6


def test_the_gauges_are_emitted(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.clear_metrics()  # other tests' metrics wait in the same process-wide buffer
    health = fleet_health([Merchant("LATE", "S")], {"LATE": _state("LATE", 20)}, 3, 300, NOW)
    report_fleet_health(health)
    metrics.flush_metrics()
    assert metric_sums(capsys.readouterr().out.splitlines()) == {
        "MerchantsStale": 1.0,
        "MerchantsNeedingReauth": 0.0,
        "StalestMerchantSeconds": 1200.0,
        "StaleLabels": 3.0,
        "MerchantsAwaitingStoreCode": 0.0,
    }
