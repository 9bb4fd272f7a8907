"""Fleet health gauges: which merchants are stale or need re-auth, from their state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.observability import LOGGED_NAMES, metrics
from esl_sync.records import Merchant, MerchantState
from esl_sync.sync.fleet import FleetHealth, fleet_health, report_fleet_health
from tests.fakes import MemoryLog

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


def test_stale_only_after_more_than_three_intervals() -> None:
    merchants = [Merchant("EXACT", "S"), Merchant("OVER", "S")]
    states = {
        "EXACT": _state("EXACT", 15),
        "OVER": MerchantState("OVER", last_success_at=NOW - timedelta(seconds=901)),
    }
    assert fleet_health(merchants, states, 0, 300, NOW).stale == ["OVER"]


def test_a_merchant_without_any_time_is_not_measured_but_the_others_are() -> None:
    """No success and no creation time (a row older than the column): nothing to age."""
    merchants = [Merchant("UNKNOWN", "S"), Merchant("LATE", "S")]
    states = {"UNKNOWN": _state("UNKNOWN", None, auth="needs_reauth"), "LATE": _state("LATE", 20)}
    health = fleet_health(merchants, states, 0, 300, NOW)
    assert (health.stale, health.needing_reauth, health.stalest_seconds) == (
        ["LATE"],
        ["UNKNOWN"],
        1200,
    )


def test_an_empty_fleet_is_fresh() -> None:
    assert fleet_health([], {}, 0, 300, NOW) == FleetHealth(0, [], [], 0, 0)


def test_the_gauges_have_their_units(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.clear_metrics()
    report_fleet_health(FleetHealth(1, [], [], 5, 0))
    metrics.flush_metrics()
    assert metric_units(capsys.readouterr().out.splitlines()) == {
        "MerchantsStale": "Count",
        "MerchantsNeedingReauth": "Count",
        "StalestMerchantSeconds": "Seconds",
        "StaleLabels": "Count",
        "MerchantsAwaitingStoreCode": "Count",
    }


@pytest.mark.parametrize(
    ("stale", "reauth"), [(["LATE"], []), ([], ["REAUTH"]), (["LATE"], ["REAUTH"])]
)
def test_merchants_needing_attention_are_named_in_a_warning(
    log: MemoryLog, stale: list[str], reauth: list[str]
) -> None:
    report_fleet_health(FleetHealth(3, stale, reauth, 1200, 0))
    assert log.lines("merchants need attention") == [
        {
            "level": "WARNING",
            "stale": stale,
            "stale_count": len(stale),
            "needing_reauth": reauth,
            "needing_reauth_count": len(reauth),
            "awaiting_store_code": [],
            "awaiting_store_code_count": 0,
            "unreadable_state": {},
            "unreadable_state_count": 0,
            "stalest_seconds": 1200,
        }
    ]


@pytest.mark.parametrize(
    ("awaiting", "unreadable"), [(["NOSTORE"], {}), ([], {"EDITED": ["version"]})]
)
def test_a_fleet_whose_only_trouble_is_one_list_still_names_it(
    log: MemoryLog, awaiting: list[str], unreadable: dict[str, list[str]]
) -> None:
    """Every list is reason enough for the line on its own: a merchant awaiting its store
    code, or one whose state item was edited by hand, in an otherwise fresh fleet."""
    metrics.clear_metrics()
    try:
        report_fleet_health(FleetHealth(3, [], [], 60, 0, awaiting, unreadable))
    finally:
        metrics.clear_metrics()
    (line,) = log.lines("merchants need attention")
    assert (line["awaiting_store_code"], line["unreadable_state"]) == (awaiting, unreadable)


def test_a_healthy_fleet_logs_nothing(log: MemoryLog) -> None:
    report_fleet_health(FleetHealth(3, [], [], 60, 0))
    assert log.messages == []


def test_merchants_whose_state_could_not_be_read_are_named_and_still_measured() -> None:
    """An item with unreadable attributes reads as defaults (:mod:`esl_sync.store.state_item`):
    the merchant is measured like the others, and named."""
    merchants = [Merchant("OK", "S1", created_at=NOW), Merchant("BAD", "S2", created_at=NOW)]
    states = {
        "OK": MerchantState("OK", last_success_at=NOW),
        "BAD": MerchantState("BAD", unreadable=("last_success_at",)),
    }
    health = fleet_health(merchants, states, 0, 300, NOW + timedelta(minutes=20))
    assert health.stale == ["OK", "BAD"]
    assert health.unreadable_state == {"BAD": ["last_success_at"]}


def test_a_fleet_that_needs_attention_names_its_first_merchants_and_counts_them_all(
    log: MemoryLog,
) -> None:
    """A line naming every merchant of a large fleet would pass CloudWatch's 256 KB for one
    log event (``tests/integration/test_service_limits.py``): the first ones, sorted, and
    the totals."""
    many = [f"M{n:05d}" for n in reversed(range(LOGGED_NAMES + 7))]
    unreadable = {m: ["version"] for m in many}
    metrics.clear_metrics()
    try:
        report_fleet_health(FleetHealth(len(many), many, many, 60, 0, many, unreadable))
    finally:  # its gauges wait in the process-wide buffer: a later handler would flush them
        metrics.clear_metrics()
    (line,) = log.lines("merchants need attention")
    first = sorted(many)[:LOGGED_NAMES]
    assert line["stale"] == line["needing_reauth"] == line["awaiting_store_code"] == first
    assert line["unreadable_state"] == {m: ["version"] for m in first}
    assert line["stale_count"] == line["needing_reauth_count"] == len(many)
    assert line["awaiting_store_code_count"] == line["unreadable_state_count"] == len(many)


def test_a_resumed_merchant_is_aged_from_its_resume_or_its_last_success_whichever_is_later() -> (
    None
):
    """Enabled again (or given its store code) after a day, a merchant is not stale before
    its first poll could run, and is three intervals after the resume; a success after the
    resume counts from the success, and a resume before the last success changes nothing."""
    day = NOW - timedelta(days=1)
    merchants = [
        Merchant("RESUMED", "S", created_at=day, pollable_since=NOW - timedelta(minutes=1)),
        Merchant("RESUMEDLATE", "S", created_at=day, pollable_since=NOW - timedelta(minutes=16)),
        Merchant("NEVERPOLLED", "S", created_at=day, pollable_since=NOW - timedelta(minutes=1)),
        Merchant("POLLEDSINCE", "S", pollable_since=NOW - timedelta(minutes=30)),
        Merchant("RESUMEDBEFORE", "S", pollable_since=NOW - timedelta(hours=2)),
    ]
    states = {
        "RESUMED": _state("RESUMED", 24 * 60),
        "RESUMEDLATE": _state("RESUMEDLATE", 24 * 60),
        "NEVERPOLLED": _state("NEVERPOLLED", None),
        "POLLEDSINCE": _state("POLLEDSINCE", 4),
        "RESUMEDBEFORE": _state("RESUMEDBEFORE", 20),
    }
    health = fleet_health(merchants, states, 0, 300, NOW)
    assert health.stale == ["RESUMEDLATE", "RESUMEDBEFORE"]
    assert health.stalest_seconds == 20 * 60
