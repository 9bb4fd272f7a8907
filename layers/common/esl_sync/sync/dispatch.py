"""The dispatcher: one poll request per active merchant, spread across the interval."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime

from esl_sync.messages import PollReason, PollRequest
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import LabelLedger, MerchantDirectory, PollQueue, StateStore
from esl_sync.records import Merchant
from esl_sync.settings import Settings
from esl_sync.sync.fleet import fleet_health, report_fleet_health

REPORTING_MS = 1_000
"""What the tick needs after a statement Postgres did not answer (its error, its metrics):
no statement of the dispatcher waits past the invocation's remaining time less this
(:mod:`esl_sync.statement_deadline`); the tick fails as ``DatabaseUnanswered``."""


@dataclass
class DispatchDeps:
    merchants: MerchantDirectory
    poll_queue: PollQueue
    states: StateStore
    ledger: LabelLedger
    settings: Settings


@dataclass
class DispatchOutcome:
    enabled: bool
    dispatched: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def stable_fraction(merchant_id: str) -> float:
    """A number in [0, 1) fixed for the merchant, so its place in the interval never moves."""
    digest = hashlib.sha256(merchant_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_due(merchant: Merchant, interval_seconds: int, now: datetime) -> bool:
    """A merchant with a longer own interval is polled on every k-th tick, k fixed per merchant."""
    own = merchant.poll_interval_seconds
    if not own or own <= interval_seconds:
        return True
    every = max(1, round(own / interval_seconds))
    tick = int(now.timestamp()) // interval_seconds
    return tick % every == int(stable_fraction(merchant.merchant_id) * every)


def dispatch(
    deps: DispatchDeps,
    *,
    now: datetime,
    reason: PollReason = "schedule",
    measured_at: datetime | None = None,
) -> DispatchOutcome:
    """Queue a poll for every active merchant that has a store code and is due at the tick
    ``now``, then report the fleet's health at ``measured_at`` (the clock; ``now`` when not
    given), also while sync is disabled: the shelves still age.

    Due-ness follows the tick (a retried tick decides alike); the health follows the clock,
    since ages measured from a tick far from it (a late retry, or a manual tick dated 0001 or
    9999) would hide stale merchants or raise false alarms.

    The polls come first and the health part fails alone: its reads (the state table, the
    label ledger) are not what a poll needs, so their failure is counted
    (``FleetHealthErrors``) and logged, and the polls are queued all the same. The missing
    gauges then raise the freshness alarm, which treats missing data as breaching.
    """
    active = deps.merchants.all(active_only=True)
    outcome = _dispatch(active, deps.poll_queue, deps.settings, now, reason)
    _measure_fleet(active, deps.states, deps.ledger, deps.settings, measured_at or now)
    return outcome


def _measure_fleet(
    active: list[Merchant],
    states: StateStore,
    ledger: LabelLedger,
    settings: Settings,
    now: datetime,
) -> None:
    """Freshness over the merchants that are polled; those awaiting a store code apart."""
    synced = [m for m in active if m.store_code]
    try:
        health = replace(
            fleet_health(
                synced,
                states.load_many([m.merchant_id for m in synced]),
                ledger.stale_labels_total(),
                settings.clover_sync_interval_seconds,
                now,
            ),
            awaiting_store_code=[m.merchant_id for m in active if not m.store_code],
        )
    except Exception:
        metrics.add_metric(name="FleetHealthErrors", unit=MetricUnit.Count, value=1)
        logger.exception("fleet health not measured (the polls were queued); gauges missing")
        return
    report_fleet_health(health)


def _dispatch(
    active: list[Merchant], queue: PollQueue, settings: Settings, now: datetime, reason: PollReason
) -> DispatchOutcome:
    if not settings.clover_sync_enabled:
        logger.info("sync disabled by CLOVER_SYNC_ENABLED; nothing dispatched")
        return DispatchOutcome(enabled=False)
    outcome = DispatchOutcome(enabled=True)
    due: list[Merchant] = []
    for merchant in active:
        if not merchant.store_code:
            outcome.skipped[merchant.merchant_id] = "no Hipoink store code"
        elif not is_due(merchant, settings.clover_sync_interval_seconds, now):
            outcome.skipped[merchant.merchant_id] = "not due (own poll interval)"
        else:
            due.append(merchant)
    for merchant_id, why in outcome.skipped.items():
        logger.info("merchant not dispatched", merchant_id=merchant_id, reason=why)
    spread = settings.dispatch_spread_seconds
    queue.send(
        [PollRequest(merchant_id=m.merchant_id, reason=reason, requested_at=now) for m in due],
        delays=[int(stable_fraction(m.merchant_id) * spread) for m in due],
    )
    outcome.dispatched = [m.merchant_id for m in due]
    metrics.add_metric(name="PollsDispatched", unit=MetricUnit.Count, value=len(due))
    logger.info("dispatched polls", dispatched=len(due), skipped=len(outcome.skipped))
    return outcome
