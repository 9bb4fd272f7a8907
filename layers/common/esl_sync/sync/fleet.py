"""Fleet health: gauges over every merchant, measured by the dispatcher on each tick.

A merchant whose polls stop running emits nothing from the poller, so freshness is
measured here, where every merchant is listed anyway: the alarm on ``MerchantsStale``
fires when one merchant has gone three of its intervals without a successful poll (counted
from when it last became pollable, if later: see :func:`fleet_health`), and
(missing data being breaching) when the dispatcher itself stops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from esl_sync.observability import MetricUnit, first_named, logger, metrics
from esl_sync.records import Merchant, MerchantState

STALE_AFTER_INTERVALS = 3


@dataclass(frozen=True)
class FleetHealth:
    merchants: int
    stale: list[str]
    needing_reauth: list[str]
    stalest_seconds: int
    stale_labels: int
    # Active merchants that installed the app and have no Hipoink store code yet: not
    # polled, so not in the rest (an operator's to-do: esl-sync merchants set-store).
    awaiting_store_code: list[str] = field(default_factory=list)
    # Merchants whose state item has attributes that could not be read (edited by hand or
    # corrupted; each read as its default): which ones, for the log line.
    unreadable_state: dict[str, list[str]] = field(default_factory=dict)


def judged_since(merchant: Merchant, state: MerchantState) -> datetime | None:
    """Where a merchant's age starts: its last success or when it last became pollable,
    whichever is later; its registration when it has neither (None: not known)."""
    return max(
        (t for t in (state.last_success_at, merchant.pollable_since) if t is not None),
        default=merchant.created_at,
    )


def fleet_health(
    merchants: Sequence[Merchant],
    states: Mapping[str, MerchantState],
    stale_labels: int,
    interval_seconds: int,
    now: datetime,
) -> FleetHealth:
    """How old each active merchant's data is: since its last success or since it last
    became pollable (enabled, or given its store code), whichever is later; since it was
    added when it has had neither. A merchant resumed after a long pause is thus not stale
    before its first poll could run, and is stale three intervals after the resume if no
    poll succeeds."""
    stale, reauth, stalest = [], [], 0
    unreadable: dict[str, list[str]] = {}
    for merchant in merchants:
        state = states[merchant.merchant_id]
        if state.unreadable:
            unreadable[merchant.merchant_id] = list(state.unreadable)
        since = judged_since(merchant, state)
        if state.auth_state == "needs_reauth":
            reauth.append(merchant.merchant_id)
        if since is None:
            continue
        age = int((now - since).total_seconds())
        stalest = max(stalest, age)
        own = max(interval_seconds, merchant.poll_interval_seconds or 0)
        if age > STALE_AFTER_INTERVALS * own:
            stale.append(merchant.merchant_id)
    return FleetHealth(
        len(merchants), stale, reauth, stalest, stale_labels, unreadable_state=unreadable
    )


def report_fleet_health(health: FleetHealth) -> None:
    """Gauges for the alarms and the dashboard; the merchants are named in the log line:
    of each list the first :data:`~esl_sync.observability.LOGGED_NAMES` (sorted) and how
    many in all, so that the line stays one log event during an outage of the whole fleet."""
    for name, unit, value in (
        ("MerchantsStale", MetricUnit.Count, len(health.stale)),
        ("MerchantsNeedingReauth", MetricUnit.Count, len(health.needing_reauth)),
        ("StalestMerchantSeconds", MetricUnit.Seconds, health.stalest_seconds),
        ("StaleLabels", MetricUnit.Count, health.stale_labels),
        ("MerchantsAwaitingStoreCode", MetricUnit.Count, len(health.awaiting_store_code)),
    ):
        metrics.add_metric(name=name, unit=unit, value=value)
    if (
        health.stale
        or health.needing_reauth
        or health.awaiting_store_code
        or health.unreadable_state
    ):
        unreadable = first_named(health.unreadable_state)
        logger.warning(
            "merchants need attention",
            stale=first_named(health.stale),
            stale_count=len(health.stale),
            needing_reauth=first_named(health.needing_reauth),
            needing_reauth_count=len(health.needing_reauth),
            awaiting_store_code=first_named(health.awaiting_store_code),
            awaiting_store_code_count=len(health.awaiting_store_code),
            unreadable_state={m: health.unreadable_state[m] for m in unreadable},
            unreadable_state_count=len(health.unreadable_state),
            stalest_seconds=health.stalest_seconds,
        )
